"""One wait_for on every server handle: a count or a predicate, filters on record attributes, the old keywords."""

import ftplib
import imaplib
import io
import poplib
import smtplib
import socket
import urllib.request

import dns.message
import dns.query
import pytest

from testbed.servers.base import WaitTimeout

ALICE = "alice@example.test"


@pytest.fixture(scope="module")
def ftp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wait-ftp")
    (root / "incoming").mkdir()
    return root


@pytest.fixture
def testbed_scenario(ftp_root):
    return {"servers": {"ftp": {"root": str(ftp_root)}, "dns": {"records": {"api.example.test": {"A": "192.0.2.1"}}}},
            "users": {ALICE: "secret", "bob@example.test": "secret"}}


def test_smtp_filters_on_recipients_and_sender(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.sendmail("app@example.test", ["bob@example.test"], "Subject: 1\r\n\r\nfirst\r\n")
        client.sendmail("app@example.test", [ALICE], "Subject: 2\r\n\r\nsecond\r\n")
    [message] = smtp_server.wait_for(to="ALICE@*")
    assert b"second" in message.raw
    assert len(smtp_server.wait_for(2, sender="app@*")) == 2
    assert len(smtp_server.wait_for(count=2)) == 2  # the keyword older versions took
    with pytest.raises(WaitTimeout, match=r"1 message\(s\) with to 'carol@\*'; got 2"):
        smtp_server.wait_for(to="carol@*", timeout=0.2)


def test_pop3_filters_sessions_and_retrievals(pop3_server):
    pop3_server.deliver(ALICE, b"Subject: hi\r\n\r\nbody\r\n")
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    client.user(ALICE)
    client.pass_("secret")
    client.retr(1)
    client.quit()
    [retrieval] = pop3_server.wait_for(kind="retr", user=ALICE, complete=True)
    assert retrieval.number == 1
    [session] = pop3_server.wait_for(kind="quit", method="USER")
    assert session.user == ALICE
    with pytest.raises(WaitTimeout, match="with user 'bob@"):
        pop3_server.wait_for(user="bob@*", timeout=0.2)


def test_imap_filters_journal_events(imap_server):
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=10)
    client.login(ALICE, "secret")
    client.select("INBOX")
    client.logout()
    [select] = imap_server.wait_for(of="commands", command="SELECT")
    assert select["server"] == "imap"
    assert imap_server.wait_for(of="logins", user=ALICE)[0]["login"]
    assert imap_server.wait_for(lambda e: e["command"] == "LOGOUT", of="commands")


def test_http_filters_on_path_and_method_and_takes_count(http_server):
    http_server.route("/api/*", body="ok")
    http_server.route("/health", body="ok")
    for path in ("/api/a", "/api/b", "/health"):
        urllib.request.urlopen(http_server.url + path, timeout=10).read()
    assert [r.path for r in http_server.wait_for(2, path="/api/*", method="GET")] == ["/api/a", "/api/b"]
    assert len(http_server.wait_for(count=3)) == 3
    with pytest.raises(TypeError, match="a HTTPRequest has no 'colour'; filter on one of: .*path"):
        http_server.wait_for(colour="red", timeout=0.2)


def test_dns_filters_on_name_and_type(dns_server):
    for rdtype in ("A", "AAAA"):
        dns.query.udp(dns.message.make_query("api.example.test", rdtype), dns_server.host, port=dns_server.port,
                      timeout=5)
    [query] = dns_server.wait_for(name="api.example.*", type="AAAA")
    assert query.transport == "udp"
    with pytest.raises(WaitTimeout, match="with type 'MX'"):
        dns_server.wait_for(type="MX", timeout=0.2)


def test_ftp_filters_on_uploads(ftp_server):
    client = ftplib.FTP()
    client.connect(ftp_server.host, ftp_server.port, timeout=10)
    client.login(ALICE, "secret")
    client.storbinary("STOR incoming/report.csv", io.BytesIO(b"a,b\n"))
    client.storbinary("STOR incoming/notes.txt", io.BytesIO(b"hello\n"))
    client.quit()
    [upload] = ftp_server.wait_for(path="*.csv", user=ALICE)
    assert upload.size == 4


@pytest.mark.parametrize("testbed_scenario", [{"servers": {"echo": {"enabled": True}, "http": {"enabled": False}}}],
                         ids=["echo"])
def test_echo_filters_on_the_lines_it_received(testbed):
    echo = testbed["echo"]
    with socket.create_connection((echo.host, echo.port), timeout=5) as sock:
        sock.sendall(b"hello\nping 1\n")
        reader = sock.makefile("rb")
        assert [reader.readline(), reader.readline()] == [b"hello\n", b"ping 1\n"]
    assert [e["text"] for e in echo.wait_for(text="ping*")] == ["ping 1"]
