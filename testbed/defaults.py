"""The embedded default scenario of ``twistd -n testbed``: every server on its well-known loopback port.

The ports and per-protocol defaults come from the registry; this module adds
what is not a protocol's: the seed, the journal bound and the users.
"""

from __future__ import annotations

import copy

from testbed import registry

#: What the default scenario sets besides its servers.
_BASE = {
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
