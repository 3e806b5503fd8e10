"""The running scenario as data: servers, routes and faults as they are now (runtime additions included).

Saved as TOML and passed to ``twistd testbed --config`` it runs the same servers, routes, records and faults;
passwords are never written, so the users are left out.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Scenario keys holding paths: written absolute, so the saved file works from any folder.
_PATH_KEYS = frozenset({"static", "root", "zone_files", "maildir", "ca_cert", "ca_key"})


def _plain(value: Any, absolute) -> Any:
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("source", "base_dir") or item is None:
                continue  # TOML has no null: a missing key takes its default
            if key in _PATH_KEYS and item:
                item = [absolute(p) for p in item] if isinstance(item, list) else absolute(item)
            out[str(key)] = _plain(item, absolute)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, absolute) for v in value]
    return value


def scenario_data(bed) -> dict:
    """The scenario ``bed`` runs now, as the data a TOML file would give (without passwords)."""
    scenario = bed.scenario
    servers = {}
    for name, entry in scenario.servers.items():
        table = {"protocol": entry.protocol, **_plain(entry.config, scenario.path)}
        server = bed.servers.get(name)
        if entry.protocol == "http" and server is not None:
            # In the order a request tries them, so the saved scenario answers as this one does now.
            table["routes"] = [_plain(state.route, scenario.path) for state in server.route_states]
        servers[name] = table
    data = {
        "seed": bed.seed,
        "mail": _plain(scenario.mail, scenario.path),
        "tls": _plain(scenario.tls, scenario.path),
        "journal": _plain(scenario.journal, scenario.path),
        "control": {k: v for k, v in _plain(scenario.control, scenario.path).items() if k != "token"},
        "servers": servers,
        "faults": [_plain(rule.to_dict(), scenario.path) for rule in bed.faults.rules],
    }
    return data


def to_toml(data: dict) -> str:
    import tomli_w

    return tomli_w.dumps(data)
