"""Running a plan: its cells through an executor, each result appended to DIR/results.jsonl as it finishes.

An interrupted run resumes (cells already in the file are skipped); explore
plans come from the control run's journal; repeats that disagree are flaky.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from testbed.experiment import plan as plan_module
from testbed.experiment.cell import plan_payload, run_cell
from testbed.experiment.explore import explored_plans

RESULTS = "results.jsonl"
PLAN_COPY = "plan.json"


def read_results(out_dir: str) -> list[dict]:
    """The rows of DIR/results.jsonl (a torn last line from an interrupted run is ignored)."""
    path = os.path.join(out_dir, RESULTS)
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def drop_torn_line(path: str) -> None:
    """Cut a last line an interrupted run left without its newline, so appended rows start on a line of their own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_plan(out_dir: str) -> plan_module.Plan:
    """The plan a results folder was made with (as it was when the run started)."""
    with open(os.path.join(out_dir, PLAN_COPY), encoding="utf-8") as f:
        payload = json.load(f)
    return plan_module.from_dict(payload["raw"], source=payload["source"], base_dir=payload["base_dir"])


def expanded(plan: plan_module.Plan, rows: list[dict]) -> plan_module.Plan:
    """The plan with its explored plans, read from the control run's reached points."""
    if not plan.explore:
        return plan
    # The plan's first control cell, not the first to finish: the explored plans must not depend on that.
    by_cell = {r["cell"]: r for r in rows}
    control = next((by_cell[c.id] for c in plan.cells() if c.plan == "control" and c.id in by_cell), None)
    if control is None:
        return plan
    protocols = {n: e.protocol for n, e in plan.scenario.servers.items()}
    return plan.with_plans([plan_module.NamedPlan(name, faults)
                            for name, faults in explored_plans(control["reached"], protocols, plan.budget)])


def in_plan_order(plan: plan_module.Plan, rows: list[dict]) -> list[dict]:
    """The rows in the plan's cell order (rows of cells the plan does not have last, as they were).

    Rows arrive in the order parallel cells happen to finish; whatever is printed
    or written from them (examples, reports) must not change with that order.
    """
    order = {c.id: i for i, c in enumerate(expanded(plan, rows).cells())}
    return sorted(rows, key=lambda r: order.get(r["cell"], len(order)))


def summarize(rows: list[dict]) -> dict:
    """Counts by verdict, flaky groups (repeats that disagree) and a broken control."""
    latest = {r["cell"]: r for r in rows}
    counts = {"pass": 0, "fail": 0, "error": 0, "timeout": 0}
    groups: dict[str, set] = {}
    for row in latest.values():
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
        groups.setdefault(row["group"], set()).add(row["verdict"] == "pass")
    flaky = sorted(g for g, outcomes in groups.items() if len(outcomes) > 1)
    broken = sorted({r["group"] for r in latest.values() if r["plan"] == "control" and r["verdict"] != "pass"})
    return {"cells": len(latest), **counts, "flaky": flaky, "broken_control": broken,
            "client_missing": any(r.get("client_missing") for r in latest.values())}


def exit_code(summary: dict) -> int:
    """0 every cell passed, 1 a cell failed (or was flaky), 3 the client could not be run at all."""
    if summary["client_missing"]:
        return 3
    return 0 if summary["cells"] and summary["pass"] == summary["cells"] else 1


def run(plan: plan_module.Plan, out_dir: str, executor, fail_fast: bool = False,
        progress: Callable[[dict, int, int], None] | None = None) -> list[dict]:
    """Run every cell not yet in DIR/results.jsonl; returns every row of the file."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, PLAN_COPY), "w", encoding="utf-8") as f:
        json.dump(plan_payload(plan), f, indent=1, default=str)
    rows = read_results(out_dir)
    drop_torn_line(os.path.join(out_dir, RESULTS))
    payload = plan_payload(plan)
    stopped = False
    with open(os.path.join(out_dir, RESULTS), "a", encoding="utf-8") as results:
        stages = [[c for c in plan.cells() if c.plan == "control"], None]
        for stage in stages:
            cells = stage if stage is not None else [c for c in expanded(plan, rows).cells() if c.plan != "control"]
            done = {r["cell"] for r in rows}
            todo = [c for c in cells if c.id not in done]
            total, finished = len(todo), 0
            keep = plan.explore and stage is not None
            for row in executor.run(run_cell, [(payload, c.to_dict(), out_dir, keep) for c in todo]):
                results.write(json.dumps(row) + "\n")
                results.flush()
                rows.append(row)
                finished += 1
                if progress is not None:
                    progress(row, finished, total)
                if row.get("client_missing") or (fail_fast and row["verdict"] != "pass"):
                    executor.cancel()
                    stopped = True
            if stopped:
                break
    return rows
