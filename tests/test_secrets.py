"""Secrets: no password or SASL response of any auth method of any protocol stays in the journal or its JSONL file."""

import base64
import ftplib
import imaplib
import poplib
import smtplib
import socket

import pytest

from testbed.journal import to_json

USER = "alice@example.test"
PASSWORD = "Tr0ub4dor&3 horse"  # a space and a quote-worthy character: quoted and literal forms differ


@pytest.fixture
def testbed_scenario():
    return {"servers": {"http": {"enabled": False}, "dns": {"enabled": False}, "ftp": {"anonymous": False}},
            "users": {USER: PASSWORD}}


def forms(user: str, password: str) -> list[str]:
    """What a client may send that gives the password away: itself and its SASL encodings."""
    b64 = lambda raw: base64.b64encode(raw.encode()).decode()  # noqa: E731
    return [password, b64(password), b64(f"\0{user}\0{password}"), b64(f"{user}\0{user}\0{password}"),
            password.split()[0], b64(password)[:12]]


def smtp_logins(server):
    for mechanism, initial in (("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False),
                               ("CRAM-MD5", True)):
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = USER, PASSWORD
            method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}
            assert smtp.auth(mechanism, method[mechanism], initial_response_ok=initial)[0] == 235


def pop3_logins(server):
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    for how in ("USER/PASS", "APOP", "AUTH PLAIN initial", "AUTH PLAIN continued"):
        pop = poplib.POP3(server.host, server.port, timeout=10)
        if how == "USER/PASS":
            pop.user(USER)
            pop.pass_(PASSWORD)
        elif how == "APOP":
            pop.apop(USER, PASSWORD)
        elif how == "AUTH PLAIN initial":
            assert pop._shortcmd("AUTH PLAIN " + plain.decode()).startswith(b"+OK")
        else:
            pop._putcmd("AUTH PLAIN")
            assert pop._getline()[0].startswith(b"+")
            assert pop._shortcmd(plain.decode()).startswith(b"+OK")
        pop.quit()


def imap_logins(server):
    for how in ("LOGIN", "AUTHENTICATE PLAIN", "AUTHENTICATE LOGIN", "CRAM-MD5"):
        imap = imaplib.IMAP4(server.host, server.port, timeout=10)
        if how == "LOGIN":
            imap.login(USER, PASSWORD)  # quoted: the password has a space
        elif how == "AUTHENTICATE PLAIN":
            imap.authenticate("PLAIN", lambda challenge: f"\0{USER}\0{PASSWORD}".encode())
        elif how == "AUTHENTICATE LOGIN":
            answers = iter([USER.encode(), PASSWORD.encode()])
            imap.authenticate("LOGIN", lambda challenge: next(answers))
        else:
            imap.login_cram_md5(USER, PASSWORD)
        imap.logout()
    # LOGIN with the password as a literal, the way a client sends 8-bit or odd passwords.
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        secret = PASSWORD.encode()
        sock.sendall(b"a1 LOGIN " + USER.encode() + b" {%d}\r\n" % len(secret))
        assert reader.readline().startswith(b"+")
        sock.sendall(secret + b"\r\n")
        assert reader.readline().startswith(b"a1 OK")
        sock.sendall(b"a2 LOGOUT\r\n")
        reader.read()


def ftp_logins(server):
    with ftplib.FTP() as ftp:
        ftp.connect(server.host, server.port, timeout=10)
        ftp.login(USER, PASSWORD)


def test_no_password_of_any_auth_method_stays_in_the_journal_or_its_file(testbed, smtp_server, pop3_server,
                                                                         imap_server, ftp_server, tmp_path):
    path = tmp_path / "journal.jsonl"
    testbed.write_journal(str(path))
    smtp_logins(smtp_server)
    pop3_logins(pop3_server)
    imap_logins(imap_server)
    ftp_logins(ftp_server)
    for server in ("smtp", "pop3", "imap", "ftp"):
        testbed.journal.wait(lambda: testbed.journal.query("connection.close", server=server), 5)
    events = testbed.journal.events
    in_memory = "\n".join(to_json(e) for e in events) + repr(events)
    on_disk = path.read_text()
    for secret in forms(USER, PASSWORD):
        assert secret not in in_memory, secret
        assert secret not in on_disk, secret
    redacted = [e for e in events if e["kind"] == "data" and e.get("redacted")]
    assert {e["server"] for e in redacted} == {"smtp", "pop3", "imap", "ftp"}
    # The masked payload keeps its length: byte counts and payloads still add up per connection.
    for server in ("smtp", "pop3", "imap", "ftp"):
        for closed in testbed.journal.query("connection.close", server=server):
            up = testbed.journal.query("data", server=server, conn=closed["conn"], direction="up")
            assert sum(len(e["payload"]) for e in up) == closed["bytes_up"]


@pytest.mark.parametrize("testbed_scenario", [{"servers": {"http": {"enabled": False}, "dns": {"enabled": False}},
                                               "users": {USER: PASSWORD}, "journal": {"redact": False}}])
def test_redact_false_keeps_the_exact_bytes(testbed, pop3_server):
    pop = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    pop.user(USER)
    pop.pass_(PASSWORD)
    pop.quit()
    sent = [e["payload"] for e in testbed.journal.query("data", server="pop3", direction="up")]
    assert b"PASS " + PASSWORD.encode() + b"\r\n" in b"".join(sent)


def test_a_password_split_across_reads_is_masked_whole():
    from twisted.internet.task import Clock

    from testbed import testing
    from testbed.mail.store import MailStore
    from testbed.servers.pop3.server import build_factory
    from testbed.servers.pop3.spec import POP3Config

    store = MailStore(users={USER: PASSWORD})
    conn = testing.connect(build_factory(POP3Config(), store, None, Clock()), "pop3")
    conn.send(b"USER " + USER.encode() + b"\r\nPASS Tr0ub")
    conn.send(b"4dor&3 horse\r\n")
    assert b"+OK" in conn.sent().splitlines()[-1]  # logged in
    up = conn.journal.query("data", direction="up")
    assert [e["size"] for e in up] == [len(USER) + 17, 14]
    payload = b"".join(e["payload"] for e in up)
    assert payload == b"USER " + USER.encode() + b"\r\nPASS " + b"*" * len(PASSWORD) + b"\r\n"
    assert up[-1]["redacted"] is True
