"""The experiment plan: validation errors that name the file, key path and expectation; matrix expansion; explore."""

from __future__ import annotations

import pytest

from testbed.experiment import plan as plan_module
from testbed import registry
from testbed.experiment.cell import cell_scenario
from testbed.experiment.explore import PROBE, explored_plans, reached_points, single_faults
from testbed.faults.engine import glob_matches
from testbed.schema import ScenarioError

SMTP_ONLY = {"servers": {n: {"enabled": n == "smtp"} for n in ("smtp", "http", "pop3", "imap", "ftp", "dns", "echo")}}


def plan(**extra):
    data = {"scenario": SMTP_ONLY, "client": {"command": ["true"]},
            "plans": [{"name": "p", "faults": [{"server": "smtp", "on": "RCPT", "action": "reply", "code": 451},
                                               {"server": "smtp", "on": "DATA", "action": "delay", "seconds": 1.0}]}]}
    data.update(extra)
    return plan_module.from_dict(data, source="plan.toml")


def error(**extra) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        plan(**extra)
    return info.value


def test_matrix_is_control_plus_plans_times_axes_seeds_repeats():
    p = plan(axes={"delay": {"seconds": [0.1, 0.5]}, "probability": [0.5, 1.0]}, seeds=2, repeats=3)
    cells = p.cells()
    assert len(cells) == (1 + 2 * 2) * 2 * 3
    assert cells[0].id == "control/seed=1/r0" and cells[0].faults == []
    last = cells[-1]
    assert last.id == "p[delay.seconds=0.5,probability=1.0]/seed=2/r2"
    assert last.faults[1]["seconds"] == 0.5 and last.faults[0]["probability"] == 1.0
    assert "seconds" not in last.faults[0]  # delay.seconds touches only the delay rule
    assert len({c.id for c in cells}) == len(cells)


def test_seeds_list_and_per_plan_axes():
    p = plan(seeds=[7, 9], control=False,
             plans=[{"name": "slow", "axes": {"delay": {"seconds": [0.1, 0.2, 0.3]}},
                     "faults": [{"server": "smtp", "on": "connect", "action": "delay", "seconds": 1.0}]},
                    {"name": "fixed", "faults": [{"server": "smtp", "on": "message", "action": "delay", "seconds": 2.0}]}])
    ids = [c.id for c in p.cells()]
    assert len(ids) == 3 * 2 + 2 and "fixed/seed=9/r0" in ids
    assert [c.faults[0]["seconds"] for c in p.cells() if c.plan == "fixed"] == [2.0, 2.0]


@pytest.mark.parametrize("extra, path, expected", [
    ({"plans": [{"name": "p", "faults": [{"server": "smtp", "on": "RCPT", "action": "explode"}]}]},
     "plans[0].faults[0].action", "an action for smtp"),
    ({"plans": [{"name": "p", "faults": [{"server": "nope", "action": "reset"}]}]}, "plans[0].faults[0].server", "one of"),
    ({"axes": {"probability": [0.5, 2.0]}}, "axes.probability", "a number from 0 to 1"),
    ({"axes": {"throttle.bytes_per_second": [10]}}, "axes.throttle.bytes_per_second", "a rule key"),
    ({"seeds": 0}, "seeds", "a count of 1 or more"),
    ({"repeats": "two"}, "repeats", "an integer"),
    ({"client": {"command": ["x"], "callable": "m:f"}}, "client", "exactly one of"),
    ({"checks": [{"check": "retried_after", "server": "smtp"}]}, "checks[0].stage", "the retried_after check needs it"),
    ({"checks": [{"check": "sent_quit", "loudly": True}]}, "checks[0].loudly", "a parameter of sent_quit"),
    ({"checks": [{"check": "gave_up_after", "n": "3"}]}, "checks[0].n", "an integer"),
    ({"checks": [{"check": "stdout", "matches": "("}]}, "checks[0].matches", "a regular expression"),
    ({"checks": [{"check": "telepathy"}]}, "checks[0].check", "one of"),
    ({"colour": "blue"}, "colour", "a known key"),
])
def test_invalid_plans_name_file_key_and_expectation(extra, path, expected):
    e = error(**extra)
    assert e.source == "plan.toml" and e.path == path and expected in e.expected
    assert str(e).startswith(f"plan.toml: {path}: expected")


def test_scenario_errors_name_the_scenario(tmp_path):
    bad = tmp_path / "scenario.toml"
    bad.write_text('[servers.smtp]\ntls = "sometimes"\n')
    e = error(scenario=str(bad))
    assert e.source == str(bad) and e.path == "servers.smtp.tls"


def test_load_reads_toml_and_names_a_missing_file(tmp_path):
    (tmp_path / "plan.toml").write_text('seeds = 2\n[client]\ncommand = ["true"]\n[axes]\n')
    assert [c.id for c in plan_module.load(str(tmp_path / "plan.toml")).cells()] == ["control/seed=1/r0",
                                                                                      "control/seed=2/r0"]
    with pytest.raises(ScenarioError, match="an existing plan file"):
        plan_module.load(str(tmp_path / "missing.toml"))


def test_explore_reads_reached_points_and_generates_singles_then_pairs():
    events = [{"kind": "connection.open", "server": "smtp", "conn": 1},
              {"kind": "command", "server": "smtp", "conn": 1, "command": "EHLO"},
              {"kind": "command", "server": "smtp", "conn": 1, "command": "RCPT"},
              {"kind": "command", "server": "smtp", "conn": 1, "command": "XYZZY"},
              {"kind": "stored", "server": "smtp", "conn": 1}]
    points = reached_points(events, {"smtp": "smtp"})
    assert [p["on"] for p in points] == ["connect", "EHLO", "RCPT", "message"]
    plans = explored_plans(points, {"smtp": "smtp"}, budget=1000)
    names = [name for name, _ in plans]
    assert "smtp.RCPT.reply" in names and "smtp.connect.refuse" in names and "smtp.EHLO.refuse" not in names
    singles = [p for p in plans if len(p[1]) == 1]
    assert len(plans) > len(singles) and all(len(r) == 2 for _, r in plans[len(singles):])
    assert len(explored_plans(points, {"smtp": "smtp"}, budget=5)) == 5
    targets = plan().scenario.servers.targets()
    for _, rules in plans:  # every generated rule is valid
        for rule in rules:
            plan_module.build_rule(plan_module.Checker("x"), "", rule, targets)


def probe(on, conn=1, **attributes):
    return {"kind": "fault", "server": "smtp", "conn": conn, "on": on, "rule": "scenario:0", "action": "close",
            "fired": False, "attributes": attributes}


def test_explore_points_are_stages_with_attributes_and_rules_aim_at_one_point():
    who = {"helo": "client.test", "tls": False, "user": None}
    events = [{"kind": "connection.open", "server": "smtp", "conn": 1}, probe("connect", tls=False),
              {"kind": "command", "server": "smtp", "conn": 1, "command": "EHLO"}, probe("EHLO", **who),
              probe("MAIL", mail_from="r@example.test", size=120, **who),
              probe("RCPT", rcpt="ops@example.test", mail_from="r@example.test", **who),
              probe("RCPT", rcpt="a*b?@example.test", mail_from="r@example.test", **who),
              probe("RCPT", conn=2, rcpt="ops@example.test", mail_from="r@example.test", **who),
              {"kind": "command", "server": "smtp", "conn": 1, "command": "NOOP"},
              probe("message", rcpt=["ops@example.test"], mail_from="r@example.test", size=9, body="x", **who)]
    points = reached_points(events, {"smtp": "smtp"})
    assert [(p["on"], p["attributes"].get("rcpt")) for p in points] == [
        ("connect", None), ("EHLO", None), ("MAIL", None), ("RCPT", "ops@example.test"),
        ("RCPT", "a*b?@example.test"), ("NOOP", None), ("message", ["ops@example.test"])]
    assert points[2]["attributes"] == {"helo": "client.test", "mail_from": "r@example.test", "tls": False}
    assert points[5]["attributes"] == {}  # seen only as a command: no rule was asked there

    singles = dict(single_faults(points, {"smtp": "smtp"}))
    first, second = singles["smtp.RCPT[rcpt=ops@example.test].reply"], singles["smtp.RCPT[rcpt=a*b?@example.test].reply"]
    assert first["match"]["rcpt"] == "ops@example.test" and second["match"]["rcpt"] == "a[*]b[?]@example.test"
    assert glob_matches(second["match"]["rcpt"], "a*b?@example.test")
    assert not glob_matches(second["match"]["rcpt"], "axbc@example.test")
    assert "smtp.NOOP.reply" in singles and "match" not in singles["smtp.NOOP.reply"]
    assert "smtp.connect.refuse" in singles and singles["smtp.connect.refuse"]["match"] == {"tls": False}
    surface, targets = registry.fault_surfaces()["smtp"], plan().scenario.servers.targets()
    for _, rule in singles.items():  # the catalogue's where, and every rule valid
        assert rule["on"] in surface.stages_for(rule["action"])
        plan_module.build_rule(plan_module.Checker("x"), "", rule, targets)
    pairs = [rules for name, rules in explored_plans(points, {"smtp": "smtp"}, budget=10_000) if len(rules) == 2]
    assert any(r1["on"] == r2["on"] == "RCPT" for r1, r2 in pairs)  # different recipients: different points
    assert not any(r1["on"] == r2["on"] and r1.get("match") == r2.get("match") for r1, r2 in pairs)
    # The Host header names the run's ephemeral port: a later cell's would differ.
    request = dict(probe("request", method="GET", path="/a", host="127.0.0.1:40123", query={"q": "1"}), server="web")
    assert reached_points([request], {"web": "http"})[0]["attributes"] == {"method": "GET", "path": "/a"}


def test_only_an_explore_control_cell_gets_the_probe_rules():
    explore = plan(explore=True)
    control = next(c for c in explore.cells() if c.plan == "control")
    probes = cell_scenario(explore, control).faults
    assert {r.on for r in probes} == set(registry.fault_surfaces()["smtp"].stages)
    assert all(r.server == "smtp" and r.probability == 0.0 and r.name == PROBE for r in probes)
    assert control.faults == []  # not the cell's faults: results and coverage never list them
    other = next(c for c in explore.cells() if c.plan == "p")
    assert [r.to_dict() for r in cell_scenario(explore, other).faults] == [
        {"server": "smtp", "on": "RCPT", "action": "reply", "code": 451},
        {"server": "smtp", "on": "DATA", "action": "delay", "seconds": 1.0}]
    plain = plan(control=True)
    assert cell_scenario(plain, next(c for c in plain.cells() if c.plan == "control")).faults == []
