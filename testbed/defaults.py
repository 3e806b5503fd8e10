"""The embedded default scenario of ``twistd -n testbed``: every server on its well-known loopback port.

The ports and per-protocol defaults come from the registry; this module adds
what is not a protocol's: the seed, the journal bound and the users.
"""

from __future__ import annotations

import copy

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
