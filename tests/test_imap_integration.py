"""The IMAP server with real clients over loopback: imaplib, imapclient (IDLE) and curl, plain, STARTTLS and IMAPS."""

import imaplib
import socket
import ssl
import subprocess

import pytest
from _clients import CURL

USER, PASSWORD = "alice@example.test", "secret"
TIMEOUT = 5


@pytest.fixture(scope="module")
def testbed_scenario():
    return {"seed": 7, "servers": {"imap": {"enabled": True}},
            "users": {USER: PASSWORD, "bob@example.test": "hunter2"}}


def raw_message(subject: str, body: str = "Hello, Alice.\r\n") -> bytes:
    return (f"From: Bob <bob@example.test>\r\nTo: Alice <{USER}>\r\nSubject: {subject}\r\n"
            f"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.test>\r\n"
            f"\r\n{body}").encode()


def deliver(testbed, subject: str, body: str = "Hello, Alice.\r\n") -> bytes:
    raw = raw_message(subject, body)
    testbed.call(testbed.mail.deliver, USER, raw)
    return raw


def connect(imap_server, login=True) -> imaplib.IMAP4:
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    if login:
        client.login(USER, PASSWORD)
    return client


def tls_context(testbed) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=testbed.ca_path)


# -- the normal path ------------------------------------------------------------------


def test_login_select_search_and_fetch_give_back_the_delivered_bytes(imap_server, testbed):
    first = deliver(testbed, "first")
    second = deliver(testbed, "second", "Line one.\r\nLine two.\r\n")
    with connect(imap_server) as client:
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        assert client.search(None, "SUBJECT", "second") == ("OK", [b"2"])
        assert client.search(None, "UNSEEN") == ("OK", [b"1 2"])
        typ, data = client.fetch("1:2", "(BODY.PEEK[])")
        assert typ == "OK"
        assert [d[1] for d in data if isinstance(d, tuple)] == [first, second]
        typ, data = client.uid("FETCH", "2", "(BODY[])")  # not PEEK: sets \Seen
        assert data[0][1] == second
        assert client.search(None, "SEEN") == ("OK", [b"2"])
        client.logout()
    assert [e["user"] for e in imap_server.logins] == [USER]
    assert [e["command"] for e in imap_server.commands][:3] == ["CAPABILITY", "LOGIN", "SELECT"]
    assert any(e["command"] == "FETCH" and e["uid"] for e in imap_server.commands)


def test_store_flags_then_expunge_removes_only_the_deleted_message(imap_server, testbed):
    for n in range(3):
        deliver(testbed, f"message {n}")
    with connect(imap_server) as client:
        client.select("INBOX")
        typ, data = client.store("2", "+FLAGS", "(\\Deleted \\Flagged)")
        assert typ == "OK" and b"\\Deleted" in data[0] and b"\\Flagged" in data[0]
        assert client.expunge() == ("OK", [b"2"])
        assert client.search(None, "ALL") == ("OK", [b"1 2"])
        client.logout()
    assert [m.raw for m in imap_server.messages()] == [raw_message("message 0"), raw_message("message 2")]


def test_append_stores_the_bytes_with_flags_and_date(imap_server):
    raw = raw_message("appended")
    with connect(imap_server) as client:
        typ, _ = client.append("INBOX", "(\\Seen $Work)", imaplib.Time2Internaldate(1_600_000_000), raw)
        assert typ == "OK"
        client.select("INBOX", readonly=True)
        typ, data = client.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert b"$Work" in data[0][0] and b'"13-Sep-2020 12:26:40 +0000"' in data[0][0]
        assert data[0][1] == raw
        client.logout()
    [stored] = imap_server.messages()
    assert stored.raw == raw and stored.flags == {"\\Seen", "$Work"} and stored.internal_date == 1_600_000_000


def test_folders_create_list_rename_delete_copy_and_subscribe(imap_server, testbed):
    raw = deliver(testbed, "to copy")
    with connect(imap_server) as client:
        assert client.create("Projects/2024")[0] == "OK"
        assert client.create("Projects/2024")[0] == "NO"
        typ, data = client.list()
        assert data == [b'(\\HasNoChildren) "/" "INBOX"', b'(\\HasNoChildren \\Archive) "/" "Archive"',
                        b'(\\HasNoChildren \\Drafts) "/" "Drafts"', b'(\\HasNoChildren \\Junk) "/" "Junk"',
                        b'(\\HasChildren) "/" "Projects"', b'(\\HasNoChildren) "/" "Projects/2024"',
                        b'(\\HasNoChildren \\Sent) "/" "Sent"', b'(\\HasNoChildren \\Trash) "/" "Trash"']
        assert client.rename("Projects/2024", "Projects/Old")[0] == "OK"
        client.select("INBOX")
        assert client.copy("1", "Projects/Old")[0] == "OK"
        typ, data = client.copy("1", "Nowhere")
        assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
        assert client.status("Projects/Old", "(MESSAGES UIDNEXT)") == ("OK", [b"Projects/Old (MESSAGES 1 UIDNEXT 2)"])
        assert client.subscribe("Projects/Old")[0] == "OK"
        assert client.lsub()[1] == [b'(\\HasNoChildren) "/" "INBOX"', b'(\\HasNoChildren) "/" "Projects/Old"']
        assert client.delete("Projects/Old")[0] == "OK"
        assert client.list('""', "Projects*")[1] == [b'(\\HasNoChildren) "/" "Projects"']
        client.logout()
    assert [m.raw for m in imap_server.messages()] == [raw]


def test_starttls_then_login(imap_server, testbed):
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    assert "STARTTLS" in client.capabilities
    client.starttls(ssl_context=tls_context(testbed))
    assert "STARTTLS" not in client.capabilities
    client.login(USER, PASSWORD)
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    assert imap_server.logins[0]["user"] == USER


def test_imaps_on_the_tls_port(imap_server, testbed):
    raw = deliver(testbed, "over tls")
    with imaplib.IMAP4_SSL(imap_server.host, imap_server.tls_port, ssl_context=tls_context(testbed),
                           timeout=TIMEOUT) as client:
        assert "STARTTLS" not in client.capabilities
        client.login(USER, PASSWORD)
        client.select("INBOX")
        assert client.fetch("1", "(BODY.PEEK[])")[1][0][1] == raw
        client.logout()


def test_authenticate_plain_and_cram_md5(imap_server):
    with connect(imap_server, login=False) as client:
        assert client.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())[0] == "OK"
        client.logout()
    with connect(imap_server, login=False) as client:
        assert client.login_cram_md5(USER, PASSWORD)[0] == "OK"
        client.logout()
    with connect(imap_server, login=False) as client:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login_cram_md5(USER, "wrong")
    assert [e["command"] for e in imap_server.logins] == ["AUTHENTICATE", "AUTHENTICATE"]


def test_idle_reports_a_message_delivered_meanwhile(imap_server, testbed):
    import imapclient
    client = imapclient.IMAPClient(imap_server.host, port=imap_server.port, ssl=False, timeout=TIMEOUT)
    try:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX")
        client.idle()
        imap_server.wait_for(lambda e: e["command"] == "IDLE")
        deliver(testbed, "while idling")
        responses = client.idle_check(timeout=TIMEOUT)
        assert (1, b"EXISTS") in responses
        text, _ = client.idle_done()
        assert text == b"IDLE terminated"
        assert list(client.search(["SUBJECT", "idling"])) == [1]
    finally:
        client.logout()


def test_a_second_session_sees_the_first_sessions_expunge_and_flags(imap_server, testbed):
    for n in range(2):
        deliver(testbed, f"shared {n}")
    with connect(imap_server) as watcher, connect(imap_server) as actor:
        watcher.select("INBOX")
        actor.select("INBOX")
        actor.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        actor.expunge()
        actor.store("1", "+FLAGS.SILENT", "(\\Flagged)")
        watcher.noop()
        assert watcher.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        assert b"\\Flagged" in watcher.response("FETCH")[1][-1]
        assert watcher.search(None, "ALL") == ("OK", [b"1"])


# -- faults -----------------------------------------------------------------------------


@pytest.mark.fault(server="imap", on="connect", action="reply", status="BYE", message="[UNAVAILABLE] Maintenance")
def test_bye_at_the_greeting(imap_server):
    with pytest.raises(imaplib.IMAP4.error, match=r"BYE \[UNAVAILABLE\] Maintenance"):
        imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)


@pytest.mark.fault(server="imap", on="connect", action="preauth")
def test_preauth_greeting_logs_in_the_first_user(imap_server, testbed):
    raw = deliver(testbed, "preauthenticated")
    with connect(imap_server, login=False) as client:
        assert client.state == "AUTH"
        client.select("INBOX")
        assert client.fetch("1", "(BODY.PEEK[])")[1][0][1] == raw
        client.logout()
    assert imap_server.logins[0]["status"] == "PREAUTH" and imap_server.logins[0]["user"] == USER


@pytest.mark.fault(server="imap", on="LOGIN", action="reply", status="NO", times=1,
                   message="[UNAVAILABLE] Try again later")
def test_login_unavailable_once_then_it_works(imap_server):
    with connect(imap_server, login=False) as client:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Try again later"):
            client.login(USER, PASSWORD)
        assert client.login(USER, PASSWORD)[0] == "OK"


def test_login_authenticationfailed_for_one_user_only(imap_server):
    imap_server.faults.add(on="LOGIN", action="reply", status="NO", match={"user": "alice@*"})
    with connect(imap_server, login=False) as client:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            client.login(USER, PASSWORD)
        assert client.login("bob@example.test", "hunter2")[0] == "OK"


@pytest.mark.fault(server="imap", on="STARTTLS", action="reply", status="NO")
def test_starttls_refused(imap_server, testbed):
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    with pytest.raises(imaplib.IMAP4.error, match="Couldn't establish TLS session"):
        client.starttls(ssl_context=tls_context(testbed))
    assert imap_server.replies[-1]["text"] == "TLS not available"
    client.login(USER, PASSWORD)  # still in plaintext, still usable
    client.logout()


@pytest.mark.fault(server="imap", on="SELECT", action="reply", status="NO", match={"mailbox": "Archive"})
def test_select_nonexistent(imap_server):
    with connect(imap_server) as client:
        typ, data = client.select("Archive")
        assert typ == "NO" and data == [b"[NONEXISTENT] No such mailbox"]
        assert client.select("INBOX")[0] == "OK"


@pytest.mark.fault(server="imap", on="APPEND", action="reply", status="NO", times=1)
def test_append_overquota_then_trycreate(imap_server):
    with connect(imap_server) as client:
        assert client.append("INBOX", None, None, raw_message("too big")) == ("NO", [b"[OVERQUOTA] Quota exceeded"])
        assert client.append("Missing", None, None, raw_message("x")) == ("NO", [b"[TRYCREATE] No such mailbox"])
    assert imap_server.messages() == []


@pytest.mark.fault(server="imap", on="FETCH", action="bye_mid_fetch", bytes=40, message="going down")
def test_bye_in_the_middle_of_a_fetch(imap_server, testbed):
    deliver(testbed, "cut short", "x" * 500 + "\r\n")
    client = connect(imap_server)
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.abort):
        client.fetch("1", "(BODY[])")
    client.shutdown()
    bye = [e for e in imap_server.replies if e["status"] == "BYE"]
    assert bye and bye[0]["after_bytes"] == 40


@pytest.mark.fault(server="imap", on="FETCH", action="short_literal", missing=5)
def test_a_literal_shorter_than_announced_leaves_the_client_waiting(imap_server, testbed):
    deliver(testbed, "short")
    client = connect(imap_server)
    client.select("INBOX")
    client.sock.settimeout(0.5)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch("1", "(BODY[])")
    client.shutdown()


@pytest.mark.fault(server="imap", on="SEARCH", action="silence")
def test_a_tagged_reply_that_never_comes(imap_server, testbed):
    deliver(testbed, "unanswered")
    client = connect(imap_server)
    client.select("INBOX")
    client.sock.settimeout(0.5)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.search(None, "ALL")
    client.shutdown()


@pytest.mark.fault(server="imap", on="IDLE", action="idle_no_ack")
def test_idle_never_acknowledged(imap_server):
    import imapclient
    client = imapclient.IMAPClient(imap_server.host, port=imap_server.port, ssl=False, timeout=TIMEOUT)
    client.login(USER, PASSWORD)
    client.select_folder("INBOX")
    client._imap.sock.settimeout(0.5)
    with pytest.raises(OSError):
        client.idle()
    client.shutdown()


@pytest.mark.fault(server="imap", on="SELECT", action="uidvalidity_change", connection=2)
def test_uidvalidity_changes_between_sessions(imap_server, testbed):
    deliver(testbed, "cached")
    validities = []
    for _ in range(2):
        with connect(imap_server) as client:
            client.select("INBOX")
            validities.append(int(client.response("UIDVALIDITY")[1][0]))
            client.logout()
    assert validities[1] > validities[0]


@pytest.mark.fault(server="imap", on="FETCH", action="reset", bytes=10240)
def test_a_reset_scoped_to_a_fetch(imap_server, testbed):
    deliver(testbed, "large", ("y" * 998 + "\r\n") * 50)
    client = connect(imap_server)
    client.select("INBOX")
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch("1", "(BODY[])")
    client.shutdown()
    [fired] = imap_server.faults.fired()
    assert fired["on"] == "FETCH" and fired["action"] == "reset"


# -- curl ---------------------------------------------------------------------------------



def curl(*args, timeout=10):
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)


def test_curl_fetches_by_uid_over_imap(imap_server, testbed):
    raw = deliver(testbed, "for curl")
    result = curl("-u", f"{USER}:{PASSWORD}", f"imap://{imap_server.host}:{imap_server.port}/INBOX;UID=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == raw


def test_curl_over_imaps_verifies_with_the_ca_file(imap_server, testbed):
    raw = deliver(testbed, "for curl over tls")
    result = curl("--cacert", testbed.ca_path, "-u", f"{USER}:{PASSWORD}",
                  f"imaps://localhost:{imap_server.tls_port}/INBOX;UID=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == raw


def test_curl_with_starttls_lists_mailboxes(imap_server, testbed):
    result = curl("--ssl-reqd", "--cacert", testbed.ca_path, "-u", f"{USER}:{PASSWORD}",
                  f"imap://localhost:{imap_server.port}/")
    assert result.returncode == 0, result.stderr
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in result.stdout


def test_the_server_survives_garbage(imap_server):
    with socket.create_connection((imap_server.host, imap_server.port), timeout=TIMEOUT) as sock:
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(b"\x00\xff garbage\r\n* BAD\r\na1 FETCH\r\na2 LOGIN\r\na3 NOOP\r\n")
        stream.flush()
        lines = [stream.readline() for _ in range(5)]
    assert all(b" BAD " in line or b" NO " in line for line in lines[:4]), lines
    assert lines[4].startswith(b"a3 OK")
    with connect(imap_server) as client:
        assert client.noop()[0] == "OK"


# -- extensions, as imapclient uses them --------------------------------------------------------


def test_imapclient_appends_with_appenduid_moves_and_uid_expunges(imap_server, testbed):
    import imapclient
    from imapclient.imapclient import DELETED, SENT

    deliver(testbed, "one")
    deliver(testbed, "two")
    with imapclient.IMAPClient(imap_server.host, port=imap_server.port, ssl=False, timeout=TIMEOUT) as client:
        client.login(USER, PASSWORD)
        assert {b"UIDPLUS", b"MOVE", b"ID", b"ENABLE", b"UNSELECT", b"SPECIAL-USE", b"LITERAL+"} <= set(
            client.capabilities())
        (server_id,) = client.id_({"name": "pytest"})
        assert dict(zip(server_id[::2], server_id[1::2]))[b"name"] == b"twisted-testbed"
        assert client.find_special_folder(SENT) == "Sent"
        sent = testbed.mail.mailbox(USER, "Sent")
        assert client.append("Sent", raw_message("draft")) == b"[APPENDUID %d 1] APPEND completed" % sent.uid_validity
        client.select_folder("INBOX")
        client.move([1], "Archive")
        assert client.search() == [2]
        client.add_flags([2], [DELETED])
        client.uid_expunge([2])
        assert client.search() == []
        client.unselect_folder()
    archived = [m.raw for m in testbed.mail.mailbox(USER, "Archive").messages]
    assert archived == [raw_message("one")]
    assert [m.raw for m in sent.messages] == [raw_message("draft")]
    assert [e["command"] for e in imap_server.commands if e["command"] in ("MOVE", "EXPUNGE")] == ["MOVE", "EXPUNGE"]
