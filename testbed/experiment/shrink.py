"""Shrinking a failing cell to a minimal plan: fired decisions as deterministic rules, ddmin, smaller parameters.

Rules are keyed on stage and match attributes, never on connection numbers,
so they survive a client that makes fewer connections once faults are gone.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

from testbed import registry
from testbed.experiment import plan as plan_module
from testbed.experiment.cell import run_cell
from testbed.experiment.explore import literal, point_attributes

T = TypeVar("T")
#: Parameters that make a fault milder as they shrink, and how far they go.
SHRINKABLE = {"seconds": 0.0, "jitter": 0.0, "interval": 0.0, "bytes": 0, "times": 1}
_NOT_PARAMS = ("server", "on", "action", "name", "match")


def deterministic_rules(fired: list[dict], protocols: dict[str, str]) -> list[dict]:
    """One rule per distinct fired decision: its stage, action, parameters and attributes; ``times`` = how often."""
    surfaces = registry.fault_surfaces()
    rules: list[dict] = []
    for fault in fired:
        detail = fault.get("detail") or {}
        surface = surfaces[protocols[fault["server"]]]
        match = {k: literal(v) for k, v in point_attributes(fault.get("attributes"), surface).items()}
        rule = {"server": fault["server"], "on": fault["on"], "action": fault["action"],
                **{k: v for k, v in detail.items() if k not in _NOT_PARAMS}}
        if match:
            rule["match"] = match
        same = next((r for r in rules if {k: v for k, v in r.items() if k != "times"} == rule), None)
        if same is not None:
            same["times"] += 1
        else:
            rules.append({**rule, "times": 1})
    return rules


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """Zeller's delta debugging: a 1-minimal subset of ``items`` for which ``fails`` still holds."""
    items = list(items)
    cache: dict[tuple, bool] = {}

    def test(subset: list[T]) -> bool:
        key = tuple(id(i) for i in subset)
        if key not in cache:
            cache[key] = fails(subset)
        return cache[key]

    n = 2
    while len(items) >= 2:
        size = len(items)
        chunks = [items[i * size // n:(i + 1) * size // n] for i in range(n)]
        for chunk in chunks:
            if chunk and test(chunk):
                items, n = chunk, 2
                break
        else:
            for i in range(n):
                complement = [x for j, c in enumerate(chunks) if j != i for x in c]
                if complement and len(complement) < size and test(complement):
                    items, n = complement, max(n - 1, 2)
                    break
            else:
                if n >= size:
                    break
                n = min(size, n * 2)
    return items


def shrink_parameters(rules: list[dict], fails: Callable[[list[dict]], bool]) -> list[dict]:
    """Each shrinkable parameter to its floor, else halved, while the failure holds."""
    rules = [dict(r) for r in rules]
    for i, rule in enumerate(rules):
        for key, floor in SHRINKABLE.items():
            value = rule.get(key)
            if not isinstance(value, (int, float)) or value <= floor:
                continue
            for candidate in (floor, type(value)(value / 2)):
                if candidate >= value or candidate < floor:
                    continue
                trial = [dict(r) for r in rules]
                trial[i][key] = candidate
                if fails(trial):
                    rules = trial
                    break
    return rules


def shrink(plan: plan_module.Plan, row: dict, out_dir: str, log: Callable[[str], None] = lambda _: None) -> tuple[list[dict], str]:
    """The minimal failing rule set of a failed cell, and the path of the minimal.toml that replays it."""
    protocols = {n: e.protocol for n, e in plan.scenario.servers.items()}
    runs = [0]

    def fails(rules: list[dict]) -> bool:
        runs[0] += 1
        cell = plan_module.Cell("minimal", rules, {}, row["seed"], 0)
        verdict = run_cell(plan, cell)["verdict"]
        log(f"  run {runs[0]}: {len(rules)} rule(s) -> {verdict}")
        return verdict in ("fail", "timeout")

    rules = deterministic_rules(row["fired"], protocols)
    log(f"{len(row['fired'])} fired decision(s) -> {len(rules)} deterministic rule(s)")
    if not fails(rules):
        raise RuntimeError(f"cell {row['cell']} does not fail again with its fired faults as deterministic rules")
    rules = ddmin(rules, fails)
    rules = shrink_parameters(rules, fails)
    path = os.path.join(out_dir, "minimal.toml")
    write_minimal(plan, rules, row["seed"], path)
    return rules, path


def write_minimal(plan: plan_module.Plan, rules: list[dict], seed: int, path: str) -> None:
    """A plan with one cell: the original scenario, client and checks, these rules, this seed, no control."""
    import tomli_w

    raw = {k: v for k, v in plan.raw.items() if k not in ("plans", "axes", "seeds", "repeats", "explore", "budget")}
    if isinstance(raw.get("scenario"), str):
        raw["scenario"] = plan.path(raw["scenario"])
    raw["client"] = {**raw["client"], "cwd": plan.path(plan.client.cwd or ".")}
    raw.update(seeds=[seed], repeats=1, control=False, plans=[{"name": "minimal", "faults": rules}])
    with open(path, "wb") as f:
        tomli_w.dump(raw, f)
