"""The shared mail store across protocols: SMTP in, POP3 and IMAP out, under load and across a daemon restart."""

import concurrent.futures
import imaplib
import poplib
import re
import smtplib

import pytest
from _daemon import Daemon, ephemeral

SCENARIO = {
    "servers": {"http": {"enabled": False}, "ftp": {"enabled": False}, "dns": {"enabled": False}},
    "users": {"alice@example.test": "secret"},
}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


def message(n: int) -> bytes:
    filler = "x" * (n % 7) * 100
    return (f"From: s{n // 10}@example.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n\r\n"
            f"body {n}\r\n{filler}\r\n.starts with a dot\r\n").encode()


def imap_fetch_all(host, port, mailbox="INBOX"):
    """{uid: (flags, raw bytes)} of a mailbox, read with BODY.PEEK[] so nothing changes."""
    imap = imaplib.IMAP4(host, port, timeout=10)
    imap.login("alice@example.test", "secret")
    status, data = imap.select(mailbox, readonly=True)
    assert status == "OK", data
    _, validity = imap.response("UIDVALIDITY")
    found = {}
    _, items = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    for item in items:
        if isinstance(item, tuple):
            head = item[0].decode()
            uid = int(re.search(r"UID (\d+)", head).group(1))
            flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split())
            found[uid] = (flags, item[1])
    imap.logout()
    return found, validity


def test_200_messages_from_20_sessions_are_listed_exactly_over_pop3_and_imap(testbed, smtp_server, pop3_server,
                                                                              imap_server):
    expected = [message(n) for n in range(200)]

    def session(k: int) -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
            for n in range(k * 10, k * 10 + 10):
                smtp.sendmail(f"s{k}@example.test", ["alice@example.test"], expected[n])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        list(pool.map(session, range(20)))
    assert sorted(m.raw for m in smtp_server.wait_for(200, timeout=10)) == sorted(expected)

    pop = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    pop.user("alice@example.test")
    pop.pass_("secret")
    count, _ = pop.stat()
    assert count == 200
    retrieved = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
    uidls = pop.uidl()[1]
    pop.quit()
    assert sorted(retrieved) == sorted(expected)
    assert len(set(uidls)) == 200

    found, _ = imap_fetch_all(imap_server.host, imap_server.port)
    assert sorted(raw for _, raw in found.values()) == sorted(expected)


def test_a_maildir_survives_a_daemon_restart_with_flags_folders_and_uids(tmp_path):
    maildir = tmp_path / "maildir"
    config = tmp_path / "mail.toml"
    config.write_text(f'[mail]\nmaildir = "{maildir}"\n[users]\n"alice@example.test" = "secret"\n'
                      '[servers.http]\nenabled = false\n[servers.ftp]\nenabled = false\n'
                      '[servers.dns]\nenabled = false\n')
    raws = [message(n) for n in range(3)]

    free_ports = ephemeral("http", "https", "ftp", "dns")
    daemon = Daemon(tmp_path, "--config", str(config), *free_ports)
    try:
        smtp_host, smtp_port = daemon.urls["SMTP"].split("//")[1].rsplit(":", 1)
        imap_host, imap_port = daemon.urls["IMAP"].split("//")[1].rsplit(":", 1)
        with smtplib.SMTP(smtp_host, int(smtp_port), timeout=10) as smtp:
            for raw in raws:
                smtp.sendmail("app@example.test", ["alice@example.test"], raw)
        imap = imaplib.IMAP4(imap_host, int(imap_port), timeout=10)
        imap.login("alice@example.test", "secret")
        imap.select("INBOX")
        assert imap.store("1", "+FLAGS", r"(\Seen)")[0] == "OK"
        assert imap.store("2", "+FLAGS", r"(\Flagged \Answered)")[0] == "OK"
        assert imap.create("Projects")[0] == "OK"
        assert imap.copy("3", "Projects")[0] == "OK"
        imap.logout()
        before, validity_before = imap_fetch_all(imap_host, int(imap_port))
        archived_before, _ = imap_fetch_all(imap_host, int(imap_port), "Projects")
    finally:
        daemon.stop()

    again = Daemon(tmp_path, "--config", str(config), *free_ports)
    try:
        imap_host, imap_port = again.urls["IMAP"].split("//")[1].rsplit(":", 1)
        after, validity_after = imap_fetch_all(imap_host, int(imap_port))
        archived_after, _ = imap_fetch_all(imap_host, int(imap_port), "Projects")
    finally:
        again.stop()

    assert [raw for _, raw in after.values()] == raws
    assert after == before and validity_after == validity_before
    flags = [after[uid][0] for uid in sorted(after)]
    assert r"\Seen" in flags[0] and {r"\Flagged", r"\Answered"} <= flags[1] and r"\Flagged" not in flags[2]
    assert archived_after == archived_before and [raw for _, raw in archived_after.values()] == [raws[2]]
