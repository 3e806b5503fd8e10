"""One cell: a fresh testbed on ephemeral ports with the cell's faults and seed, the client, the checks.

Runs in whichever process executes it (a local worker, a Dask worker, or the
command itself for replay and shrink), on the reactor of testbed.runtime.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from typing import Mapping

import attrs

from testbed import checks as checks_module
from testbed.experiment import plan as plan_module
from testbed.experiment.explore import probe_rules, reached_points
from testbed.faults.rules import build_rule
from testbed.registry import EPHEMERAL
from testbed.schema import Checker

#: Characters of the client's output kept in a result.
TAIL = 2000
#: How long to wait, after the client is done, for the servers to see its connections close.
SETTLE_SECONDS = 2.0


def ensure_reactor():
    """The global reactor, running in a background thread of this process (started once)."""
    from twisted.internet import reactor

    from testbed import runtime

    if not reactor.running:
        runtime.start_reactor_thread(reactor)
    return reactor


def cell_scenario(plan: plan_module.Plan, cell: plan_module.Cell):
    """The plan's scenario with every listener on an ephemeral port, the cell's seed and faults.

    An explore plan's control cell also gets never-firing probe rules, so its
    journal shows the attributes of every point reached; they are not the cell's
    ``faults``, so results and coverage never list them.
    """
    servers = {}
    for name, entry in plan.scenario.servers.items():
        changes = {l.key: EPHEMERAL for l in entry.spec.listeners if getattr(entry.config, l.key, "")}
        servers[name] = attrs.evolve(entry, config=attrs.evolve(entry.config, **changes))
    scenario_servers = type(plan.scenario.servers)(servers)
    targets = scenario_servers.targets()
    checker = Checker(f"{plan.source}: cell {cell.id}")
    faults = list(cell.faults)
    if plan.explore and cell.plan == "control":
        faults += probe_rules({n: t for n, t in targets.items() if scenario_servers[n].config.enabled})
    rules = [build_rule(checker, f"faults[{i}]", rule, targets) for i, rule in enumerate(faults)]
    return attrs.evolve(plan.scenario, servers=scenario_servers, seed=cell.seed, faults=rules)


def client_env(testbed, cell: plan_module.Cell) -> dict[str, str]:
    """TESTBED_<SERVER>_HOST/_PORT/_URL (and _TLS_PORT/_TLS_URL), TESTBED_CA, TESTBED_SEED, TESTBED_CELL."""
    env = {"TESTBED_CA": testbed.ca_path, "TESTBED_SEED": str(cell.seed), "TESTBED_CELL": cell.id}
    for name, server in testbed.servers.items():
        prefix = "TESTBED_" + re.sub(r"\W", "_", name).upper()
        for listener in server.listeners:
            sub = prefix + ("_TLS" if listener.tls else "")
            env[f"{sub}_HOST"], env[f"{sub}_PORT"], env[f"{sub}_URL"] = listener.host, str(listener.number), listener.url()
    return env


def _run_command(plan, cell, testbed) -> dict:
    client = plan.client
    env = {**os.environ, **client.env, **client_env(testbed, cell)}
    try:
        done = subprocess.run(client.command, env=env, cwd=plan.path(client.cwd or "."), capture_output=True,
                              timeout=client.timeout, text=True, errors="replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"exit_code": None, "stdout": out, "stderr": err, "timed_out": True}
    except OSError as e:
        return {"exit_code": None, "stdout": "", "stderr": f"cannot run {client.command[0]!r}: {e}",
                "client_missing": True}
    return {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def _run_callable(plan, cell, testbed) -> dict:
    module_name, _, function = plan.client.callable.partition(":")
    folder = plan.path(plan.client.cwd or ".")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        fn = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as e:
        return {"exit_code": None, "stdout": "", "stderr": f"cannot import {plan.client.callable}: {e}",
                "client_missing": True}
    out, err, outcome = io.StringIO(), io.StringIO(), {}

    def call():
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                value = fn(testbed)
            outcome["exit_code"] = value if isinstance(value, int) and not isinstance(value, bool) else (
                1 if value is False else 0)
        except BaseException:
            err.write(traceback.format_exc())
            outcome["exit_code"] = 1

    thread = threading.Thread(target=call, name=f"client {cell.id}", daemon=True)
    thread.start()
    thread.join(plan.client.timeout)
    if thread.is_alive():
        return {"exit_code": None, "stdout": out.getvalue(), "stderr": err.getvalue(), "timed_out": True}
    return {"exit_code": outcome["exit_code"], "stdout": out.getvalue(), "stderr": err.getvalue()}


def judge(plan: plan_module.Plan, events: list[dict], client: dict, duration: float) -> list[dict]:
    """Every check's result as {"check", "ok", "detail"}."""
    results = []
    for spec in plan.checks:
        label = spec.label()
        if spec.check == "exit":
            code = client.get("exit_code")
            ok, detail = code == spec.params["status"], f"exit status {code}, expected {spec.params['status']}"
            last = (client.get("stdout", "").strip().splitlines() or [""])[-1]
            if not ok and last:
                detail += f"; it said: {last[:200]}"
        elif spec.check in ("stdout", "stderr"):
            text = client.get(spec.check, "")
            ok, detail = True, f"{spec.check} as expected"
            if "matches" in spec.params and not re.search(spec.params["matches"], text):
                ok, detail = False, f"{spec.check} does not match {spec.params['matches']!r}"
            if "absent" in spec.params and (m := re.search(spec.params["absent"], text)):
                ok, detail = False, f"{spec.check} has {m.group(0)!r}"
        elif spec.check == "duration":
            ok, detail = duration <= spec.params["max"], f"took {duration:.2f}s, at most {spec.params['max']:g}s"
        else:
            verdict = checks_module.CHECKS[spec.check](events, **spec.params)
            ok, detail = verdict.ok, verdict.detail
        results.append({"check": label, "ok": bool(ok), "detail": detail})
    return results


def fired_faults(events: list[dict]) -> list[dict]:
    """The fault decisions that fired, in order: what replay compares and shrink starts from."""
    return [{k: e.get(k) for k in ("server", "conn", "on", "rule", "action", "detail", "attributes")}
            for e in events if e.get("kind") == "fault" and e.get("fired")]


def run_cell(plan: plan_module.Plan | Mapping, cell: plan_module.Cell | Mapping, out_dir: str | None = None,
             keep_journal: bool = False) -> dict:
    """Run one cell; the result row (``results.jsonl``), with the journal written when it did not pass."""
    from testbed.harness import Testbed
    from testbed.journal import jsonable
    from testbed import runtime

    if isinstance(plan, Mapping):
        plan = plan_module.from_dict(plan["raw"], source=plan["source"], base_dir=plan["base_dir"])
    if isinstance(cell, Mapping):
        cell = plan_module.Cell.from_dict(cell)
    reactor = ensure_reactor()
    testbed = Testbed(cell_scenario(plan, cell), reactor=reactor)
    runtime.call(reactor, testbed.start)
    started = time.monotonic()
    try:
        client = (_run_command if plan.client.command else _run_callable)(plan, cell, testbed)
        duration = time.monotonic() - started
        journal = testbed.journal
        journal.wait(lambda: len(journal.query("connection.close")) >= len(journal.query("connection.open")),
                     SETTLE_SECONDS)
        events = [jsonable(e) for e in journal.events]
    finally:
        runtime.call(reactor, testbed.stop)
    results = judge(plan, events, client, duration)
    if client.get("client_missing"):
        verdict = "error"
    elif client.get("timed_out"):
        verdict = "timeout"
    else:
        verdict = "pass" if all(r["ok"] for r in results) else "fail"
    row = {**cell.to_dict(), "verdict": verdict, "checks": results, "fired": fired_faults(events),
           "duration": round(duration, 3), "exit_code": client.get("exit_code"),
           "stdout_tail": client.get("stdout", "")[-TAIL:], "stderr_tail": client.get("stderr", "")[-TAIL:],
           "client_missing": bool(client.get("client_missing")),
           "reached": reached_points(events, {n: e.protocol for n, e in plan.scenario.servers.items()}),
           "journal": None}
    if out_dir is not None and (keep_journal or verdict != "pass"):
        from testbed.journal import to_json

        name = re.sub(r"[^\w.=,-]+", "_", cell.id) + ".jsonl"
        os.makedirs(os.path.join(out_dir, "journals"), exist_ok=True)
        with open(os.path.join(out_dir, "journals", name), "w", encoding="utf-8") as f:
            f.writelines(to_json(e) + "\n" for e in events)
        row["journal"] = f"journals/{name}"
    return row


def plan_payload(plan: plan_module.Plan) -> dict:
    """What a worker needs to rebuild the plan: plain data, picklable and JSON-ready."""
    return {"raw": plan.raw, "source": plan.source, "base_dir": plan.base_dir}
