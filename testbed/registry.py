"""The protocols: each declares its config, fault stages and actions, listeners, fixture and daemon options once.

A protocol is a package under ``testbed/servers/`` whose ``spec.py`` defines
``SPEC``, a ``ProtocolSpec``; adding one is that package plus one line in
``SPEC_MODULES``. Spec modules are pure data: they import no Twisted protocol
module (some install a reactor at import), so validation, the catalog, the
pytest fixtures and the twistd options can all read them cheaply. Everything
else that lists protocols (the scenario's server tables, the fault catalog,
the harness, the fixtures, the daemon's options and default ports, the
README's fault tables) is derived from here.
"""

from __future__ import annotations

import functools
import importlib
import typing
from typing import Any, Callable, Mapping

import attrs

from testbed.faults.rules import FaultSurface, ReplyStyle
from testbed.schema import choices

#: One line per protocol: the module holding its ``SPEC``.
SPEC_MODULES = (
    "testbed.servers.http.spec",
    "testbed.servers.smtp.spec",
    "testbed.servers.pop3.spec",
    "testbed.servers.imap.spec",
    "testbed.servers.ftp.spec",
    "testbed.servers.dns.spec",
    "testbed.servers.echo.spec",
)

#: A listener endpoint on a free loopback port: the default of every ``listen`` key.
EPHEMERAL = "tcp:0:interface=127.0.0.1"

#: Certificates a TLS listener can serve (``certificate = ...`` on a server), see testbed.tls.
CERTIFICATE_KINDS = ("valid", "expired", "not_yet_valid", "wrong_host", "self_signed", "untrusted_ca")

#: TLS versions a server can be limited to (``tls_versions = [...]``), oldest first.
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def check_tls_versions(versions, check: "Check") -> None:
    """``tls_versions``: known names making one contiguous range (OpenSSL sets a minimum and a maximum only)."""
    for version in versions:
        if version not in TLS_VERSIONS:
            check.fail("tls_versions", "versions among " + ", ".join(TLS_VERSIONS), version)
    indexes = sorted({TLS_VERSIONS.index(v) for v in versions})
    if indexes and indexes != list(range(indexes[0], indexes[-1] + 1)):
        check.fail("tls_versions", "a contiguous range such as ['TLSv1', 'TLSv1.1']", list(versions))


@attrs.frozen
class MailListenersConfig:
    """The listener keys SMTP, POP3 and IMAP share: a plain (or STARTTLS) port and an implicit-TLS port."""

    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = choices("starttls", "none", "implicit")
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = choices(*CERTIFICATE_KINDS)
    #: The TLS versions served, a contiguous range of TLS_VERSIONS (empty: TLS 1.2 and 1.3).
    tls_versions: typing.List[str] = attrs.Factory(list)


@attrs.frozen
class ListenerSpec:
    """One listener a protocol can open: its scenario key, label, URL scheme and daemon port."""

    #: The config key holding its endpoint ("listen", "tls_listen").
    key: str
    #: What ``describe`` and ``--ports-out`` call it ("smtp", "smtps").
    label: str
    scheme: str
    tls: bool = False
    #: The ``twistd testbed`` option that sets it (``--smtps ENDPOINT``), and its well-known port there.
    option: str = ""
    daemon_port: int | None = None
    #: "tcp", or "udp+tcp" for DNS (UDP on the TCP port's number).
    transport: str = "tcp"


class Check:
    """What a spec's ``check`` gets: fail with a key under this server's table; resolve scenario paths."""

    def __init__(self, fail: Callable[..., None], prefix: str, path: Callable[[str], str], users: Mapping[str, str]):
        self._fail = fail
        self.prefix = prefix
        self.path = path
        self.users = users

    def fail(self, key: str, expected: str, got: Any = attrs.NOTHING) -> None:
        self._fail(f"{self.prefix}.{key}", expected, got)


@attrs.frozen
class ProtocolSpec:
    """Everything the testbed knows about a protocol before it imports the protocol's code."""

    name: str
    #: One line for docs and ``--help``.
    summary: str
    #: The attrs class of ``[servers.NAME]`` (every field defaulted; ``enabled`` among them).
    config: type
    faults: FaultSurface
    listeners: tuple[ListenerSpec, ...]
    #: "module:Class" of its ``Server`` (imported only when an instance runs).
    server: str
    #: How its ``reply`` fault is worded (line protocols), else None.
    replies: ReplyStyle | None = None
    #: The pytest fixture that hands out its default instance ("smtp_server"), or None.
    fixture: str | None = None
    #: Cross-field checks of its config: ``check(config, Check)``.
    check: Callable[[Any, Check], None] | None = None
    #: ``wait_for`` filter keywords that stand for a record attribute of another name (SMTP: ``to``).
    wait_aliases: Mapping[str, str] = attrs.Factory(dict)
    #: Extra ``[servers.NAME]`` keys the embedded default scenario sets (ports come from ``listeners``).
    daemon_defaults: Mapping[str, Any] = attrs.Factory(dict)

    def load_server(self) -> type:
        module, _, cls = self.server.partition(":")
        return getattr(importlib.import_module(module), cls)

    def catalog(self) -> dict:
        """The protocol's stages, match attributes and actions with parameters, as JSON-ready data."""
        surface = self.faults

        def params(schema: Mapping[str, object]) -> dict:
            return {key: list(tp) if isinstance(tp, tuple) else getattr(tp, "__name__", str(tp))
                    for key, tp in schema.items()}

        actions = surface.all_actions()
        return {
            "protocol": self.name,
            "summary": self.summary,
            "transport": surface.transport,
            "default_stage": surface.default_stage,
            "match": sorted(surface.match),
            "stages": {stage: {"note": surface.notes.get(stage, ""),
                               "actions": sorted(a for a in actions if stage in surface.stages_for(a))}
                       for stage in sorted(surface.stages)},
            "actions": {action: {"wire": surface.is_wire(action), "params": params(schema),
                                 "stages": sorted(surface.stages_for(action))}
                        for action, schema in sorted(actions.items())},
        }


@functools.cache
def protocols() -> dict[str, ProtocolSpec]:
    """Every registered protocol, by name, in registration order."""
    specs = {}
    for module in SPEC_MODULES:
        spec = importlib.import_module(module).SPEC
        specs[spec.name] = spec
    return specs


def protocol(name: str) -> ProtocolSpec:
    try:
        return protocols()[name]
    except KeyError:
        raise KeyError(f"no protocol {name!r} (registered: {', '.join(protocols())})") from None


def fault_surfaces() -> dict[str, FaultSurface]:
    """Each protocol's fault surface (stages, actions, match attributes), by protocol name."""
    return {name: spec.faults for name, spec in protocols().items()}


def catalog() -> dict[str, dict]:
    """Every protocol's fault catalog (the control API and the experiment explorer read this)."""
    return {name: spec.catalog() for name, spec in protocols().items()}


def endpoint_options() -> dict[str, tuple[str, str]]:
    """``twistd testbed --OPTION ENDPOINT`` -> (protocol, config key it sets)."""
    return {l.option: (spec.name, l.key) for spec in protocols().values() for l in spec.listeners if l.option}


def daemon_scenario_servers() -> dict[str, dict]:
    """The embedded default scenario's ``[servers]``: every daemon listener on its well-known loopback port."""
    servers = {}
    for spec in protocols().values():
        table = {l.key: f"tcp:{l.daemon_port}:interface=127.0.0.1" for l in spec.listeners if l.daemon_port}
        if table:
            servers[spec.name] = {**table, **spec.daemon_defaults}
    return servers


def fault_tables_markdown() -> str:
    """The README's per-protocol fault tables: stages, match attributes, and each protocol action's parameters and stages."""
    out = []
    for spec in protocols().values():
        surface = spec.faults
        wire = {"tcp": "TCP wire actions", "udp": "datagram actions", "both": "TCP wire and datagram actions"}
        out.append(f"**{spec.name}**: stages " + ", ".join(f"`{s}`" for s in sorted(surface.stages))
                   + "; `match` on " + (", ".join(f"`{m}`" for m in sorted(surface.match)) or "anything")
                   + f"; {wire[surface.transport]} at every stage.\n")
        if surface.actions:
            out.append("| action | parameters | stages |")
            out.append("| --- | --- | --- |")
            for action, schema in sorted(surface.actions.items()):
                params = ", ".join(f"`{p}`" for p in schema) or "none"
                stages = surface.stages_for(action)
                where = "every stage" if stages == surface.stages else ", ".join(f"`{s}`" for s in sorted(stages))
                out.append(f"| `{action}` | {params} | {where} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


README_BEGIN = "<!-- fault tables: generated from testbed.registry -->"
README_END = "<!-- end of fault tables -->"


def rewrite_readme(path: str) -> None:
    """Replace the generated fault-table block of a README with ``fault_tables_markdown()``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{README_BEGIN}\n{fault_tables_markdown()}{README_END}{tail}")


if __name__ == "__main__":  # python3 -m testbed.registry README.md
    import sys

    rewrite_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md")
