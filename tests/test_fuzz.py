"""A seeded, bounded fuzz run per protocol over loopback: mutated sessions, then a real client must still get in.

Each input goes on its own connection (DNS also as a datagram); the client then half-closes and reads until
the server closes, so every input has been handled before the next. Nothing may be logged as an error.
"""

from __future__ import annotations

import ftplib
import imaplib
import pathlib
import poplib
import random
import smtplib
import socket
import urllib.request

import dns.message
import dns.query
import pytest

from _logs import describe, errors_logged

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEED = 20261128
#: Inputs per protocol: enough to reach every shape below, few enough for CI.
INPUTS = 250
USER, PASSWORD = "alice@example.test", "secret"

SESSIONS = {
    "smtp": [b"EHLO fuzz.test", b"MAIL FROM:<a@b.test> SIZE=10", b"RCPT TO:<alice@example.test>", b"DATA",
             b"Subject: x\r\n\r\nbody\r\n.", b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=", b"AUTH LOGIN",
             b"STARTTLS", b"VRFY alice", b"RSET", b"NOOP", b"QUIT"],
    "pop3": [b"CAPA", b"USER alice@example.test", b"PASS secret", b"APOP alice@example.test 0123", b"AUTH PLAIN",
             b"STAT", b"LIST 1", b"UIDL", b"RETR 1", b"TOP 1 0", b"DELE 1", b"RSET", b"STLS", b"NOOP", b"QUIT"],
    "imap": [b"a1 CAPABILITY", b"a2 LOGIN alice@example.test secret", b"a3 SELECT INBOX", b"a4 FETCH 1:* (FLAGS BODY[])",
             b"a5 SEARCH NOT OR SEEN UNSEEN", b"a0 SEARCH ", b"a6 STORE 1 +FLAGS (\\Seen)", b"a7 APPEND INBOX {5}\r\nhello",
             b"a8 LIST \"\" *", b"a9 STATUS INBOX (MESSAGES)", b"b1 UID FETCH 1 BODY.PEEK[HEADER]", b"b2 IDLE\r\nDONE",
             b"b3 CREATE &AGE-", b"b4 EXPUNGE", b"b5 LOGOUT"],
    "ftp": [b"USER anonymous", b"PASS fuzz@", b"SYST", b"FEAT", b"PWD", b"CWD /pub", b"CDUP", b"TYPE I", b"PASV",
            b"EPSV", b"LIST", b"SIZE readme.txt", b"MDTM readme.txt", b"REST 10", b"RETR readme.txt", b"MLST /",
            b"AUTH TLS", b"OPTS UTF8 ON", b"NOOP", b"QUIT"],
    "http": [b"GET / HTTP/1.1\r\nHost: a", b"GET /index.html HTTP/1.1\r\nHost: a\r\nRange: bytes=0-3",
             b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
             b"POST /api HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
             b"HEAD /docs/ HTTP/1.0", b"OPTIONS * HTTP/1.1\r\nHost: a", b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: a"],
}
TOKENS = [b"NIL", b"{-1}", b"{1_0}", b"{99999999999}", b"%00", b"../", b"/" * 300, b"\xff\xfe", b"\x00", b"*", b"()",
          b"\"", b"\\", b"&ZZZ-", b"NOT " * 2000, b"(" * 2000, b"SIZE=-1", b"=" * 40, b"99999999999999999999999",
          b"\r", b"\n", b"\r\n.\r\n", b"a/" * 2000, b"Transfer-Encoding: identity", b"Range: bytes=,", b":"]


#: Lines that get a session past login (and into a mailbox), sent unmutated before half the sessions.
LOGINS = {
    "smtp": [b"EHLO fuzz.test"],
    "pop3": [b"USER alice@example.test", b"PASS secret"],
    "imap": [b"a2 LOGIN alice@example.test secret", b"a3 SELECT INBOX"],
    "ftp": [b"USER anonymous", b"PASS fuzz@"],
    "http": [],
}


def mutate(rng: random.Random, name: str) -> bytes:
    """A session made of the protocol's own lines with bytes flipped, tokens spliced in, lines cut or repeated."""
    lines = SESSIONS[name]
    picked = [rng.choice(lines) for _ in range(rng.randrange(1, 8))]
    out = list(LOGINS[name]) if rng.random() < 0.5 else []
    for line in picked:
        line = bytearray(line)
        for _ in range(rng.randrange(4)):
            shape = rng.randrange(5)
            position = rng.randrange(len(line) + 1)
            if shape == 0 and line:
                line[min(position, len(line) - 1)] = rng.randrange(256)
            elif shape == 1:
                line[position:position] = rng.choice(TOKENS)
            elif shape == 2:
                del line[position:]
            elif shape == 3:
                line[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
            else:
                line[position:position] = b"x" * rng.choice((100, 9000, 70000))
        out.append(bytes(line))
    ending = rng.choice([b"\r\n", b"\r\n", b"\n", b"\r\n\r\n", b""])
    return ending.join(out) + ending


def deliver(host: str, port: int, data: bytes) -> None:
    """Send ``data``, half-close, and read until the server closes: it has handled the input by then."""
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (ConnectionError, OSError) as e:
            if isinstance(e, TimeoutError):
                raise
            return  # the server refused the input and closed first
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass


@pytest.fixture
def testbed_scenario():
    return {
        "seed": 3,
        "users": {USER: PASSWORD},
        "servers": {
            "http": {"static": str(ROOT / "fixtures" / "site"), "routes": [{"path": "/api", "method": "POST"}]},
            "ftp": {"files": {"pub/readme.txt": "hello\n"}},
            "dns": {"zone_files": [str(ROOT / "fixtures" / "zones" / "example.test.zone")]},
        },
    }


def still_answers(name: str, server) -> None:
    """A real client session that only a working server completes."""
    if name == "smtp":
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.sendmail("fuzz@example.test", [USER], b"Subject: after the fuzz\r\n\r\nstill here\r\n")
    elif name == "pop3":
        pop = poplib.POP3(server.host, server.port, timeout=10)
        pop.user(USER)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] >= 0
        pop.quit()
    elif name == "imap":
        with imaplib.IMAP4(server.host, server.port, timeout=10) as imap:
            imap.login(USER, PASSWORD)
            assert imap.select("INBOX")[0] == "OK"
    elif name == "ftp":
        with ftplib.FTP() as ftp:
            ftp.connect(server.host, server.port, timeout=10)
            ftp.login()
            assert "readme.txt" in ftp.nlst("pub")
    elif name == "http":
        with urllib.request.urlopen(f"{server.url}/index.html", timeout=10) as response:
            assert response.status == 200
    else:
        for send in (dns.query.udp, dns.query.tcp):
            answer = send(dns.message.make_query("www.example.test", "A"), server.host, port=server.port, timeout=5)
            assert answer.answer


@pytest.mark.parametrize("name", ["smtp", "pop3", "imap", "ftp", "http"])
def test_a_stream_server_survives_mutated_sessions(testbed, name):
    server = testbed[name]
    rng = random.Random(f"{SEED}-{name}")
    with errors_logged() as logged:
        for _ in range(INPUTS):
            deliver(server.host, server.port, mutate(rng, name))
        still_answers(name, server)
    assert [describe(e) for e in logged] == []


def dns_inputs(rng: random.Random):
    """Queries with bytes flipped, cut short, lengthened or with header counts that lie."""
    names = ["www.example.test", "example.test", "nx.example.test", "a" * 63 + ".test", "."]
    types = ["A", "AAAA", "MX", "TXT", "SOA", "ANY", "AXFR", "PTR", "NS", "CNAME"]
    for _ in range(INPUTS):
        wire = bytearray(dns.message.make_query(rng.choice(names), rng.choice(types),
                                                use_edns=rng.random() < 0.5).to_wire())
        for _ in range(rng.randrange(1, 4)):
            if not wire:
                break
            position = rng.randrange(len(wire))
            shape = rng.randrange(4)
            if shape == 0:
                wire[position] = rng.randrange(256)
            elif shape == 1:
                del wire[position:]
            elif shape == 2:
                wire[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            else:
                wire[4:12] = bytes(rng.randrange(256) for _ in range(8))  # the section counts
        yield bytes(wire)


def test_dns_survives_malformed_messages_over_udp_and_tcp(testbed):
    server = testbed["dns"]
    rng = random.Random(f"{SEED}-dns")
    with errors_logged() as logged:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for wire in dns_inputs(rng):
                udp.sendto(wire, (server.host, server.port))
                # TCP, length-prefixed, sometimes with a prefix that lies.
                prefix = len(wire) if rng.random() < 0.8 else rng.randrange(65536)
                deliver(server.host, server.port, prefix.to_bytes(2, "big") + wire)
        still_answers("dns", server)
    assert [describe(e) for e in logged] == []
