"""Shrinking: ddmin on its own, deterministic rules from fired faults, and the planted bug shrunk to its two faults."""

from __future__ import annotations

import pathlib
import tomllib

from testbed.experiment import plan as plan_module
from testbed.experiment.cell import run_cell
from testbed.experiment.shrink import ddmin, deterministic_rules, shrink, shrink_parameters

HERE = pathlib.Path(__file__).parent
SMTP_ONLY = {"servers": {n: {"enabled": n == "smtp"} for n in ("smtp", "http", "pop3", "imap", "ftp", "dns", "echo")}}


def test_ddmin_finds_the_two_culprits_among_many():
    items = list(range(20))
    calls = []

    def fails(subset):
        calls.append(subset)
        return 3 in subset and 17 in subset

    assert ddmin(items, fails) == [3, 17]
    assert len(calls) < 60
    assert ddmin(items, lambda s: 5 in s) == [5]


def test_parameters_shrink_to_the_mildest_that_still_fails():
    rules = [{"server": "smtp", "on": "DATA", "action": "delay", "seconds": 8.0, "times": 4}]
    fails = lambda rs: rs[0]["seconds"] >= 3.0 and rs[0]["times"] >= 1  # noqa: E731
    assert shrink_parameters(rules, fails) == [{"server": "smtp", "on": "DATA", "action": "delay",
                                                "seconds": 4.0, "times": 1}]


def test_fired_decisions_become_rules_keyed_on_stage_and_attributes():
    fired = [{"server": "smtp", "conn": c, "on": "RCPT", "rule": "scenario:0", "action": "reply",
              "detail": {"server": "smtp", "on": "RCPT", "action": "reply", "code": 451},
              "attributes": {"rcpt": "a*b@x.test", "helo": "[127.0.0.1]", "size": 12, "user": None}}
             for c in (1, 3)]
    assert deterministic_rules(fired, {"smtp": "smtp"}) == [
        {"server": "smtp", "on": "RCPT", "action": "reply", "code": 451, "times": 2,
         "match": {"helo": "[[]127.0.0.1]", "rcpt": "a[*]b@x.test"}}]


def twenty_rules() -> list[dict]:
    """The two culprits hidden among 18 rules: harmless delays that fire, and rules the client never reaches."""
    harmless = [{"server": "smtp", "on": stage, "action": "delay", "seconds": 0.01} for stage in ("connect", "EHLO", "MAIL")]
    harmless += [{"server": "smtp", "on": "RCPT", "action": "reply", "code": 550, "match": {"rcpt": "nobody@*"}},
                 {"server": "smtp", "on": "message", "action": "delay", "seconds": 0.01},
                 {"server": "smtp", "on": "QUIT", "action": "delay", "seconds": 0.01},
                 {"server": "smtp", "on": "connect", "action": "throttle", "bytes_per_second": 1_000_000}]
    harmless += [{"server": "smtp", "on": stage, "action": "reply", "code": 451} for stage in ("NOOP", "VRFY", "HELO")]
    harmless += [{"server": "smtp", "on": stage, "action": "reset"} for stage in ("AUTH", "STARTTLS", "RSET")]
    harmless += [{"server": "smtp", "on": "MAIL", "action": "reply", "code": 452, "match": {"mail_from": "x@*"}},
                 {"server": "smtp", "on": "EHLO", "action": "reply", "code": 421, "match": {"helo": "never"}},
                 {"server": "smtp", "on": "DATA", "action": "reply", "code": 554, "match": {"rcpt": "ghost@*"}},
                 {"server": "smtp", "on": "RCPT", "action": "delay", "seconds": 0.01},
                 {"server": "smtp", "on": "VRFY", "action": "silence"}]
    culprits = [{"server": "smtp", "on": "RCPT", "action": "reply", "code": 451, "times": 1},
                {"server": "smtp", "on": "DATA", "action": "reset", "times": 1}]
    rules = harmless[:9] + culprits[:1] + harmless[9:] + culprits[1:]
    assert len(rules) == 20
    return rules


def test_planted_bug_shrinks_to_exactly_the_451_at_rcpt_and_the_reset_in_data(tmp_path):
    plan = plan_module.from_dict({"scenario": SMTP_ONLY, "client": {"callable": "experiment_clients:planted"},
                                  "plans": [{"name": "twenty", "faults": twenty_rules()}], "seeds": [5]},
                                 source="planted", base_dir=str(HERE))
    cell = next(c for c in plan.cells() if c.plan == "twenty")
    row = run_cell(plan, cell)
    assert row["verdict"] == "fail" and len({f["rule"] for f in row["fired"]}) > 2
    rules, path = shrink(plan, row, str(tmp_path))
    assert sorted((r["on"], r["action"]) for r in rules) == [("DATA", "reset"), ("RCPT", "reply")]
    assert next(r for r in rules if r["action"] == "reply")["code"] == 451
    minimal = plan_module.load(path)
    assert [c.id for c in minimal.cells()] == ["minimal/seed=5/r0"]
    with open(path, "rb") as f:
        assert tomllib.load(f)["plans"][0]["faults"] == rules
    assert run_cell(minimal, minimal.cells()[0])["verdict"] == "fail"
