"""Bounded memory: every record list under ``[journal] max_events``, a default bound, and a client that never reads."""

import ftplib
import io
import poplib
import select
import smtplib
import socket
import time
import urllib.request

import dns.message
import dns.query
import pytest

from testbed import config
from testbed.faults.udp import FaultingDatagramProtocol
from testbed.journal import CLOSE, FLOW, Journal, Records
from testbed.testing import engine as new_engine

LIMIT = 3


@pytest.fixture
def testbed_scenario():
    return {"journal": {"max_events": LIMIT}, "users": {"alice@example.test": "secret"},
            "servers": {"imap": {"enabled": False}, "ftp": {"files": {"incoming/": ""}, "anonymous": False},
                        "http": {"routes": [{"path": "/*", "method": "*", "body": "ok"}]},
                        "dns": {"records": {"example.test": {"A": "192.0.2.1"}}}}}


def test_a_scenario_without_max_events_is_bounded_and_zero_means_unbounded():
    assert config.from_dict({}).journal.max_events == 200_000
    assert config.from_dict({"journal": {"max_events": 0}}).journal.max_events == 0
    assert Journal(max_events=0).records().limit == 0
    unbounded = Records(0)
    unbounded.extend(range(300_000))
    assert len(unbounded) == 300_000


def test_records_keep_the_newest_and_compare_like_lists():
    records = Records(3)
    records.extend(range(10))
    assert records == [7, 8, 9] and list(records) == [7, 8, 9]
    records.clear()
    assert records == [] and records.limit == 3


def test_every_record_list_keeps_the_newest_max_events(testbed, http_server, dns_server, smtp_server, pop3_server,
                                                        ftp_server):
    for n in range(LIMIT + 2):
        urllib.request.urlopen(f"{http_server.url}/r{n}", timeout=10).read()
        dns.query.udp(dns.message.make_query(f"q{n}.example.test", "A"), dns_server.host, port=dns_server.port,
                      timeout=5)
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
            smtp.sendmail("app@example.test", ["alice@example.test"], f"Subject: {n}\r\n\r\nbody\r\n".encode())
        pop = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        pop.user("alice@example.test")
        pop.pass_("secret")
        pop.retr(1)
        pop.quit()
        ftp = ftplib.FTP()
        ftp.connect(ftp_server.host, ftp_server.port, timeout=10)
        ftp.login("alice@example.test", "secret")
        ftp.storbinary(f"STOR incoming/f{n}", io.BytesIO(b"x" * n))
        ftp.quit()
    newest = [f"r{n}" for n in range(2, LIMIT + 2)]
    assert [r.path.lstrip("/") for r in http_server.requests] == newest
    assert [q.name for q in dns_server.queries] == [f"q{n}.example.test" for n in range(2, LIMIT + 2)]
    assert [m.message["Subject"] for m in smtp_server.wait_for(LIMIT)] == ["2", "3", "4"]
    assert len(pop3_server.wait_for(LIMIT, kind="quit")) == LIMIT and len(pop3_server.retrievals) == LIMIT
    assert [u.path for u in ftp_server.wait_for(LIMIT)] == [f"incoming/f{n}" for n in range(2, LIMIT + 2)]
    assert len(testbed.journal) == LIMIT
    # The mail store itself keeps what clients stored: bounded only by them.
    assert len(testbed.mail.mailbox("alice@example.test", "INBOX").messages) == LIMIT + 2


def test_the_udp_peer_table_is_bounded_too():
    journal = Journal(max_events=10)
    wrapper = FaultingDatagramProtocol(None, "dns", new_engine(0, journal), journal, None)
    numbers = [wrapper.connection_number(("127.0.0.1", port)) for port in range(1000, 1025)]
    assert numbers == list(range(1, 26))
    assert len(wrapper.peers) <= 10
    assert wrapper.connection_number(("127.0.0.1", 1024)) == 25  # a recent peer keeps its number


def _send_until_blocked(sock, line: bytes, cap: int) -> int:
    """Send ``line`` over and over until the socket has not been writable for a second, or ``cap`` bytes went."""
    chunk = line * (65536 // len(line))
    sent = 0
    while sent < cap:
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            return sent
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            continue
    return sent


@pytest.mark.parametrize("testbed_scenario", [{"servers": {"imap": {"enabled": False}}}])
def test_a_client_that_sends_and_never_reads_is_no_longer_read(testbed, smtp_server):
    cap = 32 * 1024 * 1024
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies pile up on the server's side
    sock.connect((smtp_server.host, smtp_server.port))
    sock.setblocking(False)
    try:
        sent = _send_until_blocked(sock, b"EHLO client.example.test\r\n", cap)
        assert sent < cap, "the server read all it was sent, however many replies it had to hold"
        flows = testbed.journal.wait(lambda: testbed.journal.query(FLOW, server="smtp"), 5)
        paused = flows[-1]
        assert paused["reading"] is False  # it stopped reading the client, and still does
        # EHLO's reply is ten times its size: what the server holds is bounded by what it read.
        assert paused["bytes_up"] < sent
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as other:
            assert other.noop()[0] == 250  # the rest of the server goes on

        def resumed():
            return testbed.journal.query(FLOW, server="smtp", conn=paused["conn"], reading=True, since=paused["seq"])

        deadline = time.monotonic() + 30
        while not resumed():  # once the client reads, the server reads again
            assert time.monotonic() < deadline, "the server never read again after the client drained"
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                sock.recv(1 << 20)
    finally:
        sock.close()
    closed = testbed.journal.wait(lambda: testbed.journal.query(CLOSE, server="smtp", conn=paused["conn"]), 5)
    assert closed


def test_a_large_request_body_is_spooled_to_a_file_and_still_reads_back(testbed, http_server):
    import hashlib

    from testbed.servers.http.server import BODY_IN_MEMORY

    big = bytes(range(256)) * (BODY_IN_MEMORY // 256 + 4096)
    small = b"small body"
    for body in (big, small):
        request = urllib.request.Request(f"{http_server.url}/upload", data=body, method="POST")
        urllib.request.urlopen(request, timeout=10).read()
    spooled, kept = http_server.wait_for(2)
    assert spooled.spooled and not kept.spooled
    assert spooled.size == len(big) and spooled.sha256 == hashlib.sha256(big).hexdigest()
    assert spooled.body == big and kept.body == small
    described = spooled.to_dict()
    assert (described["body"], described["size"], described["spooled"]) == (None, len(big), True)
    spool = spooled.content.file
    assert not spool.closed
    testbed.reset()
    assert spool.closed and http_server.requests == []
