"""The scenario: frozen attrs classes for servers, users and faults, built from TOML or a dict.

Everything is validated here, once, before anything listens; an error names
the file, the key path and what was expected.
"""

from __future__ import annotations

import os
import tomllib
import typing
from typing import Any, Mapping

import attrs

from testbed.faults.catalog import PROTOCOLS, RULE_KEYS, WIRE_DEFAULTS, default_stage

EPHEMERAL = "tcp:0:interface=127.0.0.1"

#: Certificates a TLS listener can serve (``certificate = ...`` on a server), see testbed.tls.
CERTIFICATE_KINDS = ("valid", "expired", "not_yet_valid", "wrong_host", "self_signed", "untrusted_ca")


class ScenarioError(ValueError):
    """A scenario that cannot run: names the source, the key path and what was expected."""

    def __init__(self, source: str, path: str, expected: str, got: Any = attrs.NOTHING):
        self.source, self.path, self.expected = source, path, expected
        where = f"{source}: {path}" if path else source
        message = f"{where}: expected {expected}"
        if got is not attrs.NOTHING:
            message += f", got {got!r}"
        super().__init__(message)


# -- the model ---------------------------------------------------------------

def _choices(*values: str):
    return attrs.field(default=values[0], metadata={"choices": values})


@attrs.frozen
class Route:
    """A canned HTTP response: the first route whose method, path glob and matches fit answers."""

    path: str
    method: str = "GET"
    status: int = 200
    headers: typing.Dict[str, str] = attrs.Factory(dict)
    body: str = ""
    json: typing.Any = None
    query: typing.Dict[str, str] = attrs.Factory(dict)
    match_headers: typing.Dict[str, str] = attrs.Factory(dict)
    body_contains: str = ""
    #: A sequence of responses served in turn (the last one repeats), each a
    #: table with status, headers, body or json.
    responses: typing.List[typing.Dict[str, typing.Any]] = attrs.Factory(list)


@attrs.frozen
class HTTPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = _choices("none", "implicit")
    #: A second, implicit-TLS listener (HTTPS); empty for none.
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = _choices(*CERTIFICATE_KINDS)
    static: str = ""
    routes: typing.List[Route] = attrs.Factory(list)


@attrs.frozen
class SMTPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = _choices("starttls", "none", "implicit")
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = _choices(*CERTIFICATE_KINDS)
    hostname: str = "testbed.test"
    auth: typing.List[str] = attrs.Factory(lambda: ["PLAIN", "LOGIN", "CRAM-MD5"])
    require_tls: bool = False
    require_auth: bool = False
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 100


@attrs.frozen
class POP3Config:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = _choices("starttls", "none", "implicit")
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = _choices(*CERTIFICATE_KINDS)


@attrs.frozen
class IMAPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = _choices("starttls", "none", "implicit")
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = _choices(*CERTIFICATE_KINDS)
    #: SASL mechanisms AUTHENTICATE offers (PLAIN, LOGIN, CRAM-MD5); the LOGIN command is always there.
    auth: typing.List[str] = attrs.Factory(lambda: ["PLAIN", "LOGIN", "CRAM-MD5"])
    #: Advertise LOGINDISABLED and refuse LOGIN/AUTHENTICATE until STARTTLS (or on the IMAPS port).
    require_tls: bool = False


@attrs.frozen
class FTPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = _choices("starttls", "none")
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = _choices(*CERTIFICATE_KINDS)
    #: A real directory to serve; empty for an in-memory tree built from ``files``.
    root: str = ""
    files: typing.Dict[str, str] = attrs.Factory(dict)
    anonymous: bool = True
    require_tls: bool = False
    #: "LOW-HIGH" for passive data ports; empty for ephemeral ports.
    passive_ports: str = ""


@attrs.frozen
class DNSConfig:
    enabled: bool = True
    #: A TCP endpoint string; UDP listens on the same interface and port number.
    listen: str = EPHEMERAL
    zone_files: typing.List[str] = attrs.Factory(list)
    records: typing.Dict[str, typing.Dict[str, typing.Any]] = attrs.Factory(dict)
    ttl: int = 300


@attrs.frozen
class EchoConfig:
    """A UDP echo server: the smallest datagram server, used to prove UDP faults."""

    enabled: bool = False
    listen: str = EPHEMERAL


@attrs.frozen
class Servers:
    http: HTTPConfig = attrs.Factory(HTTPConfig)
    smtp: SMTPConfig = attrs.Factory(SMTPConfig)
    pop3: POP3Config = attrs.Factory(POP3Config)
    imap: IMAPConfig = attrs.Factory(IMAPConfig)
    ftp: FTPConfig = attrs.Factory(FTPConfig)
    dns: DNSConfig = attrs.Factory(DNSConfig)
    echo: EchoConfig = attrs.Factory(EchoConfig)

    def enabled(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in attrs.fields(Servers)
                if getattr(self, f.name).enabled]


@attrs.frozen
class MailConfig:
    #: Mail to an unknown local recipient goes to an auto-created mailbox (else 550).
    accept_unknown: bool = True
    #: A Maildir tree to persist the store in; empty keeps it in memory.
    maildir: str = ""


@attrs.frozen
class TLSConfig:
    #: Load the CA from these PEM files instead of generating a throwaway one.
    ca_cert: str = ""
    ca_key: str = ""
    hostnames: typing.List[str] = attrs.Factory(lambda: ["localhost", "127.0.0.1", "::1"])


@attrs.frozen
class JournalConfig:
    #: Payload bytes kept per connection and direction (counts are always kept).
    payload_cap: int = 16384
    #: Events kept in memory, oldest dropped first (0: no limit). Also bounds
    #: what each server keeps for tests (requests, messages, queries...).
    max_events: int = 0


@attrs.frozen
class FaultRule:
    """Where, when and what: see the fault engine for the semantics."""

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


@attrs.frozen
class Scenario:
    seed: int = 0
    servers: Servers = attrs.Factory(Servers)
    users: typing.Dict[str, str] = attrs.Factory(dict)
    mail: MailConfig = attrs.Factory(MailConfig)
    tls: TLSConfig = attrs.Factory(TLSConfig)
    journal: JournalConfig = attrs.Factory(JournalConfig)
    faults: typing.List[FaultRule] = attrs.Factory(list)
    #: Where the scenario came from, for messages; relative paths resolve against ``base_dir``.
    source: str = attrs.field(default="<scenario>", eq=False)
    base_dir: str = attrs.field(default=".", eq=False)

    def path(self, relative: str) -> str:
        """A path from the scenario, resolved against the scenario file's folder."""
        return relative if os.path.isabs(relative) else os.path.normpath(os.path.join(self.base_dir, relative))


# -- building it from data ----------------------------------------------------

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class _Builder:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: Any = attrs.NOTHING):
        raise ScenarioError(self.source, path, expected, got)

    def value(self, path: str, tp: Any, raw: Any, field: attrs.Attribute | None = None) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if field is not None and "choices" in field.metadata:
            choices = field.metadata["choices"]
            if raw not in choices:
                self.fail(path, "one of " + ", ".join(repr(c) for c in choices), raw)
            return raw
        if tp is typing.Any or tp is object:
            return raw
        if origin is typing.Union:
            if raw is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)][0]
            return self.value(path, inner, raw)
        if attrs.has(tp):
            return self.structure(path, tp, raw)
        if origin in (list, typing.List):
            if not isinstance(raw, (list, tuple)):
                self.fail(path, "a list", raw)
            return [self.value(f"{path}[{i}]", args[0], v) for i, v in enumerate(raw)]
        if origin in (dict, typing.Dict):
            if not isinstance(raw, Mapping):
                self.fail(path, "a table", raw)
            return {str(k): self.value(f"{path}.{k}", args[1], v) for k, v in raw.items()}
        if tp is float:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                self.fail(path, "a number", raw)
            return float(raw)
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(path, "an integer", raw)
            return raw
        if tp in (str, bool):
            if not isinstance(raw, tp):
                self.fail(path, _TYPE_NAMES[tp], raw)
            return raw
        raise TypeError(f"no rule for {tp!r}")  # a bug in the model, not in the scenario

    def structure(self, path: str, cls: type, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            self.fail(path or "(top level)", "a table", raw)
        if cls is FaultRule:
            return self.fault(path, raw)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in attrs.fields(cls) if f.name not in ("source", "base_dir")}
        kwargs = {}
        for key, value in raw.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in fields:
                self.fail(sub, "a known key (this one is not): " + ", ".join(sorted(fields)))
            kwargs[key] = self.value(sub, hints[key], value, fields[key])
        missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in kwargs]
        if missing:
            self.fail(f"{path}.{missing[0]}" if path else missing[0], "a value (this key is required)")
        return cls(**kwargs)

    def fault(self, path: str, raw: Mapping) -> FaultRule:
        server = raw.get("server")
        if server not in PROTOCOLS:
            self.fail(f"{path}.server", "one of " + ", ".join(sorted(PROTOCOLS)), server)
        protocol = PROTOCOLS[server]
        actions = protocol.all_actions()
        action = raw.get("action")
        if action not in actions:
            self.fail(f"{path}.action", f"an action for {server}: " + ", ".join(sorted(actions)), action)
        on = raw.get("on", default_stage(protocol))
        if on not in protocol.stages:
            self.fail(f"{path}.on", f"a stage of {server}: " + ", ".join(sorted(protocol.stages)), on)
        if action in protocol.where and on not in protocol.where[action]:
            self.fail(f"{path}.on", f"a stage where a {server} {action!r} fault applies: "
                      + ", ".join(sorted(protocol.where[action])), on)
        schema = actions[action]
        params = {}
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if key in RULE_KEYS:
                continue
            if key not in schema:
                known = sorted(set(RULE_KEYS) | set(schema))
                self.fail(sub, f"a key of a {server} {action!r} fault: " + ", ".join(known))
            tp = schema[key]
            if isinstance(tp, tuple):
                if value not in tp:
                    self.fail(sub, "one of " + ", ".join(repr(c) for c in tp), value)
            elif tp is dict:
                value = self.value(sub, typing.Dict[str, str], value)
            elif tp is not object:
                value = self.value(sub, tp, value)
            params[key] = value
        match = raw.get("match", {})
        if not isinstance(match, Mapping):
            self.fail(f"{path}.match", "a table of attribute = glob", match)
        if protocol.match:
            for key in match:
                if key not in protocol.match:
                    self.fail(f"{path}.match.{key}", f"an attribute of {server} events: " + ", ".join(sorted(protocol.match)))
        connection = raw.get("connection")
        if connection is not None:
            if isinstance(connection, int) and not isinstance(connection, bool):
                connection = [connection]
            connection = self.value(f"{path}.connection", typing.List[int], connection)
            if any(c < 1 for c in connection):
                self.fail(f"{path}.connection", "connection numbers from 1", connection)
        after = self.value(f"{path}.after", int, raw.get("after", 0))
        times = raw.get("times")
        if times is not None:
            times = self.value(f"{path}.times", int, times)
        probability = self.value(f"{path}.probability", float, raw.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            self.fail(f"{path}.probability", "a number from 0 to 1", probability)
        direction = raw.get("direction", "down")
        if direction not in ("down", "up", "both"):
            self.fail(f"{path}.direction", "one of 'down', 'up', 'both'", direction)
        for key in ("rate",):
            if key in params and not 0.0 <= params[key] <= 1.0:
                self.fail(f"{path}.{key}", "a number from 0 to 1", params[key])
        for key in ("bytes", "bytes_per_second", "size", "seconds", "jitter", "interval", "copies"):
            if key in params and params[key] < 0:
                self.fail(f"{path}.{key}", "a number of 0 or more", params[key])
        if action == "throttle" and params.get("bytes_per_second", 1) == 0:
            self.fail(f"{path}.bytes_per_second", "more than 0 (use 'stall' to stop the flow)", 0)
        return FaultRule(server=server, action=action, on=on, match=dict(match), after=after, times=times,
                         probability=probability, connection=connection, direction=direction,
                         params=params, name=str(raw.get("name", "")))


def _check_endpoints(builder: _Builder, scenario: Scenario) -> None:
    from twisted.internet.endpoints import serverFromString

    for name, config in scenario.servers.enabled():
        for key in ("listen", "tls_listen"):
            endpoint = getattr(config, key, "")
            if not endpoint:
                continue
            try:
                serverFromString(None, endpoint)
            except Exception as e:  # serverFromString raises ValueError, KeyError, TypeError...
                builder.fail(f"servers.{name}.{key}", f"a Twisted endpoint string such as {EPHEMERAL!r} ({e})", endpoint)


def _check_consistency(builder: _Builder, scenario: Scenario) -> None:
    servers = scenario.servers
    for i, route in enumerate(servers.http.routes):
        if route.json is not None and route.body:
            builder.fail(f"servers.http.routes[{i}]", "either body or json, not both")
    for name in ("smtp", "imap"):
        for mech in getattr(servers, name).auth:
            if mech.upper() not in ("PLAIN", "LOGIN", "CRAM-MD5"):
                builder.fail(f"servers.{name}.auth", "mechanisms among PLAIN, LOGIN, CRAM-MD5", mech)
    for name in ("smtp", "imap", "ftp"):
        config = getattr(servers, name)
        if config.enabled and config.require_tls and config.tls == "none" and not getattr(config, "tls_listen", ""):
            builder.fail(f"servers.{name}.require_tls", "tls = 'starttls' or a tls_listen port with it "
                         "(no client could ever get in)", True)
    if servers.ftp.passive_ports:
        try:
            low, high = (int(p) for p in servers.ftp.passive_ports.split("-"))
            assert 0 < low <= high < 65536
        except Exception:
            builder.fail("servers.ftp.passive_ports", "'LOW-HIGH' with 0 < LOW <= HIGH < 65536",
                         servers.ftp.passive_ports)
    if servers.http.static and not os.path.isdir(scenario.path(servers.http.static)):
        builder.fail("servers.http.static", "an existing directory", servers.http.static)
    if servers.ftp.root and not os.path.isdir(scenario.path(servers.ftp.root)):
        builder.fail("servers.ftp.root", "an existing directory", servers.ftp.root)
    for i, zone in enumerate(servers.dns.zone_files):
        if not os.path.isfile(scenario.path(zone)):
            builder.fail(f"servers.dns.zone_files[{i}]", "an existing zone file", zone)
    if bool(scenario.tls.ca_cert) != bool(scenario.tls.ca_key):
        builder.fail("tls", "both ca_cert and ca_key, or neither")
    for i, rule in enumerate(scenario.faults):
        if rule.action == "refuse" and rule.on != "connect":
            builder.fail(f"faults[{i}].on", "'connect' for a 'refuse' fault", rule.on)


def from_dict(data: Mapping[str, Any], source: str = "<scenario>", base_dir: str = ".") -> Scenario:
    """Build and validate a scenario from plain data (as TOML would give it)."""
    builder = _Builder(source)
    if not isinstance(data, Mapping):
        builder.fail("", "a table", data)
    raw = dict(data)
    scenario = builder.structure("", Scenario, raw)
    scenario = attrs.evolve(scenario, source=source, base_dir=base_dir)
    _check_endpoints(builder, scenario)
    _check_consistency(builder, scenario)
    return scenario


def load(path: str) -> Scenario:
    """Read and validate a TOML scenario file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(path, "", "an existing scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"valid TOML ({e})") from None
    return from_dict(data, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def coerce(value: "Scenario | Mapping | str | os.PathLike | None") -> Scenario:
    """A scenario from a Scenario, a dict, a path, or None (every server on ephemeral ports)."""
    if value is None:
        return Scenario()
    if isinstance(value, Scenario):
        return value
    if isinstance(value, Mapping):
        return from_dict(value)
    return load(os.fspath(value))


def rule_from_kwargs(index_label: str, **rule: Any) -> FaultRule:
    """A fault rule from keyword arguments (the marker and ``faults.add``), validated."""
    return _Builder(index_label).fault("fault", rule)
