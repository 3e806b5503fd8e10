"""The scenario: server instances, users, mail, TLS, journal and fault rules, built from TOML or a dict.

Everything is validated here, once, before anything listens; an error names
the file, the key path and what was expected. Each ``[servers.NAME]`` table is
an instance of a registered protocol (``protocol = "smtp"``; by default the
table's name); every registered protocol also runs under its own name unless
its table turns it off, so an empty scenario runs every default server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from typing import Any, Iterator, Mapping

import attrs

from testbed import registry
from testbed.faults.rules import FaultRule, Targets, build_rule
from testbed.registry import EPHEMERAL
from testbed.schema import Checker, ScenarioError

__all__ = ["Scenario", "ServerEntry", "Servers", "ScenarioError", "FaultRule", "from_dict", "load", "coerce",
           "rule_from_kwargs", "read", "EPHEMERAL"]


@attrs.frozen
class ServerEntry:
    """One server instance: its name (journal events and fault rules use it), protocol and config."""

    name: str
    protocol: str
    config: Any

    @property
    def spec(self) -> registry.ProtocolSpec:
        return registry.protocol(self.protocol)


class Servers(Mapping[str, ServerEntry]):
    """The scenario's server instances by name; ``servers.http`` is the ``http`` instance's config."""

    def __init__(self, entries: Mapping[str, ServerEntry] | None = None):
        if entries is None:
            entries = {name: ServerEntry(name, name, spec.config()) for name, spec in registry.protocols().items()}
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> ServerEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._entries[name].config
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Servers) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"Servers({self._entries!r})"

    def enabled(self) -> list[ServerEntry]:
        return [entry for entry in self._entries.values() if entry.config.enabled]

    def targets(self) -> Targets:
        """Instance name -> (protocol, fault surface): what a fault rule may aim at."""
        return {name: (e.protocol, e.spec.faults) for name, e in self._entries.items()}


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


#: The bound on events (and on each server's record lists) when a scenario sets none.
DEFAULT_MAX_EVENTS = 200_000


@attrs.frozen
class JournalConfig:
    #: Payload bytes kept per connection and direction (counts are always kept).
    payload_cap: int = 16384
    #: Events kept in memory, oldest dropped first (0: no limit). Also bounds
    #: what each server keeps for tests (requests, messages, queries...).
    max_events: int = DEFAULT_MAX_EVENTS
    #: Mask passwords and SASL responses in ``data`` payloads (false: keep a client's exact bytes).
    redact: bool = True


@attrs.frozen
class ControlConfig:
    #: The control API's endpoint; empty: off (the daemon then uses ``testbed.control.DEFAULT_LISTEN``).
    listen: str = ""
    #: Required when ``listen`` is not loopback: every request then needs ``Authorization: Bearer TOKEN``.
    token: str = ""


@attrs.frozen
class Scenario:
    seed: int = 0
    servers: Servers = attrs.Factory(Servers)
    users: typing.Dict[str, str] = attrs.Factory(dict)
    mail: MailConfig = attrs.Factory(MailConfig)
    tls: TLSConfig = attrs.Factory(TLSConfig)
    journal: JournalConfig = attrs.Factory(JournalConfig)
    control: ControlConfig = attrs.Factory(ControlConfig)
    faults: typing.List[FaultRule] = attrs.Factory(list)
    #: Where the scenario came from, for messages; relative paths resolve against ``base_dir``.
    source: str = attrs.field(default="<scenario>", eq=False)
    base_dir: str = attrs.field(default=".", eq=False)

    def path(self, relative: str) -> str:
        """A path from the scenario, resolved against the scenario file's folder."""
        return relative if os.path.isabs(relative) else os.path.normpath(os.path.join(self.base_dir, relative))


# -- building it from data ----------------------------------------------------


def _servers(checker: Checker, raw: Any) -> Servers:
    if not isinstance(raw, Mapping):
        checker.fail("servers", "a table of server tables", raw)
    specs = registry.protocols()
    entries = {name: ServerEntry(name, name, spec.config()) for name, spec in specs.items()}
    for name, table in raw.items():
        path = f"servers.{name}"
        if not isinstance(table, Mapping):
            checker.fail(path, "a table", table)
        protocol = table.get("protocol", name)
        if "protocol" in table and protocol not in specs:
            checker.fail(f"{path}.protocol", "a protocol: one of " + ", ".join(specs), protocol)
        if protocol not in specs:
            checker.fail(path, "a known key (a protocol: " + ", ".join(specs)
                         + "), or a table that names one with protocol = \"...\"")
        config = checker.structure(path, specs[protocol].config, table, skip=("protocol",))
        entries[name] = ServerEntry(str(name), protocol, config)
    return Servers(entries)


def _scenario(checker: Checker, data: Mapping[str, Any]) -> Scenario:
    raw = dict(data)
    servers = _servers(checker, raw.pop("servers", {}))
    faults = raw.pop("faults", [])
    scenario = checker.structure("", Scenario, raw)
    if not isinstance(faults, (list, tuple)):
        checker.fail("faults", "a list of fault tables ([[faults]])", faults)
    targets = servers.targets()
    rules = [build_rule(checker, f"faults[{i}]", rule, targets) for i, rule in enumerate(faults)]
    return attrs.evolve(scenario, servers=servers, faults=rules)


def _check_servers(checker: Checker, scenario: Scenario) -> None:
    from twisted.internet.endpoints import serverFromString

    for entry in scenario.servers.enabled():
        spec = entry.spec
        for listener in spec.listeners:
            endpoint = getattr(entry.config, listener.key, "")
            if not endpoint:
                continue
            try:
                serverFromString(None, endpoint)
            except Exception as e:  # serverFromString raises ValueError, KeyError, TypeError...
                checker.fail(f"servers.{entry.name}.{listener.key}",
                             f"a Twisted endpoint string such as {EPHEMERAL!r} ({e})", endpoint)
        check = registry.Check(checker.fail, f"servers.{entry.name}", scenario.path, scenario.users)
        registry.check_tls_versions(getattr(entry.config, "tls_versions", ()), check)
        if spec.check is not None:
            spec.check(entry.config, check)
    check_control(checker, scenario.control)
    if bool(scenario.tls.ca_cert) != bool(scenario.tls.ca_key):
        checker.fail("tls", "both ca_cert and ca_key, or neither")


def loopback_endpoint(endpoint: str) -> bool:
    """Whether a TCP endpoint string binds only loopback (no ``interface=`` binds every interface)."""
    interface = ""
    for part in re.split(r"(?<!\\):", endpoint)[2:]:
        if part.startswith("interface="):
            interface = part[len("interface="):].replace("\\", "")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def check_control(checker: Checker, control: ControlConfig, key: str = "control.listen") -> None:
    """An endpoint that parses; a token when it listens beyond loopback."""
    from twisted.internet.endpoints import serverFromString

    if not control.listen:
        return
    try:
        serverFromString(None, control.listen)
    except Exception as e:
        checker.fail(key, f"a Twisted endpoint string such as {EPHEMERAL!r} ({e})", control.listen)
    if not control.token and not loopback_endpoint(control.listen):
        checker.fail("control.token", "a token: the control API listens beyond loopback "
                                      f"({control.listen!r}), so every request must carry one")


def from_dict(data: Mapping[str, Any], source: str = "<scenario>", base_dir: str = ".") -> Scenario:
    """Build and validate a scenario from plain data (as TOML would give it)."""
    checker = Checker(source)
    if not isinstance(data, Mapping):
        checker.fail("", "a table", data)
    scenario = attrs.evolve(_scenario(checker, data), source=source, base_dir=base_dir)
    _check_servers(checker, scenario)
    return scenario


def read(path: str) -> dict[str, Any]:
    """A TOML scenario file's data, not yet validated (``from_dict`` does that)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(path, "", "an existing scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"valid TOML ({e})") from None


def load(path: str) -> Scenario:
    """Read and validate a TOML scenario file."""
    return from_dict(read(path), source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def coerce(value: "Scenario | Mapping | str | os.PathLike | None") -> Scenario:
    """A scenario from a Scenario, a dict, a path, or None (every server on ephemeral ports)."""
    if value is None:
        return Scenario()
    if isinstance(value, Scenario):
        return value
    if isinstance(value, Mapping):
        return from_dict(value)
    return load(os.fspath(value))


def rule_from_kwargs(label: str, targets: Targets | None = None, **rule: Any) -> FaultRule:
    """A fault rule from keyword arguments, validated against ``targets`` (default: each protocol under its name)."""
    if targets is None:
        targets = Servers().targets()
    return build_rule(Checker(label), "fault", rule, targets)
