"""Running plans: results.jsonl as cells finish, resume, flaky groups, replay identity, Dask, the report, the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from testbed.experiment import plan as plan_module
from testbed.experiment import report, runner
from testbed.experiment.cell import run_cell
from testbed.experiment.executors import DaskExecutor, LocalExecutor
from testbed.experiment.replay import fault_sequence, same_faults

HERE = pathlib.Path(__file__).parent
SMTP_ONLY = {"servers": {n: {"enabled": n == "smtp"} for n in ("smtp", "http", "pop3", "imap", "ftp", "dns", "echo")}}
RCPT_451 = {"server": "smtp", "on": "RCPT", "action": "reply", "code": 451}


def make_plan(client="send_once", **extra) -> plan_module.Plan:
    data = {"scenario": SMTP_ONLY, "client": {"callable": f"experiment_clients:{client}", "timeout": 20},
            "plans": [{"name": "rcpt451", "faults": [RCPT_451]}], "seeds": 2,
            "checks": [{"check": "stored_exactly_once"}, {"check": "stdout", "matches": "sent"}]}
    data.update(extra)
    return plan_module.from_dict(data, source="test plan", base_dir=str(HERE))


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(HERE.parent)})


def test_local_run_writes_each_cell_resumes_and_reports(tmp_path):
    plan = make_plan()
    executor = LocalExecutor(2)
    try:
        rows = runner.run(plan, str(tmp_path), executor)
        lines = (tmp_path / "results.jsonl").read_text().splitlines()
        assert len(lines) == len(rows) == 4
        by_plan = {(r["plan"], r["seed"]): r for r in rows}
        control, faulted = by_plan[("control", 1)], by_plan[("rcpt451", 1)]
        assert control["verdict"] == "pass" and control["journal"] is None and control["fired"] == []
        assert faulted["verdict"] == "fail" and faulted["exit_code"] == 1
        assert [f["on"] for f in faulted["fired"]] == ["RCPT"] and "SMTPRecipientsRefused" in faulted["stderr_tail"]
        assert {c["check"]: c["ok"] for c in faulted["checks"]} == {
            "exit(status=0)": False, "stored_exactly_once()": False, "stdout(matches='sent')": False}
        assert (tmp_path / faulted["journal"]).exists()
        # Resume: nothing left to run; after losing a line, only that cell runs again.
        assert len(runner.run(plan, str(tmp_path), executor)) == 4
        (tmp_path / "results.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
        again = runner.run(plan, str(tmp_path), executor)
        assert len(again) == 4 and again[-1]["cell"] == json.loads(lines[3])["cell"]
    finally:
        executor.close()
    summary = runner.summarize(again)
    assert (summary["pass"], summary["fail"], summary["flaky"]) == (2, 2, [])
    assert runner.exit_code(summary) == 1
    html = pathlib.Path(report.write_html(str(tmp_path))).read_text()
    assert "id='heatmap'" in html and html.count("<svg") == 1 + 2  # the heatmap, a timeline per failing cell
    assert "class='timeline'" in html and "testbed experiment replay" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\((?!#)|@import""", html)
    suite = ET.parse(report.write_junit(str(tmp_path))).getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    assert len(suite.findall("testcase/failure")) == 2


class FinishingBackwards:
    """An executor whose cells finish in the reverse of plan order; each faulted cell stores twice, without running."""

    def __init__(self, jobs=1):
        pass

    def run(self, fn, calls):
        for _, cell, _, _ in reversed(list(calls)):
            ok = not cell["faults"]
            yield {**cell, "verdict": "pass" if ok else "fail", "fired": [], "duration": 0.1, "exit_code": 0,
                   "stdout_tail": "", "stderr_tail": "", "client_missing": False, "reached": [], "journal": None,
                   "checks": [{"check": "stored_exactly_once()", "ok": ok,
                               "detail": "stored once" if ok else f"stored 2 times: {cell['cell']}"}]}

    def cancel(self):
        pass

    def close(self):
        pass


def test_findings_and_reports_follow_the_plan_not_the_order_cells_finish(tmp_path, monkeypatch, capsys):
    from testbed import cli
    from testbed.experiment import executors

    plan = tmp_path / "plan.toml"
    plan.write_text('seeds = [1, 2]\n[client]\ncommand = ["true"]\n[scenario.servers.http]\nenabled = false\n'
                    + "".join(f'[[plans]]\nname = "{name}"\n[[plans.faults]]\nserver = "smtp"\non = "RCPT"\n'
                              'action = "reply"\ncode = 451\n' for name in ("first", "second", "third")))
    monkeypatch.setattr(executors, "LocalExecutor", FinishingBackwards)
    assert cli.main(["experiment", "run", str(plan), "--jobs", "2", "--out", str(tmp_path / "out")]) == 1
    findings = capsys.readouterr().out.split("Findings:")[1]
    assert "failed in 6 cell(s), e.g. first/seed=1/r0: stored 2 times: first/seed=1/r0" in findings
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert [case.get("name") for case in suite.findall("testcase")] == [
        f"{name}/seed={seed}/r0" for name in ("control", "first", "second", "third") for seed in (1, 2)]


def test_explore_starts_from_the_plans_first_control_cell_whichever_finished_first():
    plan = make_plan(plans=[], explore=True, budget=1000, seeds=2, checks=[])
    connect, ehlo = ({"server": "smtp", "on": on, "attributes": {}} for on in ("connect", "EHLO"))
    rows = [{"cell": "control/seed=1/r0", "plan": "control", "reached": [connect]},
            {"cell": "control/seed=2/r0", "plan": "control", "reached": [connect, ehlo]}]
    for finished in (rows, rows[::-1]):
        names = [p.name for p in runner.expanded(plan, finished).plans]
        assert names and all(name.startswith("smtp.connect.") for name in names)


def test_flaky_groups_are_repeats_that_disagree():
    rows = [{"cell": f"p/seed=1/r{r}", "group": "p/seed=1", "plan": "p", "verdict": v}
            for r, v in enumerate(["pass", "fail"])]
    rows += [{"cell": "control/seed=1/r0", "group": "control/seed=1", "plan": "control", "verdict": "fail"}]
    summary = runner.summarize(rows)
    assert summary["flaky"] == ["p/seed=1"] and summary["broken_control"] == ["control/seed=1"]


def test_replay_fires_the_same_faults_in_the_same_order():
    faults = [{"server": "smtp", "on": "RCPT", "action": "reply", "code": 451, "probability": 0.5},
              {"server": "smtp", "on": "MAIL", "action": "reply", "code": 452, "probability": 0.3},
              {"server": "smtp", "on": "connect", "action": "delay", "seconds": 0.01, "probability": 0.5}]
    plan = make_plan("send_five", plans=[{"name": "mixed", "faults": faults}])
    cell = next(c for c in plan.cells() if c.plan == "mixed" and c.seed == 2)
    first, second = run_cell(plan, cell), run_cell(plan, cell)
    assert len(first["fired"]) >= 2 and same_faults(first["fired"], second["fired"])
    other = run_cell(plan, plan_module.Cell("mixed", cell.faults, {}, 1, 0))
    assert fault_sequence(other["fired"]) != fault_sequence(first["fired"])  # the seed decides


def test_dask_local_cluster_runs_cells(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows = runner.run(make_plan(), str(tmp_path), DaskExecutor(client))
    assert sorted((r["plan"], r["verdict"]) for r in rows) == [("control", "pass")] * 2 + [("rcpt451", "fail")] * 2


def test_cli_exit_codes_and_replay(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(f'seeds = 1\n[client]\ncallable = "experiment_clients:send_once"\ncwd = "{HERE}"\n'
                    '[scenario.servers.http]\nenabled = false\n'
                    '[[plans]]\nname = "r"\n[[plans.faults]]\nserver = "smtp"\non = "RCPT"\naction = "reply"\ncode = 451\n')
    out = tmp_path / "out"
    done = cli("experiment", "run", str(plan), "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert "2 cells: 1 passed, 1 failed" in done.stdout and "exit(status=0)" in done.stdout
    replay = cli("experiment", "replay", str(out), "r/seed=1/r0")
    assert replay.returncode == 1 and "fired faults identical: 1 decision(s)" in replay.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[client]\ncommand = ["true"]\n[[plans]]\nname = "x"\n[[plans.faults]]\nserver = "smtp"\naction = "reply"\non = "RCTP"\n')
    invalid = cli("experiment", "run", str(bad), "--out", str(tmp_path / "bad"))
    assert invalid.returncode == 2
    assert f"{bad}: plans[0].faults[0].on: expected a stage of smtp" in invalid.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text('[client]\ncommand = ["/nonexistent/client"]\n')
    gone = cli("experiment", "run", str(missing), "--out", str(tmp_path / "gone"))
    assert gone.returncode == 3 and "cannot run '/nonexistent/client'" in gone.stderr


def test_cli_check_prints_what_a_scenario_runs(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('seed = 4\n[servers.http]\nenabled = false\n[[faults]]\nserver = "smtp"\non = "RCPT"\n'
                        'action = "reply"\ncode = 451\n')
    done = cli("check", str(scenario))
    assert done.returncode == 0 and "valid; seed 4" in done.stdout
    assert "server smtp (smtp): smtp on tcp:0:interface=127.0.0.1" in done.stdout and "http" not in done.stdout.split("server smtp")[0]
    assert "fault server='smtp', on='RCPT', action='reply', code=451" in done.stdout
    scenario.write_text('[servers.smtp]\ntls = "maybe"\n')
    bad = cli("check", str(scenario))
    assert bad.returncode == 2 and "servers.smtp.tls: expected one of" in bad.stderr


def test_explore_fails_each_reached_point_once(tmp_path):
    plan = make_plan(plans=[], explore=True, budget=4, seeds=1, checks=[])
    executor = LocalExecutor(2)
    try:
        rows = runner.run(plan, str(tmp_path), executor)
    finally:
        executor.close()
    control = next(r for r in rows if r["plan"] == "control")
    assert control["verdict"] == "pass" and control["journal"]  # explore keeps the baseline's journal
    assert [p["on"] for p in control["reached"]][:2] == ["connect", "EHLO"]
    explored = [r for r in rows if r["plan"] != "control"]
    assert len(explored) == 4 and all(r["plan"].startswith("smtp.connect.") for r in explored)
    assert all(len(r["faults"]) == 1 and r["faults"][0]["times"] == 1 for r in explored)
    assert any(r["verdict"] == "fail" and r["fired"] for r in explored)


def test_explore_aims_a_fault_at_one_reached_recipient():
    plan = make_plan("send_five", plans=[], explore=True, budget=1000, seeds=1,
                     checks=[{"check": "stdout", "matches": "sent 5"}])
    control = run_cell(plan, next(c for c in plan.cells() if c.plan == "control"))
    assert control["verdict"] == "pass" and control["faults"] == [] and control["fired"] == []  # probes never fire
    assert [p["attributes"]["rcpt"] for p in control["reached"] if p["on"] == "RCPT"] == [
        f"ops{i}@example.test" for i in range(5)]
    explored = runner.expanded(plan, [control])
    cell = next(c for c in explored.cells() if c.plan == "smtp.RCPT[rcpt=ops3@example.test].reply")
    assert cell.faults[0]["match"]["rcpt"] == "ops3@example.test"
    row = run_cell(explored, cell)
    assert [(f["on"], f["attributes"]["rcpt"]) for f in row["fired"]] == [("RCPT", "ops3@example.test")]
    assert row["verdict"] == "fail" and "sent 4" in row["stdout_tail"]
