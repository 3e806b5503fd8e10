"""The daemon's scenarios: the embedded default (every server on its well-known loopback port), and a file's.

The ports and per-protocol defaults come from the registry; this module adds
what is not a protocol's: the seed, the journal bound and the users.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from testbed import registry

#: The control API's loopback port in the default scenario: no peer tool takes it by default
#: (MailHog and Mailpit use 8025, WireMock 8080, Toxiproxy 8474, mountebank 2525, MockServer 1080).
CONTROL_PORT = 2580

#: What the default scenario sets besides its servers.
_BASE = {
    "control": {"listen": f"tcp:{CONTROL_PORT}:interface=127.0.0.1"},
    "seed": 0,
    # A long-running daemon keeps the newest events; --journal FILE keeps them all.
    "journal": {"max_events": 200000},
    "users": {"alice@example.test": "secret", "bob@example.test": "secret"},
}


def default_scenario_data() -> dict:
    """The embedded default scenario, as the data a TOML file would give."""
    data = copy.deepcopy(_BASE)
    data["servers"] = registry.daemon_scenario_servers()
    return data


def with_daemon_ports(data: Mapping[str, Any]) -> tuple[dict, list[tuple[str, str]]]:
    """A file's scenario data with the well-known port on every daemon listener it leaves unset.

    Only a protocol's own instance (``[servers.smtp]``, or no table at all)
    gets them: a second instance of a protocol would collide with the first.
    The control API keeps its well-known port too (``("control", "listen")``).
    Returns the data and the (server, key) pairs filled in. Data that is not
    the expected shape is left for validation to report.
    """
    data = copy.deepcopy(dict(data))
    filled = []
    control = data.setdefault("control", {})
    if isinstance(control, dict) and "listen" not in control:
        control["listen"] = _BASE["control"]["listen"]
        filled.append(("control", "listen"))
    servers = data.setdefault("servers", {})
    if not isinstance(servers, dict):
        return data, filled
    for name, table in registry.daemon_scenario_servers().items():
        own = servers.setdefault(name, {})
        if not isinstance(own, dict) or own.get("protocol", name) != name:
            continue
        for listener in registry.protocol(name).listeners:
            if listener.daemon_port and listener.key not in own:
                own[listener.key] = table[listener.key]
                filled.append((name, listener.key))
    return data, filled
