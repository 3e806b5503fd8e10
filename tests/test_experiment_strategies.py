"""testbed.strategies.fault_plans: every drawn plan validates, honours the filters, and runs on a testbed."""

from __future__ import annotations

import smtplib

from hypothesis import HealthCheck, given, settings

from testbed.config import Servers, rule_from_kwargs
from testbed.strategies import fault_plans

TARGETS = Servers().targets()


@given(fault_plans(servers=["smtp", "http", "dns"], max_size=5))
@settings(max_examples=60, deadline=None)
def test_every_drawn_rule_is_a_valid_fault_rule(rules):
    for rule in rules:
        built = rule_from_kwargs("strategy", TARGETS, **rule)
        assert built.server == rule["server"] and built.on == rule["on"]


@given(fault_plans(servers=["smtp"], stages=["RCPT", "DATA"], actions=["reply", "reset", "delay"], min_size=1))
@settings(max_examples=40, deadline=None)
def test_filters_are_honoured(rules):
    assert rules and all(r["on"] in ("RCPT", "DATA") and r["action"] in ("reply", "reset", "delay") for r in rules)


@given(rules=fault_plans(servers=["smtp"], stages=["RCPT"], actions=["reply"], max_size=2))
@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_documented_property_a_retrying_sender_never_duplicates(testbed, smtp_server, rules):
    """The worked example of docs/experiments.md: at most one copy, whatever RCPT replies."""
    testbed.reset()
    for rule in rules:
        smtp_server.faults.add(**rule)
    for _ in range(7):  # retry until it goes through; each rule fires at most 3 times
        try:
            with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=1) as client:
                client.sendmail("r@example.test", ["ops@example.test"], "Subject: r\r\n\r\nbody\r\n")
            break
        except smtplib.SMTPException:
            continue
    assert len(smtp_server.messages) == 1
