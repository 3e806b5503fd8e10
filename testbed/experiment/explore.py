"""Plans generated from a baseline: the points a fault-free run reached, and one fault per point x action.

The Filibuster idea on our stage catalogue: read (server, stage, attributes)
from the control run's journal, fail each point once with each action the
catalogue allows there, then pairs of those, within a budget.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable, Mapping

from testbed import registry
from testbed.faults.rules import FaultSurface

#: Parameters for generated rules where an action's defaults would do nothing (a delay of 0 s).
EXPLORE_PARAMS: dict[str, dict[str, Any]] = {"delay": {"seconds": 0.2}, "close": {"bytes": 0},
                                             "truncate": {"bytes": 1}}
#: Match attributes too volatile to key a generated rule on (an HTTP host names the run's ephemeral port).
VOLATILE = frozenset({"size", "body", "headers", "query", "host"})
#: The name of the control run's probe rules (see ``probe_rules``).
PROBE = "explore probe"


def literal(value: Any) -> Any:
    """A match pattern that matches ``value`` literally (fault matches are globs: ``*`` becomes ``[*]``)."""
    if isinstance(value, str):
        return "".join(f"[{c}]" if c in "*?[" else c for c in value)
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, Mapping):
        return {k: literal(v) for k, v in value.items()}
    return value


def probe_rules(targets: Mapping[str, tuple[str, FaultSurface]]) -> list[dict]:
    """One rule per (server, stage) that never fires (``probability = 0``), for the explore control run.

    The engine journals every decision a rule made, so each stage the client
    reaches leaves a ``fault`` event with ``fired = False`` and the stage's
    attributes: what ``reached_points`` reads.
    """
    rules = []
    for server, (_, surface) in targets.items():
        actions = surface.all_actions()
        for stage in sorted(surface.stages):
            usable = sorted(a for a in actions if stage in surface.stages_for(a))
            if usable:
                rules.append({"server": server, "on": stage, "action": usable[0], "probability": 0.0,
                              "name": PROBE})
    return rules


def point_attributes(attributes: Mapping[str, Any] | None, surface: FaultSurface) -> dict:
    """The attributes that key a point: set, not volatile, and ones a rule's ``match`` may name."""
    return {k: v for k, v in sorted((attributes or {}).items())
            if k not in VOLATILE and v is not None and (not surface.match or k in surface.match)}


def _stage_of(event: Mapping, surface: FaultSurface) -> str | None:
    """The stage a journal event without attributes shows the client reached (journals without probes)."""
    kind = event.get("kind")
    if kind == "connection.open":
        return "connect"
    if kind == "command":
        name = str(event.get("command", ""))
        return name.upper() if name.upper() in surface.stages else (name if name in surface.stages else None)
    if kind == "stored" and "message" in surface.stages:
        return "message"
    return None


def reached_points(events: Iterable[Mapping], protocols: Mapping[str, str]) -> list[dict]:
    """Every {server, on, attributes} point a run reached; ``protocols`` maps server -> protocol.

    A point is a stage of a server instance with the attributes a rule was
    asked about there (a ``fault`` event: the control run's probes), so two
    RCPTs to different recipients are two points. Stages seen only through
    commands, connections and stored messages are points with no attributes.
    Stages come in the order first reached, each stage's points in the order seen.
    """
    surfaces = registry.fault_surfaces()
    stages: dict[tuple[str, str], dict[str, dict]] = {}
    bare: set[tuple[str, str]] = set()
    for e in events:
        server = e.get("server")
        if server not in protocols:
            continue
        surface = surfaces[protocols[server]]
        if e.get("kind") == "fault":
            stage, attributes = e.get("on"), point_attributes(e.get("attributes"), surface)
        else:
            stage, attributes = _stage_of(e, surface), None
        if stage not in surface.stages:
            continue
        points = stages.setdefault((server, stage), {})
        if attributes is None:
            bare.add((server, stage))
            continue
        points.setdefault(json.dumps(attributes, sort_keys=True, default=str), attributes)
    out = []
    for (server, stage), points in stages.items():
        if not points and (server, stage) in bare:
            out.append({"server": server, "on": stage, "attributes": {}})
        out.extend({"server": server, "on": stage, "attributes": a} for a in points.values())
    return out


def _label(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _point_names(points: list[dict]) -> list[str]:
    """``server.stage``, and the attributes that tell it apart when a stage has several points."""
    by_stage: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        by_stage.setdefault((p["server"], p["on"]), []).append(p.get("attributes") or {})
    names = []
    for p in points:
        siblings = by_stage[(p["server"], p["on"])]
        name = f"{p['server']}.{p['on']}"
        attributes = p.get("attributes") or {}
        differing = [k for k in sorted({k for s in siblings for k in s})
                     if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in siblings}) > 1]
        if len(siblings) > 1:
            name += "[" + ",".join(f"{k}={_label(attributes[k])}" for k in differing if k in attributes) + "]"
        names.append(name)
    return names


def single_faults(points: list[dict], protocols: Mapping[str, str]) -> list[tuple[str, dict]]:
    """One (name, rule) per reached point x each action the catalogue allows at that stage.

    A rule matches its point's attributes literally, so it fires at that point only.
    """
    catalog = registry.catalog()
    out = []
    for point, name in zip(points, _point_names(points)):
        stage = catalog[protocols[point["server"]]]["stages"][point["on"]]
        match = {k: literal(v) for k, v in (point.get("attributes") or {}).items()}
        for action in stage["actions"]:
            rule = {"server": point["server"], "on": point["on"], "action": action, "times": 1,
                    **EXPLORE_PARAMS.get(action, {})}
            if match:
                rule["match"] = match
            out.append((f"{name}.{action}", rule))
    return out


def _point_key(rule: dict) -> str:
    return json.dumps([rule["server"], rule["on"], rule.get("match", {})], sort_keys=True, default=str)


def explored_plans(points: list[dict], protocols: Mapping[str, str], budget: int) -> list[tuple[str, list[dict]]]:
    """Single-fault plans, then pairs of them at different points, at most ``budget`` in all."""
    singles = single_faults(points, protocols)
    plans = [(name, [rule]) for name, rule in singles[:budget]]
    for (n1, r1), (n2, r2) in itertools.combinations(singles, 2):
        if len(plans) >= budget:
            break
        if _point_key(r1) != _point_key(r2):
            plans.append((f"{n1}+{n2}", [r1, r2]))
    return plans
