"""Plans generated from a baseline: the points a fault-free run reached, and one fault per point x action.

The Filibuster idea on our stage catalogue: read (server, stage, attributes)
from the control run's journal, fail each point once with each action the
catalogue allows there, then pairs of those, within a budget.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping

from testbed import registry

#: Parameters for generated rules where an action's defaults would do nothing (a delay of 0 s).
EXPLORE_PARAMS: dict[str, dict[str, Any]] = {"delay": {"seconds": 0.2}, "close": {"bytes": 0},
                                             "truncate": {"bytes": 1}}
#: Match attributes too volatile to key a generated rule on.
VOLATILE = frozenset({"size", "body", "headers", "query"})


def reached_points(events: Iterable[Mapping], protocols: Mapping[str, str]) -> list[dict]:
    """Every (server, stage, attributes) a run reached, in first-seen order; ``protocols`` maps server -> protocol."""
    points, seen = [], set()
    surfaces = registry.fault_surfaces()
    for e in events:
        server = e.get("server")
        if server not in protocols:
            continue
        surface = surfaces[protocols[server]]
        kind, stage = e.get("kind"), None
        if kind == "connection.open":
            stage = "connect"
        elif kind == "command":
            name = str(e.get("command", ""))
            stage = name.upper() if name.upper() in surface.stages else (name if name in surface.stages else None)
        elif kind == "stored" and "message" in surface.stages:
            stage = "message"
        if stage is None or (server, stage) in seen:
            continue
        seen.add((server, stage))
        points.append({"server": server, "on": stage})
    return points


def single_faults(points: list[dict], protocols: Mapping[str, str]) -> list[tuple[str, dict]]:
    """One (name, rule) per reached point x each action the catalogue allows at that stage."""
    catalog = registry.catalog()
    out = []
    for point in points:
        stage = catalog[protocols[point["server"]]]["stages"][point["on"]]
        for action in stage["actions"]:
            rule = {"server": point["server"], "on": point["on"], "action": action, "times": 1,
                    **EXPLORE_PARAMS.get(action, {})}
            out.append((f"{point['server']}.{point['on']}.{action}", rule))
    return out


def explored_plans(points: list[dict], protocols: Mapping[str, str], budget: int) -> list[tuple[str, list[dict]]]:
    """Single-fault plans, then pairs of them at different points, at most ``budget`` in all."""
    singles = single_faults(points, protocols)
    plans = [(name, [rule]) for name, rule in singles[:budget]]
    for (n1, r1), (n2, r2) in itertools.combinations(singles, 2):
        if len(plans) >= budget:
            break
        if (r1["server"], r1["on"]) != (r2["server"], r2["on"]):
            plans.append((f"{n1}+{n2}", [r1, r2]))
    return plans
