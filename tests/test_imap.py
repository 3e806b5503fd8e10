"""The IMAP server byte by byte, over StringTransport and Clock, through testbed.testing.connect."""

import base64
import hashlib
import hmac

import pytest
from twisted.internet.task import Clock

from testbed import testing
from testbed.servers.imap.spec import IMAPConfig
from testbed.mail.store import MailStore
from testbed.servers.imap import server as imap
from testbed.servers.imap.server import IMAPFactory, build_factory

USER, PASSWORD = "alice@example.test", "secret"
NOW = 1_700_000_000.0
RAW = (b"From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: Hello there\r\n"
       b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nHi Alice.\r\nBye.\r\n")
MIME = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n"
        b"preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
        b"--XYZ\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"in.eml\"\r\n\r\n"
        b"Subject: inner\r\nFrom: x@example.test\r\n\r\ninner body\r\n--XYZ--\r\nepilogue\r\n")
EXTENSIONS = b"NAMESPACE CHILDREN UIDPLUS MOVE ID ENABLE UNSELECT SPECIAL-USE LITERAL+"
GREETING = (b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 IDLE " + EXTENSIONS + b"] "
            b"testbed IMAP4rev1 ready\r\n")


#: What LIST shows of the SPECIAL-USE mailboxes every user has (between INBOX and the user's own).
SPECIAL_USE_LIST = b"".join(b'* LIST (\\HasNoChildren \\%s) "/" "%s"\r\n' % (name, name)
                            for name in (b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"))


def validity(store, mailbox="INBOX"):
    return store.mailbox(USER, mailbox).uid_validity


@pytest.fixture
def store():
    return MailStore(users={USER: PASSWORD, "bob@example.test": "hunter2"}, clock=lambda: NOW)


class Session:
    """A client's side of one connection: send a line, get back what the server wrote."""

    def __init__(self, store, *rules, config=None, clock=None, engine=None, journal=None, tls=False, ctx=None):
        self.clock = clock or Clock()
        factory = IMAPFactory(config or IMAPConfig(tls="none"), store, ctx=ctx, clock=self.clock)
        specs = [dict(server="imap", **r) for r in rules]
        self.conn = testing.connect(factory, "imap", rules=testing.rules(*specs), clock=self.clock,
                                    engine=engine, journal=journal, tls=tls)
        self.greeting = self.conn.sent()

    def __call__(self, line: bytes) -> bytes:
        self.conn.send(line + b"\r\n")
        return self.conn.sent()

    def login(self, mailbox: bytes | None = b"INBOX") -> "Session":
        assert self(b"L1 LOGIN alice@example.test secret") == b"L1 OK LOGIN completed\r\n"
        if mailbox:
            assert self(b"S1 SELECT " + mailbox).endswith(b"S1 OK [READ-WRITE] SELECT completed\r\n")
        return self

    @property
    def journal(self):
        return self.conn.journal

    @property
    def protocol(self):
        return self.conn.protocol


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


# -- the normal path ------------------------------------------------------------------


def test_greeting_and_capability(store):
    s = Session(store)
    assert s.greeting == GREETING
    assert s(b"a1 CAPABILITY") == (b"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 IDLE " + EXTENSIONS
                                   + b"\r\na1 OK CAPABILITY completed\r\n")
    assert s(b"a2 NOOP") == b"a2 OK NOOP No operation performed\r\n"
    assert s(b"a3 LOGOUT") == b"* BYE Nice talking to you\r\na3 OK LOGOUT successful\r\n"
    assert s.conn.closed


def test_starttls_is_offered_only_with_a_tls_transport_and_require_tls_disables_login(store):
    s = Session(store, config=IMAPConfig(tls="starttls", require_tls=True), ctx=object())
    s.protocol.canStartTLS = True
    assert s(b"a1 CAPABILITY").startswith(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED IDLE")
    assert s(b"a2 LOGIN alice@example.test secret") == b"a2 NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS\r\n"
    assert s(b"a3 AUTHENTICATE PLAIN").startswith(b"a3 NO [PRIVACYREQUIRED]")
    started = []
    s.conn.transport.startTLS = lambda ctx, normal=True: started.append(ctx)
    # A command pipelined behind STARTTLS in plaintext is dropped (no STARTTLS injection).
    assert s(b"a4 STARTTLS\r\na5 LOGIN alice@example.test secret") == b"a4 OK Begin TLS negotiation now\r\n"
    assert started == [s.protocol.ctx]
    caps = s(b"a6 CAPABILITY")
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps and b"AUTH=PLAIN" in caps
    assert s(b"a7 STARTTLS") == b"a7 BAD TLS is already active\r\n"
    assert s(b"a8 LOGIN alice@example.test secret") == b"a8 OK LOGIN completed\r\n"


def test_implicit_tls_counts_as_secure(store):
    s = Session(store, config=IMAPConfig(tls="implicit", require_tls=True), tls=True)
    assert b"LOGINDISABLED" not in s.greeting
    assert s(b"a1 LOGIN alice@example.test secret") == b"a1 OK LOGIN completed\r\n"


def test_login_and_its_journal_hide_the_password(store):
    s = Session(store)
    assert s(b"a1 LOGIN alice@example.test wrong") == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert s(b'a2 LOGIN "alice@example.test" "secret"') == b"a2 OK LOGIN completed\r\n"
    commands = s.journal.query("command")
    assert [(c["tag"], c["command"], c["user"]) for c in commands] == [("a1", "LOGIN", USER), ("a2", "LOGIN", USER)]
    assert not any("secret" in repr(c) or "wrong" in repr(c) for c in commands)
    replies = s.journal.query("reply")
    assert [(r["status"], r.get("login"), r.get("user")) for r in replies] == [("NO", None, None), ("OK", True, USER)]


def test_authenticate_plain_login_and_cram_md5(store):
    s = Session(store)
    assert s(b"a1 AUTHENTICATE PLAIN") == b"+ \r\n"
    assert s(base64.b64encode(b"\0alice@example.test\0secret")) == b"a1 OK AUTHENTICATE completed\r\n"

    s = Session(store)
    assert s(b"a1 AUTHENTICATE LOGIN") == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    assert s(base64.b64encode(USER.encode())) == b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    assert s(base64.b64encode(b"secret")) == b"a1 OK AUTHENTICATE completed\r\n"

    s = Session(store)
    challenge = base64.b64decode(s(b"a1 AUTHENTICATE CRAM-MD5")[2:].strip())
    assert challenge.startswith(b"<") and challenge.endswith(b"@testbed.test>")
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest().encode()
    assert s(base64.b64encode(USER.encode() + b" " + digest)) == b"a1 OK AUTHENTICATE completed\r\n"
    assert s.journal.query("command")[0]["mechanism"] == "CRAM-MD5"


def test_authenticate_failures(store):
    s = Session(store)
    s(b"a1 AUTHENTICATE PLAIN")
    assert s(base64.b64encode(b"\0alice@example.test\0nope")) == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    s(b"a2 AUTHENTICATE PLAIN")
    assert s(b"*") == b"a2 BAD AUTHENTICATE cancelled\r\n"
    s(b"a3 AUTHENTICATE PLAIN")
    assert s(b"!!not base64!!") == b"a3 BAD Invalid base64 in the AUTHENTICATE response\r\n"
    assert s(b"a4 AUTHENTICATE GSSAPI") == b"a4 NO [CANNOT] Unsupported authentication mechanism\r\n"
    s2 = Session(store, config=IMAPConfig(tls="none", auth=["PLAIN"]))
    assert b"AUTH=PLAIN IDLE" in s2.greeting and b"CRAM-MD5" not in s2.greeting


def test_unknown_mechanisms_are_refused_when_the_factory_is_built(store):
    with pytest.raises(ValueError, match="servers.imap.auth"):
        build_factory(IMAPConfig(auth=["PLAIN", "XOAUTH2"]), store, reactor=Clock())


def test_select_answers_everything_rfc_3501_asks_for(store):
    store.deliver(USER, RAW)
    store.deliver(USER, RAW, flags=["\\Seen"])
    s = Session(store).login(None)
    assert s(b"a1 SELECT inbox") == (
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n"
        b"* 2 EXISTS\r\n* 2 RECENT\r\n* OK [UNSEEN 1] First unseen\r\n"
        b"* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)] Limited\r\n"
        b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 3] Predicted next UID\r\n"
        b"a1 OK [READ-WRITE] SELECT completed\r\n")
    # \Recent went to this session: another one sees none.
    other = Session(store).login(None)
    assert b"* 0 RECENT\r\n" in other(b"b1 EXAMINE INBOX")
    assert other(b"b2 SELECT Nowhere") == b"b2 NO [NONEXISTENT] No such mailbox\r\n"


def test_fetch_body_is_byte_exact_and_sets_seen(store):
    store.deliver(USER, RAW)
    s = Session(store).login()
    assert s(b"a1 FETCH 1 (BODY.PEEK[] FLAGS)") == (
        b"* 1 FETCH (BODY[] " + literal(RAW) + b" FLAGS (\\Recent))\r\na1 OK FETCH completed\r\n")
    assert s(b"a2 FETCH 1 BODY[]") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] " + literal(RAW) + b")\r\na2 OK FETCH completed\r\n")
    assert store.mailbox(USER).messages[0].flags == {"\\Seen"}


def test_fetch_attributes(store):
    store.deliver(USER, RAW, internal_date=NOW)
    s = Session(store).login()
    assert s(b"a1 UID FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)") == (
        b"* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d INTERNALDATE \"14-Nov-2023 22:13:20 +0000\" "
        b"ENVELOPE (\"Tue, 14 Nov 2023 22:13:20 +0000\" \"Hello there\" ((\"Bob\" NIL \"bob\" \"example.test\")) "
        b"((\"Bob\" NIL \"bob\" \"example.test\")) ((\"Bob\" NIL \"bob\" \"example.test\")) "
        b"((\"Alice\" NIL \"alice\" \"example.test\")) NIL NIL NIL \"<1@example.test>\") "
        b"BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 17 2 NIL NIL NIL NIL))\r\n"
        b"a1 OK FETCH completed\r\n" % len(RAW))


def test_fetch_sections_and_partials(store):
    store.deliver(USER, RAW)
    s = Session(store).login()
    header, body = RAW.split(b"\r\n\r\n", 1)
    assert s(b"a1 FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<5.9>)") == (
        b"* 1 FETCH (BODY[HEADER] " + literal(header + b"\r\n\r\n") + b" BODY[TEXT] " + literal(body)
        + b" BODY[]<5> " + literal(RAW[5:14]) + b")\r\na1 OK FETCH completed\r\n")
    assert s(b"a2 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject message-id)])") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT MESSAGE-ID)] "
        + literal(b"Subject: Hello there\r\nMessage-ID: <1@example.test>\r\n\r\n") + b")\r\na2 OK FETCH completed\r\n")
    not_fields = s(b"a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (FROM TO DATE MESSAGE-ID)])")
    assert not_fields == (b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (FROM TO DATE MESSAGE-ID)] "
                          + literal(b"Subject: Hello there\r\n\r\n") + b")\r\na3 OK FETCH completed\r\n")
    assert s(b"a4 FETCH 1 (RFC822.HEADER RFC822.TEXT)").startswith(
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) RFC822.HEADER " + literal(header + b"\r\n\r\n"))


def test_fetch_mime_parts(store):
    store.deliver(USER, MIME)
    s = Session(store).login()
    assert s(b"a1 FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.HEADER] BODY.PEEK[2.1] "
             b"BODY.PEEK[3])") == (
        b"* 1 FETCH (BODY[1] " + literal(b"first part") + b" BODY[1.MIME] "
        + literal(b"Content-Type: text/plain; charset=utf-8\r\n\r\n") + b" BODY[2] "
        + literal(b"Subject: inner\r\nFrom: x@example.test\r\n\r\ninner body") + b" BODY[2.HEADER] "
        + literal(b"Subject: inner\r\nFrom: x@example.test\r\n\r\n") + b" BODY[2.1] " + literal(b"inner body")
        + b" BODY[3] NIL)\r\na1 OK FETCH completed\r\n")
    assert s(b"a2 FETCH 1 BODYSTRUCTURE") == (
        b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1 NIL NIL NIL NIL) '
        b'("message" "rfc822" NIL NIL NIL "7bit" 50 (NIL "inner" ((NIL NIL "x" "example.test")) '
        b'((NIL NIL "x" "example.test")) ((NIL NIL "x" "example.test")) NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1 NIL NIL NIL NIL) 4 '
        b'NIL ("attachment" ("filename" "in.eml")) NIL NIL) "mixed" ("boundary" "XYZ") NIL NIL NIL))\r\n'
        b"a2 OK FETCH completed\r\n")


def test_a_large_fetch_yields_to_the_reactor_and_holds_later_commands(store, monkeypatch):
    monkeypatch.setattr(imap, "FETCH_BATCH", 2)
    for _ in range(5):
        store.deliver(USER, RAW)
    s = Session(store).login()
    first = s(b"a1 FETCH 1:* UID\r\na2 NOOP")
    assert first == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n"
    s.clock.advance(0)
    s.clock.advance(0)
    assert s.conn.sent() == (b"* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)\r\n* 5 FETCH (UID 5)\r\n"
                             b"a1 OK FETCH completed\r\na2 OK NOOP No operation performed\r\n")


def test_search(store):
    store.deliver(USER, RAW)
    store.deliver(USER, RAW.replace(b"Hello there", b"=?utf-8?q?Gr=C3=BC=C3=9Fe?="), flags=["\\Flagged"])
    store.deliver(USER, MIME)
    s = Session(store).login()
    assert s(b"a1 SEARCH ALL") == b"* SEARCH 1 2 3\r\na1 OK SEARCH completed\r\n"
    assert s(b"a2 SEARCH FLAGGED") == b"* SEARCH 2\r\na2 OK SEARCH completed\r\n"
    assert s(b'a3 SEARCH OR SUBJECT "hello" BODY "inner body"') == b"* SEARCH 1 3\r\na3 OK SEARCH completed\r\n"
    assert s(b"a4 SEARCH NOT (FROM bob) 2:*") == b"* SEARCH 3\r\na4 OK SEARCH completed\r\n"
    assert s(b"a5 UID SEARCH UID 2:* UNFLAGGED") == b"* SEARCH 3\r\na5 OK SEARCH completed\r\n"
    assert s(b"a6 SEARCH SINCE 14-Nov-2023 LARGER 10000") == b"* SEARCH\r\na6 OK SEARCH completed\r\n"
    assert s(b"a7 SEARCH CHARSET UTF-8 SUBJECT {6}") == b"+ Ready for 6 octets of text\r\n"
    assert s("grüß".encode()) == b"* SEARCH 2\r\na7 OK SEARCH completed\r\n"
    assert s(b"a8 SEARCH SENTON 14-Nov-2023 HEADER Message-ID <1@") == b"* SEARCH 1 2\r\na8 OK SEARCH completed\r\n"
    assert s(b"a9 SEARCH CHARSET KOI8-R ALL") == b"a9 NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    assert s(b"b1 SEARCH SUBJECT") == b"b1 BAD missing a string\r\n"
    assert s(b"b2 SEARCH BEFORE yesterday") == b"b2 BAD bad date b'yesterday'\r\n"


def test_store_expunge_and_close(store):
    for _ in range(3):
        store.deliver(USER, RAW)
    s = Session(store).login()
    assert s(b"a1 STORE 1:2 +FLAGS (\\Deleted)") == (
        b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\na1 OK STORE completed\r\n")
    assert s(b"a2 UID STORE 3 FLAGS.SILENT ($Label1)") == b"a2 OK STORE completed\r\n"
    assert s(b"a3 EXPUNGE") == b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\na3 OK EXPUNGE completed\r\n"
    assert s(b"a4 FETCH 1 (UID FLAGS)") == b"* 1 FETCH (UID 3 FLAGS ($Label1 \\Recent))\r\na4 OK FETCH completed\r\n"
    assert s(b"a5 STORE 1 +FLAGS (\\Deleted)").endswith(b"a5 OK STORE completed\r\n")
    assert s(b"a6 CLOSE") == b"a6 OK CLOSE completed\r\n"
    assert store.mailbox(USER).messages == []
    assert s(b"a7 FETCH 1 UID") == b"a7 BAD Unsupported command\r\n"


def test_examine_is_read_only(store):
    store.deliver(USER, RAW)
    s = Session(store).login(None)
    assert s(b"a1 EXAMINE INBOX").endswith(b"* OK [PERMANENTFLAGS ()] Limited\r\n"
                                           b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
                                           b"* OK [UIDNEXT 2] Predicted next UID\r\n"
                                           b"a1 OK [READ-ONLY] EXAMINE completed\r\n")
    assert s(b"a2 STORE 1 +FLAGS (\\Seen)") == b"a2 NO [READ-ONLY] Mailbox is read-only\r\n"
    assert s(b"a3 FETCH 1 BODY[TEXT]") == b"* 1 FETCH (BODY[TEXT] " + literal(b"Hi Alice.\r\nBye.\r\n") + b")\r\na3 OK FETCH completed\r\n"
    assert s(b"a4 EXPUNGE") == b"a4 NO EXPUNGE ignored on read-only mailbox\r\n"
    assert store.mailbox(USER).messages[0].flags == set()


def test_append_copy_and_folders(store):
    s = Session(store).login()
    assert s(b'a1 APPEND INBOX (\\Seen) "05-Jan-2024 10:00:00 +0100" {%d}' % len(RAW)) == (
        b"+ Ready for %d octets of data\r\n" % len(RAW))
    assert s(RAW) == b"* 1 EXISTS\r\n* 1 RECENT\r\na1 OK [APPENDUID %d 1] APPEND completed\r\n" % validity(store)
    stored = store.mailbox(USER).messages[0]
    assert (stored.raw, stored.flags, stored.internal_date) == (RAW, {"\\Seen"}, 1704445200.0)
    assert s(b"a2 CREATE Work/Projects") == b"a2 OK Mailbox created\r\n"
    assert s(b"a3 COPY 1 Work/Projects") == b"a3 OK [COPYUID %d 1 1] COPY completed\r\n" % validity(
        store, "Work/Projects")
    assert s(b"a4 COPY 1 Missing") == b"a4 NO [TRYCREATE] No such mailbox\r\n"
    assert s(b"a5 APPEND Missing {3}") == b"+ Ready for 3 octets of data\r\n"
    assert s(b"abc") == b"a5 NO [TRYCREATE] No such mailbox\r\n"
    assert s(b"a6 STATUS Work/Projects (MESSAGES RECENT UNSEEN UIDNEXT UIDVALIDITY)") == (
        b"* STATUS Work/Projects (MESSAGES 1 RECENT 1 UNSEEN 0 UIDNEXT 2 UIDVALIDITY %d)\r\na6 OK STATUS completed\r\n"
        % store.mailbox(USER, "Work/Projects").uid_validity)
    assert s(b"a7 STATUS INBOX (SIZE)") == b"a7 BAD Unknown STATUS item SIZE\r\n"
    assert s(b'a8 LIST "" %') == (b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' + SPECIAL_USE_LIST
                                  + b'* LIST (\\HasChildren) "/" "Work"\r\na8 OK LIST completed\r\n')
    assert s(b'a9 LIST "" ""') == b'* LIST (\\Noselect) "/" ""\r\na9 OK LIST completed\r\n'
    assert s(b"b1 RENAME Work Play") == b"b1 OK Mailbox renamed\r\n"
    assert s(b'b2 LIST "Play/" *') == b'* LIST (\\HasNoChildren) "/" "Play/Projects"\r\nb2 OK LIST completed\r\n'
    assert s(b"b3 SUBSCRIBE Play") == b"b3 OK Subscribed\r\n"
    assert s(b'b4 LSUB "" *') == (b'* LSUB (\\HasNoChildren) "/" "INBOX"\r\n* LSUB (\\HasChildren) "/" "Play"\r\n'
                                  b"b4 OK LSUB completed\r\n")
    assert s(b"b4 UNSUBSCRIBE Play") == b"b4 OK Unsubscribed\r\n"
    assert s(b"b4 UID COPY 1 Play/Projects") == b"b4 OK [COPYUID %d 1 2] COPY completed\r\n" % validity(
        store, "Play/Projects")
    assert [m.raw for m in store.mailbox(USER, "Play/Projects").messages] == [RAW, RAW]
    assert s(b"b4 CHECK") == b"b4 OK CHECK completed\r\n"
    assert s(b"b4 NAMESPACE") == b'* NAMESPACE (("" "/")) NIL NIL\r\nb4 OK NAMESPACE command completed\r\n'
    assert s(b"b5 DELETE Play/Projects") == b"b5 OK Mailbox deleted\r\n"
    assert s(b"b6 DELETE Play/Projects") == b"b6 NO [NONEXISTENT] No such mailbox\r\n"
    assert s(b"b7 CREATE INBOX") == b"b7 NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert s(b"b8 CREATE ../escape") .startswith(b"b8 NO [CANNOT] invalid mailbox name")
    assert s(b'b9 APPEND INBOX "not a date" {3}') == b"+ Ready for 3 octets of data\r\n"
    assert s(b"abc") == b"b9 BAD Invalid date-time\r\n"
    assert store.list_mailboxes(USER) == ["INBOX", "Archive", "Drafts", "Junk", "Play", "Sent", "Trash"]


def test_idle_reports_deliveries_flags_and_expunges_from_other_sessions(store):
    store.deliver(USER, RAW)
    watcher = Session(store).login()
    actor = Session(store).login()
    assert watcher(b"i1 IDLE") == b"+ idling\r\n"
    store.deliver(USER, RAW)
    assert watcher.conn.sent() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"  # the watcher selected first: both are its
    actor(b"a1 STORE 1 +FLAGS (\\Deleted)")
    assert watcher.conn.sent() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    assert actor(b"a2 EXPUNGE") == b"* 1 EXPUNGE\r\na2 OK EXPUNGE completed\r\n"
    assert watcher.conn.sent() == b"* 1 EXPUNGE\r\n"
    assert watcher(b"DONE") == b"i1 OK IDLE terminated\r\n"
    assert watcher(b"i2 IDLE") == b"+ idling\r\n"
    assert watcher(b"STOP") == b"i2 BAD Expected DONE\r\n"
    assert watcher(b"i3 FETCH 1 UID") == b"* 1 FETCH (UID 2)\r\ni3 OK FETCH completed\r\n"


def test_a_closed_connection_stops_listening_to_the_store(store):
    s = Session(store).login()
    box = store.mailbox(USER)
    assert len(box._listeners) == 1
    s.conn.wrapper.connectionLost(None)
    assert box._listeners == []


def test_bad_input_gets_bad_and_the_server_carries_on(store):
    store.deliver(USER, RAW)
    s = Session(store)
    assert s(b"") == b"* BAD Null command\r\n"
    assert s(b"a1") == b"a1 BAD Missing command\r\n"
    assert s(b"a2 FROB") == b"a2 BAD Unsupported command\r\n"
    assert s(b"a3 SELECT INBOX") == b"a3 BAD Unsupported command\r\n"
    assert s(b"a4 LOGIN \xff\xfe") .startswith(b"a4 BAD")
    assert s(b'a5 LOGIN "unterminated') == b"a5 BAD Illegal syntax: Unmatched quotes\r\n"
    s.login()
    assert s(b"b1 FETCH 1 (BODY[NOPE])") .startswith(b"b1 BAD Illegal syntax:")
    assert s(b"b2 FETCH x FLAGS") .startswith(b"b2 BAD Illegal syntax:")
    assert s(b"b3 FETCH 1 (FLAGS") .startswith(b"b3 BAD Illegal syntax:")
    assert s(b"b4 UID FROB 1") .startswith(b"b4 BAD Illegal syntax:")
    assert s(b"b5 STORE 1 +FLAGS (\\Seen") .startswith(b"b5 BAD Illegal syntax:")
    assert s(b"b6 SEARCH (ALL") .startswith(b"b6 BAD")
    assert s(b"b7 FETCH 1 UID") == b"* 1 FETCH (UID 1)\r\nb7 OK FETCH completed\r\n"
    assert not s.conn.closed
    assert [m.raw for m in store.mailbox(USER).messages] == [RAW]


def test_oversize_literals_and_lines_are_refused(store, monkeypatch):
    monkeypatch.setattr(imap, "MAX_LITERAL", 100)
    s = Session(store).login()
    assert s(b"a1 APPEND INBOX {101}") == b"a1 NO [TOOBIG] Message too large\r\n"
    assert s(b"a2 APPEND INBOX {3}") == b"+ Ready for 3 octets of data\r\n"
    assert s(b"abc") == b"* 1 EXISTS\r\n* 1 RECENT\r\na2 OK [APPENDUID %d 1] APPEND completed\r\n" % validity(store)
    assert s(b"a3 FETCH " + b"1," * 40000 + b"1 UID") == b"* BYE [TOOBIG] Line too long\r\n"
    assert s.conn.closed
    assert [m.raw for m in store.mailbox(USER).messages] == [b"abc"]


def test_commands_and_replies_are_journaled(store):
    s = Session(store).login()
    s(b"a1 UID FETCH 1:* FLAGS")
    s(b'a2 LIST "" *')
    commands = [(c["tag"], c["command"], c["uid"], c.get("args")) for c in s.journal.query("command")]
    assert commands[-2:] == [("a1", "FETCH", True, "1:* FLAGS"), ("a2", "LIST", False, '"" *')]
    replies = [(r["tag"], r["command"], r["status"]) for r in s.journal.query("reply")]
    assert replies[-2:] == [("a1", "FETCH", "OK"), ("a2", "LIST", "OK")]


# -- faults -------------------------------------------------------------------------------


def test_bye_at_the_greeting(store):
    s = Session(store, {"on": "connect", "action": "reply", "status": "BYE", "message": "[UNAVAILABLE] Busy"})
    assert s.greeting == b"* BYE [UNAVAILABLE] Busy\r\n"
    assert s.conn.closed


def test_silence_at_the_greeting(store):
    s = Session(store, {"on": "connect", "action": "silence"})
    assert s.greeting == b"" and not s.conn.closed


def test_preauth_greeting_as_the_first_user_or_the_named_one(store):
    s = Session(store, {"on": "connect", "action": "preauth"})
    assert s.greeting == GREETING.replace(b"* OK", b"* PREAUTH").replace(
        b"testbed IMAP4rev1 ready", b"Logged in as alice@example.test")
    assert s(b"a1 SELECT INBOX").endswith(b"a1 OK [READ-WRITE] SELECT completed\r\n")
    s = Session(store, {"on": "connect", "action": "preauth", "user": "bob@example.test"})
    assert s.greeting.endswith(b"Logged in as bob@example.test\r\n")
    assert s(b"a1 LOGIN alice@example.test secret") == b"a1 BAD Unsupported command\r\n"
    s = Session(store, {"on": "connect", "action": "preauth", "user": "nobody@example.test"})
    assert s.greeting == GREETING
    assert s.journal.query("error")[0]["error"] == "preauth user unknown"


def test_login_refused_with_the_default_and_a_given_message(store):
    s = Session(store, {"on": "LOGIN", "action": "reply", "status": "NO", "times": 1},
                {"on": "LOGIN", "action": "reply", "status": "NO", "message": "[UNAVAILABLE] Later", "times": 1})
    assert s(b"a1 LOGIN alice@example.test secret") == b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    assert s(b"a2 LOGIN alice@example.test secret") == b"a2 NO [UNAVAILABLE] Later\r\n"
    assert s(b"a3 LOGIN alice@example.test secret") == b"a3 OK LOGIN completed\r\n"
    fired = s.journal.faults()
    assert [f["attributes"]["user"] for f in fired] == [USER, USER]


def test_faults_match_on_user_mailbox_message_uid_and_mechanism(store):
    store.create_mailbox(USER, "Spam")
    store.deliver(USER, RAW)
    s = Session(store,
                {"on": "LOGIN", "action": "reply", "status": "NO", "match": {"user": "bob@*"}},
                {"on": "AUTHENTICATE", "action": "reply", "status": "NO", "match": {"mechanism": "CRAM-MD5"}},
                {"on": "SELECT", "action": "reply", "status": "NO", "match": {"mailbox": "Spam"}},
                {"on": "FETCH", "action": "reply", "status": "BAD", "match": {"uid": True, "message": "1:*"}})
    assert s(b"a1 LOGIN bob@example.test hunter2") == b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    assert s(b"a2 AUTHENTICATE CRAM-MD5") == b"a2 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    s.login(None)
    assert s(b"a3 SELECT Spam") == b"a3 NO [NONEXISTENT] No such mailbox\r\n"
    assert s(b"a4 SELECT INBOX").endswith(b"a4 OK [READ-WRITE] SELECT completed\r\n")
    assert s(b"a5 FETCH 1:* UID") == b"* 1 FETCH (UID 1)\r\na5 OK FETCH completed\r\n"
    assert s(b"a6 UID FETCH 1:* UID") == b"a6 BAD Command rejected (injected fault)\r\n"


def test_starttls_refused(store):
    s = Session(store, {"on": "STARTTLS", "action": "reply", "status": "NO"},
                config=IMAPConfig(tls="starttls"), ctx=object())
    s.protocol.canStartTLS = True
    assert s(b"a1 STARTTLS") == b"a1 NO TLS not available\r\n"
    assert s(b"a2 LOGIN alice@example.test secret") == b"a2 OK LOGIN completed\r\n"


def test_a_reply_fault_can_close_the_connection_after_it(store):
    s = Session(store, {"on": "SELECT", "action": "reply", "status": "NO", "then": "close"}).login(None)
    assert s(b"a1 SELECT INBOX") == b"a1 NO [NONEXISTENT] No such mailbox\r\n"
    assert s.conn.closed


def test_bye_at_a_command(store):
    s = Session(store, {"on": "NOOP", "action": "reply", "status": "BYE"})
    assert s(b"a1 NOOP") == b"* BYE [UNAVAILABLE] Server shutting down (injected fault)\r\n"
    assert s.conn.closed
    assert s.journal.query("reply")[-1]["status"] == "BYE"


def _plain_fetch(store, line: bytes) -> bytes:
    return Session(store).login()(line)


def test_bye_in_the_middle_of_a_fetch(store):
    store.deliver(USER, RAW)
    full = _plain_fetch(store, b"a1 FETCH 1 BODY.PEEK[]")
    s = Session(store, {"on": "FETCH", "action": "bye_mid_fetch", "bytes": 30, "message": "down"}).login()
    assert s(b"a1 FETCH 1 BODY.PEEK[]") == full[:30] + b"\r\n* BYE down\r\n"
    assert s.conn.closed
    bye = s.journal.query("reply", status="BYE")
    assert bye[0]["after_bytes"] == 30 and bye[0]["command"] == "FETCH"
    s(b"a2 NOOP")
    assert s.conn.sent() == b""


def test_bye_mid_fetch_at_a_line_end_adds_no_blank_line(store):
    store.deliver(USER, RAW)
    s = Session(store, {"on": "FETCH", "action": "bye_mid_fetch", "bytes": 0}).login()
    assert s(b"a1 FETCH 1 UID") == b"* BYE [UNAVAILABLE] Connection lost during FETCH (injected fault)\r\n"


def test_a_literal_shorter_than_announced(store):
    store.deliver(USER, RAW)
    full = _plain_fetch(store, b"a1 FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER])")
    s = Session(store, {"on": "FETCH", "action": "short_literal", "missing": 4, "times": 1}).login()
    start = full.index(b"{%d}\r\n" % len(RAW)) + len(b"{%d}\r\n" % len(RAW))
    assert s(b"a1 FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER])") == full[:start + len(RAW) - 4] + full[start + len(RAW):]
    # The tap leaves with that command's tagged reply: the next FETCH is whole.
    assert s(b"a1 FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER])") == full


def test_short_literal_split_across_writes(store):
    store.deliver(USER, RAW)
    full = _plain_fetch(store, b"a1 FETCH 1 BODY.PEEK[]")
    s = Session(store, {"on": "FETCH", "action": "short_literal", "missing": len(RAW) + 50}).login()
    tap = imap.ResponseTap(s.conn.wrapper, s.protocol, b"a1", s.conn.engine.decide("imap", "FETCH", 1, {}))
    for i in range(len(full)):
        tap.write(full[i:i + 1])
    tap.finish()
    assert s.conn.sent() == full.replace(RAW, b"")


def test_append_overquota_and_trycreate_faults(store):
    s = Session(store, {"on": "APPEND", "action": "reply", "status": "NO", "times": 1},
                {"on": "APPEND", "action": "reply", "status": "NO", "message": "[TRYCREATE] Create it first"}).login()
    for tag, reply in ((b"a1", b"[OVERQUOTA] Quota exceeded"), (b"a2", b"[TRYCREATE] Create it first")):
        assert s(tag + b" APPEND INBOX {%d}" % len(RAW)) == b"+ Ready for %d octets of data\r\n" % len(RAW)
        assert s(RAW) == tag + b" NO " + reply + b"\r\n"
    assert store.mailbox(USER).messages == []


def test_silence_swallows_one_tagged_reply(store):
    store.deliver(USER, RAW)
    s = Session(store, {"on": "FETCH", "action": "silence", "times": 1}).login()
    assert s(b"a1 FETCH 1 UID") == b""
    assert s(b"a2 FETCH 1 UID") == b"* 1 FETCH (UID 1)\r\na2 OK FETCH completed\r\n"
    assert s.journal.query("reply", tag="a1")[0]["silenced"] is True


def test_idle_never_acknowledged(store):
    s = Session(store, {"on": "IDLE", "action": "idle_no_ack", "times": 1}).login()
    assert s(b"i1 IDLE") == b""
    store.deliver(USER, RAW)
    assert s.conn.sent() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    assert s(b"DONE") == b"i1 OK IDLE terminated\r\n"
    assert s(b"i2 IDLE") == b"+ idling\r\n"


def test_uidvalidity_changes_at_select(store):
    before = store.mailbox(USER).uid_validity
    s = Session(store, {"on": "SELECT", "action": "uidvalidity_change"}).login(None)
    reply = s(b"a1 SELECT INBOX")
    after = store.mailbox(USER).uid_validity
    assert after > before
    assert b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % after in reply
    assert s.journal.query("stored")[0]["uid_validity"] == after


def test_a_wire_reset_scoped_to_a_fetch(store):
    big = RAW + b"x" * 20000 + b"\r\n"
    store.deliver(USER, big)
    s = Session(store, {"on": "FETCH", "action": "reset", "bytes": 10240}).login()
    sent = s(b"a1 FETCH 1 BODY.PEEK[]")
    assert len(sent) == 10240 and sent.startswith(b"* 1 FETCH (BODY[] {%d}\r\n" % len(big))
    assert s.conn.aborted


def test_a_wire_delay_scoped_to_a_command_is_driven_by_the_clock(store):
    s = Session(store, {"on": "NOOP", "action": "delay", "seconds": 2.0})
    assert s(b"a1 NOOP") == b""
    s.clock.advance(2.0)
    assert s.conn.sent() == b"a1 OK NOOP No operation performed\r\n"


# -- extensions: UIDPLUS, MOVE, ID, ENABLE, UNSELECT, SPECIAL-USE, LITERAL+ ---------------------


def test_uidplus_appenduid_copyuid_and_uid_expunge(store):
    for _ in range(4):
        store.deliver(USER, RAW)
    s = Session(store).login()
    inbox, trash = validity(store), validity(store, "Trash")
    assert s(b"a1 APPEND Trash {%d}" % len(RAW)) == b"+ Ready for %d octets of data\r\n" % len(RAW)
    assert s(RAW) == b"a1 OK [APPENDUID %d 1] APPEND completed\r\n" % trash
    assert s(b"a2 COPY 2:4 Trash") == b"a2 OK [COPYUID %d 2:4 2:4] COPY completed\r\n" % trash
    assert s(b"a3 UID COPY 1,3 Trash") == b"a3 OK [COPYUID %d 1,3 5:6] COPY completed\r\n" % trash
    assert s(b"a4 COPY 9 Trash") == b"a4 OK COPY completed\r\n"     # nothing copied: no COPYUID
    assert s(b"a5 STORE 1:3 +FLAGS.SILENT (\\Deleted)") == b"a5 OK STORE completed\r\n"
    # Only the \Deleted messages among the UIDs go: 1 and 3, not 2 (outside the set), not 4 (not \Deleted).
    assert s(b"a6 UID EXPUNGE 1,3:4") == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\na6 OK UID EXPUNGE completed\r\n"
    assert [m.uid for m in store.mailbox(USER).messages] == [2, 4]
    assert s(b"a7 UID EXPUNGE") == b"a7 BAD Illegal syntax: UID EXPUNGE needs a UID set\r\n"
    assert s(b"a8 EXPUNGE 1") == b"a8 BAD Illegal syntax: EXPUNGE takes no arguments\r\n"
    assert s(b"a9 EXPUNGE") == b"* 1 EXPUNGE\r\na9 OK EXPUNGE completed\r\n"
    assert inbox == validity(store)


def test_move_says_copyuid_then_expunges_and_uid_move(store):
    for _ in range(3):
        store.deliver(USER, RAW)
    s = Session(store).login()
    archive = validity(store, "Archive")
    assert s(b"a1 MOVE 1:2 Archive") == (b"* OK [COPYUID %d 1:2 1:2] Moved\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
                                         b"a1 OK MOVE completed\r\n" % archive)
    assert s(b"a2 UID MOVE 3 Archive") == (b"* OK [COPYUID %d 3 3] Moved\r\n* 1 EXPUNGE\r\n"
                                           b"a2 OK MOVE completed\r\n" % archive)
    assert store.mailbox(USER).messages == []
    assert [m.raw for m in store.mailbox(USER, "Archive").messages] == [RAW] * 3
    assert s(b"a3 MOVE 1 Nowhere") == b"a3 NO [TRYCREATE] No such mailbox\r\n"
    assert s(b"a4 UID MOVE 7 Archive") == b"a4 OK MOVE completed\r\n"
    s(b"a5 EXAMINE Archive")
    assert s(b"a6 MOVE 1 INBOX") == b"a6 NO [READ-ONLY] Mailbox is read-only\r\n"


def test_id_enable_and_unselect(store):
    store.deliver(USER, RAW)
    s = Session(store)
    server_id = b'* ID ("name" "twisted-testbed" "vendor" "twisted-testbed")\r\n'
    assert s(b'a1 ID ("name" "pytest" "version" "1")') == server_id + b"a1 OK ID completed\r\n"
    assert s(b"a2 ID NIL") == server_id + b"a2 OK ID completed\r\n"
    assert s(b'a3 ID ("name")') == b"a3 BAD Illegal syntax: ID takes NIL or a list of field-value pairs\r\n"
    s.login(None)
    assert s(b"a4 ENABLE CONDSTORE UTF8=ACCEPT") == b"* ENABLED\r\na4 OK ENABLE completed\r\n"
    s(b"a5 SELECT INBOX")
    assert s(b"a6 STORE 1 +FLAGS.SILENT (\\Deleted)") == b"a6 OK STORE completed\r\n"
    assert s(b"a7 UNSELECT") == b"a7 OK UNSELECT completed\r\n"
    assert len(store.mailbox(USER).messages) == 1              # UNSELECT never expunges
    assert s(b"a8 FETCH 1 UID") == b"a8 BAD Unsupported command\r\n"
    assert s(b"a9 UNSELECT") == b"a9 BAD Unsupported command\r\n"


def test_special_use_mailboxes_exist_for_every_user_and_list_says_which(store):
    s = Session(store)
    assert s(b"L1 LOGIN bob@example.test hunter2") == b"L1 OK LOGIN completed\r\n"
    assert s(b'a1 LIST "" *') == (b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' + SPECIAL_USE_LIST
                                  + b"a1 OK LIST completed\r\n")
    assert s(b"a2 DELETE Junk") == b"a2 OK Mailbox deleted\r\n"
    assert s(b'a3 LIST "" Sent') == b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\na3 OK LIST completed\r\n'
    assert store.list_mailboxes("bob@example.test") == ["INBOX", "Archive", "Drafts", "Sent", "Trash"]
    Session(store).login(None)                                 # another user's login makes nothing of bob's
    assert "Junk" not in store.list_mailboxes("bob@example.test")


def test_literal_plus_needs_no_continuation(store):
    s = Session(store)
    # Each command, literals and all, in one write: no "+" in between.
    assert s(b"a1 LOGIN {18+}\r\nalice@example.test {6+}\r\nsecret") == b"a1 OK LOGIN completed\r\n"
    assert s(b"a2 APPEND Drafts (\\Draft) {%d+}\r\n" % len(RAW) + RAW) == (
        b"a2 OK [APPENDUID %d 1] APPEND completed\r\n" % validity(store, "Drafts"))
    assert s(b"a3 APPEND Drafts {3}") == b"+ Ready for 3 octets of data\r\n"   # a synchronizing literal still asks
    assert s(b"abc").startswith(b"a3 OK [APPENDUID")
    assert [m.raw for m in store.mailbox(USER, "Drafts").messages] == [RAW, b"abc"]


def test_the_literals_of_a_failed_command_are_not_taken_for_commands(store, monkeypatch):
    monkeypatch.setattr(imap, "MAX_LITERAL", 100)
    s = Session(store).login(None)
    # LOGIN is not valid once logged in: its two literals are dropped, not parsed as "a2 NOOP"s.
    assert s(b"a1 LOGIN {7+}\r\na2 NOOP {7+}\r\na2 NOOP") == b"a1 BAD Unsupported command\r\n"
    assert s(b"a3 APPEND INBOX {101+}\r\n" + b"a4 NOOP\r\n" * 11 + b"ab") == b"a3 NO [TOOBIG] Message too large\r\n"
    assert s(b"a5 NOOP") == b"a5 OK NOOP No operation performed\r\n"
    assert store.mailbox(USER).messages == []
    assert [e["size"] for e in s.journal.query("error") if e["error"] == "literal discarded"] == [7, 7, 101]
