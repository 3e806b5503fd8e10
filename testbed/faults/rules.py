"""Fault rules: the model (where, when, what), a protocol's fault surface, and validating a rule.

Pure data and checks, importing no Twisted and no server: protocol specs
declare their ``FaultSurface`` with it, the scenario and the runtime API build
rules through ``build_rule``. A parameter type is a Python type, a tuple of
allowed values, or ``object``.
"""

from __future__ import annotations

import typing
from typing import Any, Callable, Mapping

import attrs

from testbed.schema import Checker

#: Wire actions work on any TCP server, at ``connect`` or scoped to a stage.
WIRE_ACTIONS: dict[str, dict[str, object]] = {
    "refuse": {},
    "reset": {"bytes": int},
    "close": {"bytes": int},
    "stall": {"bytes": int},
    "delay": {"seconds": float, "jitter": float},
    "throttle": {"bytes_per_second": int},
    "slice": {"size": int, "interval": float},
    "corrupt": {"rate": float},
    "truncate": {"bytes": int},
}

#: Datagram actions, for UDP servers (DNS, and the UDP echo server).
UDP_ACTIONS: dict[str, dict[str, object]] = {
    "drop": {},
    "delay": {"seconds": float, "jitter": float},
    "duplicate": {"copies": int},
    "corrupt": {"rate": float},
    "truncate": {"bytes": int},
}

#: What a wire action parameter defaults to when a rule leaves it out.
WIRE_DEFAULTS: dict[str, object] = {
    "bytes": 0,
    "seconds": 0.0,
    "jitter": 0.0,
    "bytes_per_second": 1024,
    "size": 1,
    "interval": 0.01,
    "rate": 0.01,
    "copies": 1,
}

#: What happens after a protocol ``reply`` fault: nothing, FIN, RST, or a black hole.
THEN = ("none", "close", "reset", "stall")

#: ``tls_abort``: where the handshake is cut, see testbed.faults.wire.HandshakeCut.
TLS_ABORT = {"cut_after": ("client_hello", "server_hello")}

#: Rule keys that are not action parameters.
RULE_KEYS = ("server", "on", "match", "after", "times", "probability", "connection",
             "direction", "action", "name")

_NON_NEGATIVE = ("bytes", "bytes_per_second", "size", "seconds", "jitter", "interval", "copies")


@attrs.frozen
class ReplyStyle:
    """How a line protocol words a ``reply`` fault, and when that reply closes the connection.

    ``code_key`` is the rule parameter holding the code or status ("code",
    "status"), or None when the protocol has a single error form (POP3's -ERR).
    """

    code_key: str | None = "code"
    default_code: Any = None
    #: Stage -> the code a ``reply`` at that stage gives when the rule names none.
    stage_codes: Mapping[str, Any] = attrs.Factory(dict)
    #: (code, stage) or code -> the text when the rule gives no ``message``.
    texts: Mapping[Any, str] = attrs.Factory(dict)
    default_text: str = "Injected fault."
    #: Codes after which the server closes (SMTP and FTP 421, IMAP BYE)...
    closing_codes: frozenset = frozenset()
    #: ...and stages where any reply closes (POP3's greeting and QUIT).
    closing_stages: frozenset = frozenset()

    def code(self, fault_param: Callable[[str], Any], stage: str) -> Any:
        given = fault_param(self.code_key) if self.code_key else None
        return given if given is not None else self.stage_codes.get(stage, self.default_code)

    def text(self, code: Any, stage: str) -> str:
        return self.texts.get((code, stage)) or self.texts.get(code) or self.default_text

    def closes(self, code: Any, stage: str) -> bool:
        return code in self.closing_codes or stage in self.closing_stages


@attrs.frozen
class FaultSurface:
    """A protocol's fault surface: where (stages, match attributes) and what (actions with parameters)."""

    stages: frozenset = attrs.field(converter=frozenset)
    #: Protocol actions: name -> {parameter: type}.
    actions: Mapping[str, Mapping[str, object]] = attrs.Factory(dict)
    #: "tcp", "udp" or "both": which wire actions exist.
    transport: str = "tcp"
    #: Attribute names a rule's ``match`` may use (empty: anything).
    match: frozenset = attrs.field(default=frozenset(), converter=frozenset)
    #: Protocol actions that only make sense at some stages: action -> those stages.
    #: Anything not listed applies at every stage.
    where: Mapping[str, frozenset] = attrs.field(
        factory=dict, converter=lambda w: {a: frozenset(s) for a, s in w.items()})
    #: One line per stage, for the catalog and the docs.
    notes: Mapping[str, str] = attrs.Factory(dict)
    #: The stage of a rule that names none (default: ``connect``, or ``datagram`` on UDP alone).
    default: str = ""

    @property
    def default_stage(self) -> str:
        return self.default or ("datagram" if self.transport == "udp" else "connect")

    def wire_actions(self) -> dict[str, Mapping[str, object]]:
        merged: dict[str, Mapping[str, object]] = {}
        if self.transport in ("tcp", "both"):
            merged.update(WIRE_ACTIONS)
        if self.transport in ("udp", "both"):
            merged.update(UDP_ACTIONS)
        return merged

    def all_actions(self) -> dict[str, Mapping[str, object]]:
        merged = self.wire_actions()
        merged.update(self.actions)
        return merged

    def is_wire(self, action: str) -> bool:
        return action not in self.actions and action in self.wire_actions()

    def stages_for(self, action: str) -> frozenset:
        """Where ``action`` may be aimed (``refuse`` only at connect)."""
        if action == "refuse":
            return frozenset({"connect"}) & self.stages
        return self.where.get(action, self.stages)


@attrs.frozen
class FaultRule:
    """Where, when and what: see the fault engine for the semantics."""

    #: The server instance the rule aims at (a scenario's ``[servers.NAME]``).
    server: str
    action: str
    on: str = "connect"
    match: typing.Dict[str, typing.Any] = attrs.Factory(dict)
    after: int = 0
    times: typing.Optional[int] = None
    probability: float = 1.0
    connection: typing.Optional[typing.List[int]] = None
    direction: str = "down"
    params: typing.Dict[str, typing.Any] = attrs.Factory(dict)
    name: str = ""
    #: The instance's protocol, and whether the action works on the wire (both set by validation).
    protocol: str = attrs.field(default="", eq=False)
    wire: bool = attrs.field(default=False, eq=False)

    def param(self, key: str, default: Any = None) -> Any:
        if key in self.params:
            return self.params[key]
        return WIRE_DEFAULTS.get(key, default)

    def describe(self) -> dict:
        out = {"server": self.server, "on": self.on, "action": self.action}
        if self.name:
            out["name"] = self.name
        if self.match:
            out["match"] = dict(self.match)
        out.update(self.params)
        return out

    def to_dict(self) -> dict:
        """Every key of the rule, as a ``[[faults]]`` entry would give it."""
        out = self.describe()
        for key in ("after", "times", "probability", "connection", "direction"):
            value = getattr(self, key)
            if value != attrs.fields_dict(FaultRule)[key].default:
                out[key] = value
        return out


#: Instance name -> (protocol name, its fault surface): what a rule may aim at.
Targets = Mapping[str, "tuple[str, FaultSurface]"]


def build_rule(checker: Checker, path: str, raw: Any, targets: Targets) -> FaultRule:
    """A validated rule from the keys of a ``[[faults]]`` entry; errors name ``path`` and the key."""
    if not isinstance(raw, Mapping):
        checker.fail(path, "a table with server, on, action...", raw)
    missing = [key for key in ("server", "action") if key not in raw]
    if missing:
        checker.fail(f"{path}.{missing[0]}", "a value (server and action are required; missing: "
                     + ", ".join(missing) + ")")
    server = raw.get("server")
    if server not in targets:
        checker.fail(f"{path}.server", "one of " + ", ".join(sorted(targets)), server)
    protocol, surface = targets[server]
    actions = surface.all_actions()
    action = raw.get("action")
    if action not in actions:
        checker.fail(f"{path}.action", f"an action for {server}: " + ", ".join(sorted(actions)), action)
    on = raw.get("on", surface.default_stage)
    if on not in surface.stages:
        checker.fail(f"{path}.on", f"a stage of {server}: " + ", ".join(sorted(surface.stages)), on)
    allowed = surface.stages_for(action)
    if on not in allowed:
        what = "'connect' for a 'refuse' fault" if action == "refuse" else (
            f"a stage where a {server} {action!r} fault applies: " + ", ".join(sorted(allowed)))
        if "on" not in raw:  # the default did not fit: say the key is missing, not what we assumed
            checker.fail(f"{path}.on", f"a value (missing; {action!r} has no default stage): {what}")
        checker.fail(f"{path}.on", what, on)
    schema = actions[action]
    params = {}
    for key, value in raw.items():
        sub = f"{path}.{key}"
        if key in RULE_KEYS:
            continue
        if key not in schema:
            known = sorted(set(RULE_KEYS) | set(schema))
            checker.fail(sub, f"a key of a {server} {action!r} fault: " + ", ".join(known))
        tp = schema[key]
        if isinstance(tp, tuple):
            if value not in tp:
                checker.fail(sub, "one of " + ", ".join(repr(c) for c in tp), value)
        elif tp is dict:
            value = checker.value(sub, typing.Dict[str, str], value)
        elif tp is not object:
            value = checker.value(sub, tp, value)
        params[key] = value
    match = raw.get("match", {})
    if not isinstance(match, Mapping):
        checker.fail(f"{path}.match", "a table of attribute = glob", match)
    if surface.match:
        for key in match:
            if key not in surface.match:
                checker.fail(f"{path}.match.{key}", f"an attribute of {server} events: " + ", ".join(sorted(surface.match)))
    connection = raw.get("connection")
    if connection is not None:
        if isinstance(connection, int) and not isinstance(connection, bool):
            connection = [connection]
        connection = checker.value(f"{path}.connection", typing.List[int], connection)
        if any(c < 1 for c in connection):
            checker.fail(f"{path}.connection", "connection numbers from 1", connection)
    after = checker.value(f"{path}.after", int, raw.get("after", 0))
    times = raw.get("times")
    if times is not None:
        times = checker.value(f"{path}.times", int, times)
    probability = checker.value(f"{path}.probability", float, raw.get("probability", 1.0))
    if not 0.0 <= probability <= 1.0:
        checker.fail(f"{path}.probability", "a number from 0 to 1", probability)
    direction = raw.get("direction", "down")
    if direction not in ("down", "up", "both"):
        checker.fail(f"{path}.direction", "one of 'down', 'up', 'both'", direction)
    if "rate" in params and not 0.0 <= params["rate"] <= 1.0:
        checker.fail(f"{path}.rate", "a number from 0 to 1", params["rate"])
    for key in _NON_NEGATIVE:
        if key in params and params[key] < 0:
            checker.fail(f"{path}.{key}", "a number of 0 or more", params[key])
    if action == "throttle" and params.get("bytes_per_second", 1) == 0:
        checker.fail(f"{path}.bytes_per_second", "more than 0 (use 'stall' to stop the flow)", 0)
    return FaultRule(server=server, action=action, on=on, match=dict(match), after=after, times=times,
                     probability=probability, connection=connection, direction=direction,
                     params=params, name=str(raw.get("name", "")), protocol=protocol,
                     wire=surface.is_wire(action))
