"""The POP3 server with real clients over loopback: poplib (USER/PASS, APOP, STLS, POP3S), curl, and faults."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
import subprocess

import pytest
from _clients import CURL

ALICE = "alice@example.test"


def message(n: int, body: str = "Hello.") -> bytes:
    return (f"From: sender@example.org\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\n{body}\r\n.a line with a dot\r\n").encode()


@pytest.fixture
def testbed_scenario():
    return {"seed": 3, "servers": {"http": {"enabled": False}, "pop3": {"enabled": True}},
            "users": {ALICE: "secret", "bob@example.test": "hunter2"}}


@pytest.fixture
def mail(testbed):
    """Two messages in alice's INBOX, put there as SMTP would."""
    return [testbed.call(testbed.mail.deliver, ALICE, message(n)) for n in (1, 2)]


def connect(server, tls: bool = False, timeout: float = 10) -> poplib.POP3:
    if tls:
        context = ssl.create_default_context(cafile=server.ca_path)
        return poplib.POP3_SSL(server.host, server.tls_port, timeout=timeout, context=context)
    return poplib.POP3(server.host, server.port, timeout=timeout)


def login(server, **kwargs) -> poplib.POP3:
    client = connect(server, **kwargs)
    client.user(ALICE)
    client.pass_("secret")
    return client


def body(lines: list[bytes]) -> bytes:
    return b"\r\n".join(lines) + b"\r\n"


def curl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout), "-u", f"{ALICE}:secret", *args],
                          capture_output=True, timeout=timeout + 5)


# -- sessions -------------------------------------------------------------------------------


def test_user_pass_stat_list_retr(pop3_server, mail):
    client = login(pop3_server)
    assert client.stat() == (2, mail[0].size + mail[1].size)
    resp, listing, _ = client.list()
    assert listing == [b"1 %d" % mail[0].size, b"2 %d" % mail[1].size]
    resp, lines, octets = client.retr(2)
    assert resp == b"+OK %d octets" % mail[1].size
    assert body(lines) == mail[1].raw  # poplib un-stuffs the dot line
    assert client.quit().startswith(b"+OK")
    [session] = pop3_server.sessions
    assert (session.user, session.method, session.retrieved) == (ALICE, "USER", [2])


def test_apop(pop3_server, mail):
    client = connect(pop3_server)
    assert client.apop(ALICE, "secret").startswith(b"+OK alice@example.test has 2 messages")
    client.quit()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        connect(pop3_server).apop(ALICE, "wrong")


def test_stls_then_login(pop3_server, testbed, mail):
    client = connect(pop3_server)
    assert "STLS" in client.capa()
    client.stls(context=ssl.create_default_context(cafile=testbed.ca_path))
    assert "STLS" not in client.capa()
    client.user(ALICE)
    client.pass_("secret")
    assert client.retr(1)[1][-1] == b".a line with a dot"
    client.quit()
    assert pop3_server.sessions[0].tls is True


def test_pop3s_on_the_tls_port(pop3_server, mail):
    client = login(pop3_server, tls=True)
    caps = client.capa()
    assert "STLS" not in caps and "UIDL" in caps and "IMPLEMENTATION" in caps
    assert client.stat()[0] == 2
    client.quit()
    assert pop3_server.sessions[0].tls is True


def test_uidl_is_stable_across_sessions(pop3_server, mail):
    first = login(pop3_server)
    listing = first.uidl()[1]
    first.quit()
    second = login(pop3_server, tls=True)
    assert second.uidl()[1] == listing
    assert second.uidl(2).split()[-1] == listing[1].split()[-1]
    second.quit()


def test_top(pop3_server, mail):
    client = login(pop3_server)
    resp, lines, _ = client.top(1, 1)
    assert lines[-3:] == [b"Message-ID: <m1@example.org>", b"", b"Hello."]
    client.quit()


def test_deletions_are_committed_on_quit_only(pop3_server, mail):
    client = login(pop3_server)
    client.dele(1)
    client.file.close()
    client.sock.close()  # gone without QUIT
    pop3_server.wait_for(1, kind="close")
    assert len(pop3_server.inbox(ALICE)) == 2
    client = login(pop3_server)
    client.dele(1)
    assert client.quit() == b"+OK testbed.test POP3 server signing off (1 message deleted)"
    assert [m.raw for m in pop3_server.inbox(ALICE)] == [mail[1].raw]
    assert pop3_server.wait_for(lambda s: s.quit, kind="quit")[0].committed == [mail[0].uid]


def test_a_second_concurrent_session_is_in_use(pop3_server, mail):
    first = login(pop3_server)
    second = connect(pop3_server)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_("secret")
    first.quit()
    pop3_server.wait_for(1, kind="close")
    second.user(ALICE)
    assert second.pass_("secret").startswith(b"+OK")
    second.quit()


def test_users_added_at_runtime_log_in(pop3_server, testbed):
    testbed.call(testbed.mail.add_user, "carol@example.test", "pw")
    pop3_server.deliver("carol@example.test", message(9))
    client = connect(pop3_server)
    client.user("carol@example.test")
    client.pass_("pw")
    assert client.stat()[0] == 1
    client.quit()


@pytest.mark.parametrize("testbed_scenario", [{"servers": {"http": {"enabled": False}, "smtp": {"enabled": True},
                                                           "pop3": {"enabled": True}},
                                               "users": {ALICE: "secret"}}], ids=["smtp+pop3"])
def test_mail_sent_over_smtp_is_retrieved_over_pop3(testbed, pop3_server):
    smtp = testbed["smtp"]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.sendmail("sender@example.org", [ALICE], message(7, body="via SMTP"))
    pop = login(pop3_server)
    assert b"via SMTP" in pop.retr(1)[1]
    pop.quit()


def test_pipelined_commands_over_a_socket(pop3_server, mail):
    with socket.create_connection((pop3_server.host, pop3_server.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"+OK")
        sock.sendall(f"USER {ALICE}\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n".encode())
        data = stream.read()
    lines = data.split(b"\r\n")
    assert lines[0] == b"+OK send PASS" and lines[2] == b"+OK 2 %d" % (mail[0].size + mail[1].size)
    assert data.endswith(b"\r\n.\r\n+OK\r\n+OK testbed.test POP3 server signing off (0 messages deleted)\r\n")


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.fault(server="pop3", on="connect", action="reply", message="[SYS/TEMP] maintenance")
def test_greeting_error(pop3_server):
    with pytest.raises(poplib.error_proto, match=r"maintenance"):
        connect(pop3_server)


@pytest.mark.parametrize("message", ["[AUTH] password expired", "[IN-USE] locked", "[SYS/TEMP] backend down"])
def test_pass_errors(pop3_server, message):
    pop3_server.faults.add(on="PASS", action="reply", message=message, times=1)
    client = connect(pop3_server)
    client.user(ALICE)
    with pytest.raises(poplib.error_proto) as raised:
        client.pass_("secret")
    assert raised.value.args[0] == f"-ERR {message}".encode()
    client.user(ALICE)
    assert client.pass_("secret").startswith(b"+OK")  # only once
    client.quit()


@pytest.mark.fault(server="pop3", on="RETR", action="reply", message="[SYS/TEMP] cannot read", times=1)
def test_retr_error(pop3_server, mail):
    client = login(pop3_server)
    with pytest.raises(poplib.error_proto, match=r"cannot read"):
        client.retr(1)
    assert body(client.retr(1)[1]) == mail[0].raw
    client.quit()


@pytest.mark.fault(server="pop3", on="RETR", action="disconnect", bytes=40)
def test_retr_disconnects_midway(pop3_server, mail):
    client = login(pop3_server)
    with pytest.raises(poplib.error_proto, match=r"EOF"):
        client.retr(1)
    [cut] = pop3_server.wait_for(1, kind="retr")
    assert (cut.complete, cut.sent) == (False, 40)


@pytest.mark.fault(server="pop3", on="RETR", action="no_terminator")
def test_retr_without_terminator_leaves_the_client_waiting(pop3_server, mail):
    client = login(pop3_server, timeout=1)
    with pytest.raises(TimeoutError):
        client.retr(1)


@pytest.mark.fault(server="pop3", on="LIST", action="wrong_size", delta=7)
def test_list_sizes_disagree_with_retr(pop3_server, mail):
    client = login(pop3_server)
    sizes = [int(line.split()[1]) for line in client.list()[1]]
    retrieved = client.retr(1)[2]  # poplib counts the octets it received, stuffing undone
    assert sizes == [mail[0].size + 7, mail[1].size + 7]
    assert retrieved == mail[0].size != sizes[0]
    client.quit()


@pytest.mark.fault(server="pop3", on="DELE", action="reply", message="[SYS/TEMP] read-only")
@pytest.mark.fault(server="pop3", on="QUIT", action="reply", message="[SYS/TEMP] some deleted messages not removed")
def test_dele_and_quit_errors_commit_nothing(pop3_server, mail):
    client = login(pop3_server)
    with pytest.raises(poplib.error_proto, match=r"read-only"):
        client.dele(1)
    pop3_server.faults.clear()
    pop3_server.faults.add(on="QUIT", action="reply", message="[SYS/TEMP] some deleted messages not removed")
    client.dele(2)
    with pytest.raises(poplib.error_proto, match=r"not removed"):
        client.quit()
    pop3_server.wait_for(1, kind="close")
    assert len(pop3_server.inbox(ALICE)) == 2


@pytest.mark.fault(server="pop3", on="RETR", action="throttle", bytes_per_second=200_000)
def test_a_throttled_retr_arrives_whole(pop3_server, testbed):
    big = message(1, body=("y" * 76 + "\r\n") * 600)
    testbed.call(testbed.mail.deliver, ALICE, big)
    client = login(pop3_server)
    assert body(client.retr(1)[1]) == big
    client.quit()
    assert [f["action"] for f in pop3_server.faults.fired()] == ["throttle"]


@pytest.mark.fault(server="pop3", on="RETR", action="reset", bytes=10240)
def test_a_reset_after_10k_of_a_retr(pop3_server, testbed):
    testbed.call(testbed.mail.deliver, ALICE, message(1, body=("z" * 76 + "\r\n") * 1000))
    client = login(pop3_server)
    with pytest.raises((ConnectionResetError, poplib.error_proto)):
        client.retr(1)


# -- curl ------------------------------------------------------------------------------------


def test_curl_lists_and_retrieves(pop3_server, mail):
    base = f"pop3://127.0.0.1:{pop3_server.port}"
    listing = curl(base + "/")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"1 %d\r\n2 %d\r\n" % (mail[0].size, mail[1].size)
    retrieved = curl(base + "/1")
    assert retrieved.returncode == 0, retrieved.stderr
    assert retrieved.stdout == mail[0].raw
    assert pop3_server.sessions[0].method == "SASL PLAIN"  # curl prefers SASL when CAPA offers it


def test_curl_pop3s_and_stls(pop3_server, testbed, mail):
    pop3s = curl("--cacert", testbed.ca_path, f"pop3s://127.0.0.1:{pop3_server.tls_port}/2")
    assert pop3s.returncode == 0, pop3s.stderr
    assert pop3s.stdout == mail[1].raw
    stls = curl("--ssl-reqd", "--cacert", testbed.ca_path, f"pop3://127.0.0.1:{pop3_server.port}/1")
    assert stls.returncode == 0, stls.stderr
    assert stls.stdout == mail[0].raw
    assert [s.tls for s in pop3_server.sessions] == [True, True]
