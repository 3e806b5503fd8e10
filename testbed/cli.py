"""The ``testbed`` console script: run, replay, shrink and report experiments; check a scenario.

Start-up stays light: Twisted is imported only by the commands that run servers.
Exit codes: 0 every cell passed, 1 a cell failed, 2 the plan or scenario is invalid, 3 the client could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import Sequence

INVALID, CLIENT_MISSING = 2, 3


class Progress:
    """One updating line on a terminal; a plain line per finished cell otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.failed = 0

    def __call__(self, row: dict, done: int, total: int) -> None:
        self.failed += row["verdict"] != "pass"
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                              f"{self.failed} not passing  {row['cell'][:60]:<60}")
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{done}/{total}] {row['verdict']:<7} {row['cell']}\n")
        self.stream.flush()


def _load_plan(path: str, client: str | None):
    from testbed.experiment import plan as plan_module

    plan = plan_module.load(path)
    if client:
        raw = {**plan.raw, "client": {**plan.raw["client"], "command": shlex.split(client)}}
        raw["client"].pop("callable", None)
        plan = plan_module.from_dict(raw, source=plan.source, base_dir=plan.base_dir)
    return plan


def _findings(rows: list[dict], summary: dict) -> list[str]:
    """Readable findings: each distinct failed check, with how many cells and one example (the first of ``rows``)."""
    seen: dict[str, list[str]] = {}
    for row in {r["cell"]: r for r in rows}.values():
        for check in row["checks"]:
            if not check["ok"]:
                kind = re.sub(r"\d+", "N", check["detail"].split(":")[0])
                seen.setdefault(f"{check['check']} ({kind})", []).append(f"{row['cell']}: {check['detail']}")
        if row["verdict"] == "timeout":
            seen.setdefault("timeout", []).append(f"{row['cell']}: the client did not finish in time")
    lines = [f"  {name}: failed in {len(cells)} cell(s), e.g. {cells[0]}" for name, cells in seen.items()]
    if summary["broken_control"]:
        lines.insert(0, "  the client is broken: it fails without faults (" + ", ".join(summary["broken_control"]) + ")")
    if summary["flaky"]:
        lines.append("  flaky (repeats under one seed disagree): " + ", ".join(summary["flaky"]))
    return lines


def cmd_run(args) -> int:
    from testbed.experiment import runner
    from testbed.experiment.executors import DaskExecutor, LocalExecutor

    plan = _load_plan(args.plan, args.client)
    out = args.out or os.path.splitext(os.path.basename(args.plan))[0] + "-results"
    executor = DaskExecutor(args.dask) if args.dask else LocalExecutor(args.jobs)
    try:
        rows = runner.run(plan, out, executor, fail_fast=args.fail_fast, progress=Progress())
    finally:
        executor.close()
    return _conclude(out, runner.in_plan_order(plan, rows))


def _conclude(out: str, rows: list[dict]) -> int:
    from testbed.experiment import report, runner

    summary = runner.summarize(rows)
    report.write_junit(out)
    print(f"{summary['cells']} cells: {summary['pass']} passed, {summary['fail']} failed, {summary['error']} errors, "
          f"{summary['timeout']} timed out, {len(summary['flaky'])} flaky group(s); results in {out}/results.jsonl")
    findings = _findings(rows, summary)
    if findings:
        print("Findings:\n" + "\n".join(findings))
    try:
        print(f"Report: {report.write_html(out)}")
    except RuntimeError as e:
        print(e, file=sys.stderr)
    if summary["client_missing"]:
        print("The client could not be run: " + next(r["stderr_tail"] for r in rows if r.get("client_missing")),
              file=sys.stderr)
    return runner.exit_code(summary)


def _row(out: str, cell: str) -> dict:
    from testbed.experiment.runner import read_results

    rows = {r["cell"]: r for r in read_results(out)}
    if cell not in rows:
        raise SystemExit(f"{out}: no cell {cell!r} in results.jsonl (cells: {', '.join(list(rows)[:5])}...)")
    return rows[cell]


def cmd_replay(args) -> int:
    from testbed.experiment import plan as plan_module
    from testbed.experiment.cell import run_cell
    from testbed.experiment.replay import same_faults
    from testbed.experiment.runner import read_plan

    row = _row(args.dir, args.cell)
    again = run_cell(read_plan(args.dir), plan_module.Cell.from_dict(row))
    identical = same_faults(row["fired"], again["fired"])
    print(f"{args.cell}: {again['verdict']} (was {row['verdict']}); fired faults "
          + ("identical" if identical else "DIFFER") + f": {len(again['fired'])} decision(s)")
    for check in again["checks"]:
        print(f"  {'ok    ' if check['ok'] else 'FAILED'} {check['check']}: {check['detail']}")
    return 0 if again["verdict"] == "pass" else 1


def cmd_shrink(args) -> int:
    from testbed.experiment.runner import read_plan
    from testbed.experiment.shrink import shrink

    row = _row(args.dir, args.cell)
    if row["verdict"] == "pass":
        print(f"{args.cell} passed: nothing to shrink", file=sys.stderr)
        return 1
    rules, path = shrink(read_plan(args.dir), row, args.dir, log=print)
    print(f"Minimal plan ({len(rules)} rule(s)) in {path}:")
    for rule in rules:
        print("  " + ", ".join(f"{k}={v!r}" for k, v in rule.items()))
    print(f"Replay it: testbed experiment run {shlex.quote(path)} --out {shlex.quote(os.path.join(args.dir, 'minimal'))}")
    return 0


def cmd_report(args) -> int:
    from testbed.experiment import report

    report.write_junit(args.dir)
    try:
        print(report.write_html(args.dir))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


def cmd_check(args) -> int:
    from testbed import config

    scenario = config.load(args.scenario)
    print(f"{args.scenario}: valid; seed {scenario.seed}")
    for entry in scenario.servers.enabled():
        listeners = ", ".join(f"{l.label} on {getattr(entry.config, l.key)}" for l in entry.spec.listeners
                              if getattr(entry.config, l.key, ""))
        print(f"  server {entry.name} ({entry.protocol}): {listeners}")
    for rule in scenario.faults:
        print("  fault " + ", ".join(f"{k}={v!r}" for k, v in rule.to_dict().items()))
    if scenario.users:
        print(f"  users: {', '.join(sorted(scenario.users))}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a scenario and print what it would run")
    check.add_argument("scenario")
    check.set_defaults(fn=cmd_check)
    experiment = sub.add_parser("experiment", help="fault-injection experiments").add_subparsers(dest="action",
                                                                                                  required=True)
    run = experiment.add_parser("run", help="run every cell of a plan")
    run.add_argument("plan")
    run.add_argument("--jobs", "-j", type=int, default=1, help="cells at a time, in local processes")
    run.add_argument("--out", help="results folder (default: PLAN-results)")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first cell that does not pass")
    run.add_argument("--dask", metavar="URL", help="run cells on a Dask cluster (tcp://scheduler:8786)")
    run.add_argument("--client", metavar="COMMAND", help="run this command instead of the plan's client")
    run.set_defaults(fn=cmd_run)
    for name, fn, text in (("replay", cmd_replay, "rerun one cell exactly"),
                           ("shrink", cmd_shrink, "shrink a failing cell to a minimal plan")):
        p2 = experiment.add_parser(name, help=text)
        p2.add_argument("dir")
        p2.add_argument("cell")
        p2.set_defaults(fn=fn)
    rep = experiment.add_parser("report", help="write report.html and junit.xml from a results folder")
    rep.add_argument("dir")
    rep.set_defaults(fn=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from testbed.schema import ScenarioError

    try:
        return args.fn(args)
    except ScenarioError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return INVALID


if __name__ == "__main__":
    sys.exit(main())
