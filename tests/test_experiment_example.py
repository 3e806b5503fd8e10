"""End to end: examples/mail-retry through the console script: the careful client passes, the naive one fails readably."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tomllib

import tomli_w

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "mail-retry"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "experiment", "run", *args], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_careful_client_passes_the_whole_plan_with_two_jobs(tmp_path):
    done = run(str(EXAMPLE / "plan.toml"), "--jobs", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    plans = {r["plan"] for r in rows}
    assert plans == {"control", "greeting-421", "rcpt-451", "rcpt-451-sometimes", "reset-after-dot",
                     "silence-after-dot", "slow-link", "throttled"}
    assert len(rows) == 9 * 3 * 2 and {r["seed"] for r in rows} == {1, 2, 3}
    fired = {r["plan"] for r in rows if r["fired"]}
    assert fired == plans - {"control"}  # every plan's faults reached the client
    assert (tmp_path / "report.html").exists() and (tmp_path / "junit.xml").exists()


def test_the_naive_client_gives_up_and_duplicates(tmp_path):
    with open(EXAMPLE / "plan.toml", "rb") as f:
        plan = tomllib.load(f)
    plan.update(seeds=[1], repeats=1, scenario=str(EXAMPLE / "scenario.toml"))
    plan["client"] = {**plan["client"], "command": ["python3", "naive.py"], "cwd": str(EXAMPLE)}
    (tmp_path / "naive.toml").write_bytes(tomli_w.dumps(plan).encode())
    done = run(str(tmp_path / "naive.toml"), "--jobs", "2", "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    findings = done.stdout.split("Findings:")[1]
    assert "greeting-421/seed=1/r0: exit status 1, expected 0; it said: giving up: (421" in findings
    assert "stored_exactly_once() (stored N times): failed in 2 cell(s)" in findings
    assert "reset-after-dot/seed=1/r0: stored 2 times" in findings
