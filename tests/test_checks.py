"""The journal checks in testbed.checks, over journals recorded from real clients and small built ones."""

from __future__ import annotations

import json
import pathlib
import smtplib
import ssl

import pytest

from testbed import checks

SCENARIO = {
    "seed": 11,
    "servers": {"smtp": {"enabled": True, "tls": "starttls"}, "http": {"enabled": False}},
    "users": {"alice@example.test": "secret"},
}
MESSAGE = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: report\r\n\r\nAll fine.\r\n"
DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def testbed_scenario():
    return SCENARIO


def send(server, cafile, tls=True, quit=True):
    client = smtplib.SMTP(server.host, server.port, timeout=10)
    client.ehlo()
    if tls:
        client.starttls(context=ssl.create_default_context(cafile=cafile))
        client.ehlo()
    client.login("alice@example.test", "secret")
    try:
        client.sendmail("a@example.test", ["alice@example.test"], MESSAGE)
    except smtplib.SMTPException:
        pass
    if quit:
        client.quit()
    else:
        client.close()


def settled(testbed, conns):
    """The journal once the server saw every connection close."""
    testbed.journal.wait(lambda: len(testbed.journal.query("connection.close")) >= conns, 5)
    return testbed.journal.events


def test_a_careful_session_passes_every_smtp_check(testbed, smtp_server):
    send(smtp_server, testbed.ca_path)
    events = settled(testbed, 1)
    assert checks.stored_exactly_once(events)
    assert checks.sent_quit(events)
    assert checks.starttls_before_auth(events)
    assert checks.max_connections(events, 1)
    assert checks.gave_up_after(events, 1)
    assert checks.no_request_after(events, "smtp", "5xx")


def test_a_resent_message_a_clear_text_login_and_no_quit_fail(testbed, smtp_server):
    send(smtp_server, testbed.ca_path, tls=False, quit=False)
    send(smtp_server, testbed.ca_path, tls=False, quit=False)
    events = settled(testbed, 2)
    verdict = checks.stored_exactly_once(events)
    assert not verdict and "stored 2 times" in verdict.detail
    assert "AUTH in clear text" in checks.starttls_before_auth(events).detail
    assert not checks.sent_quit(events)
    assert not checks.gave_up_after(events, 1)
    assert checks.gave_up_after(events, 2)


def test_retried_after_a_451_at_rcpt(testbed, smtp_server):
    smtp_server.faults.add(on="RCPT", action="reply", code=451, times=1)
    send(smtp_server, testbed.ca_path)
    once = settled(testbed, 1)
    assert not checks.retried_after(once, "smtp", "RCPT", 451, within=5)
    send(smtp_server, testbed.ca_path)
    events = settled(testbed, 2)
    assert checks.retried_after(events, "smtp", "RCPT", 451, within=5)
    assert checks.sent_quit(events)
    assert checks.stored_exactly_once(events)


def test_recorded_journal_from_disk():
    """A journal recorded with smtplib (a 451 at RCPT, then a successful retry), as JSON Lines."""
    events = [json.loads(line) for line in (DATA / "smtp-retry.jsonl").read_text().splitlines()]
    assert checks.retried_after(events, "smtp", "RCPT", 451, within=5)
    assert not checks.retried_after(events, "smtp", "RCPT", 451, within=0.0)
    assert checks.stored_exactly_once(events)
    assert checks.starttls_before_auth(events)
    assert not checks.no_request_after(events, "smtp", 451)
    assert not checks.no_request_after(events, "smtp", 451, command="QUIT")
    assert checks.no_request_after(events, "smtp", 550)


def ev(seq, t, kind, conn=1, server="s", **fields):
    return {"seq": seq, "t": t, "kind": kind, "server": server, "conn": conn, **fields}


def test_max_connections_counts_overlap_not_total():
    events = [ev(1, 0, "connection.open", 1), ev(2, 1, "connection.open", 2), ev(3, 2, "connection.close", 1),
              ev(4, 3, "connection.close", 2), ev(5, 4, "connection.open", 3)]
    assert checks.max_connections(events, 2)
    assert not checks.max_connections(events, 1)
    assert checks.gave_up_after(events, 3) and not checks.gave_up_after(events, 2)


def test_honoured_retry_after():
    fault = ev(2, 10.0, "fault", server="http", fired=True, action="reply",
               detail={"status": 503, "headers": {"Retry-After": "2"}})
    early = [ev(1, 9.0, "command", server="http", command="request"), fault,
             ev(3, 10.5, "command", server="http", command="request")]
    late = early[:2] + [ev(3, 12.5, "command", server="http", command="request")]
    verdict = checks.honoured_retry_after(early)
    assert not verdict and "Retry-After said 2s" in verdict.detail
    assert checks.honoured_retry_after(late)
    assert checks.honoured_retry_after(early[:1]).detail == "no Retry-After was sent"


def test_resumed_transfer():
    cut = ev(3, 1, "fault", 1, server="ftp", fired=True, action="reset", detail={})
    first = [ev(1, 0, "command", 1, server="ftp", command="RETR", arg="big.bin"), cut]
    resumed = first + [ev(4, 2, "command", 2, server="ftp", command="REST", arg="4096"),
                       ev(5, 3, "command", 2, server="ftp", command="RETR", arg="big.bin")]
    restarted = first + [ev(4, 2, "command", 2, server="ftp", command="RETR", arg="big.bin")]
    assert checks.resumed_transfer(resumed)
    verdict = checks.resumed_transfer(restarted)
    assert not verdict and "from byte 0" in verdict.detail


def test_verdicts_are_plain_data():
    verdict = checks.max_connections([], 1)
    assert verdict.to_dict() == {"check": "max_connections", "ok": True, "detail": verdict.detail}
    assert set(checks.CHECKS) == {"stored_exactly_once", "retried_after", "gave_up_after", "sent_quit",
                                  "starttls_before_auth", "no_request_after", "max_connections",
                                  "honoured_retry_after", "resumed_transfer"}
