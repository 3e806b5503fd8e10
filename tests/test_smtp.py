"""Unit tests of the SMTP server over a StringTransport and a Clock: sessions, limits, AUTH, faults, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest
from twisted.internet.task import Clock

from testbed import testing
from testbed.servers.smtp.spec import SMTPConfig
from testbed.mail.store import MailStore
from testbed.servers.smtp.server import build_factory

USERS = {"alice@example.test": "secret", "bob@example.test": "hunter2"}
GREETING = b"220 testbed.test ESMTP twisted-testbed\r\n"
EHLO_PLAIN = (b"250-testbed.test Hello 127.0.0.1\r\n"
              b"250-SIZE 10485760\r\n"
              b"250-PIPELINING\r\n"
              b"250-8BITMIME\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n"
              b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
EHLO_STARTTLS = EHLO_PLAIN.replace(b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n",
                                   b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 STARTTLS\r\n")
MESSAGE = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nbody line\r\n"


class FakeTLS:
    """Stands in for the run's ServerTLS: STARTTLS only needs a context factory to hand over."""

    context = object()

    def options(self, kind: str = "valid"):
        return self.context


class Session:
    """One client connection to a fresh factory; ``cmd`` sends a line and returns the reply bytes."""

    def __init__(self, rules=(), implicit: bool = False, accept_unknown: bool = True, **config):
        config.setdefault("tls", "none")
        self.config = SMTPConfig(**config)
        self.mail = MailStore(users=USERS, accept_unknown=accept_unknown)
        self.clock = Clock()
        self.factory = build_factory(self.config, self.mail, FakeTLS(), reactor=self.clock)
        self.conn = testing.connect(self.factory, "smtp", rules=testing.rules(*rules), clock=self.clock, tls=implicit)
        self.greeting = self.conn.sent()
        self.tls_started = []

    def cmd(self, line: bytes) -> bytes:
        self.conn.send(line + b"\r\n")
        return self.conn.sent()

    def send(self, data: bytes) -> bytes:
        self.conn.send(data)
        return self.conn.sent()

    def ehlo(self) -> bytes:
        return self.cmd(b"EHLO client.example.test")

    def envelope(self, mail_from=b"sender@example.test", *rcpts: bytes) -> None:
        assert self.cmd(b"MAIL FROM:<" + mail_from + b">") == b"250 2.1.0 Sender OK\r\n"
        for rcpt in rcpts or (b"alice@example.test",):
            assert self.cmd(b"RCPT TO:<" + rcpt + b">") == b"250 2.1.5 Recipient OK\r\n"

    def data(self, body: bytes = MESSAGE) -> bytes:
        assert self.cmd(b"DATA") == b"354 Continue\r\n"
        return self.send(body + b".\r\n")

    def allow_starttls(self) -> None:
        self.conn.transport.startTLS = lambda ctx, *a: self.tls_started.append(ctx)

    @property
    def messages(self):
        return self.factory.messages

    @property
    def closed(self) -> bool:
        return bool(self.conn.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        # StringTransport.abortConnection sets ``disconnected``, not ``aborted``
        return bool(getattr(self.conn.transport, "disconnected", False))

    def events(self, kind: str) -> list[dict]:
        return self.conn.journal.query(kind, server="smtp")


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def b64(text: str | bytes) -> bytes:
    return base64.b64encode(text.encode() if isinstance(text, str) else text)


# -- the normal session ------------------------------------------------------------------


def test_greeting_ehlo_helo():
    s = Session()
    assert s.greeting == GREETING
    assert s.ehlo() == EHLO_PLAIN
    assert s.cmd(b"HELO client") == b"250 testbed.test Hello 127.0.0.1\r\n"
    assert s.cmd(b"EHLO") == b"501 5.5.4 Syntax: EHLO hostname\r\n"


def test_ehlo_offers_starttls_until_tls_and_auth_as_configured():
    s = Session(tls="starttls", auth=["PLAIN"], max_message_size=1000)
    assert s.ehlo() == (b"250-testbed.test Hello 127.0.0.1\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                        b"250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n")
    implicit = Session(tls="starttls", implicit=True)
    assert implicit.ehlo() == EHLO_PLAIN  # already in TLS: no STARTTLS
    assert Session(auth=[]).ehlo() == EHLO_PLAIN.replace(b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n",
                                                         b"250 ENHANCEDSTATUSCODES\r\n")


def test_full_transaction_stores_exact_bytes_in_every_inbox():
    s = Session()
    s.ehlo()
    s.envelope(b"sender@example.test", b"alice@example.test", b"Carol@Elsewhere.test")
    body = b"no colon on the first line\r\n..leading dot\r\n.\r\nbare\nLF and 8bit \xe9\r\n\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    assert s.data(stuffed) == b"250 2.0.0 Delivery in progress\r\n"
    [m] = s.messages
    assert m.raw == body.replace(b"\r\n.\r\n", b"\r\n.\r\n")  # unstuffed: the client's bytes
    assert m.mail_from == "sender@example.test"
    assert m.rcpt_to == ["alice@example.test", "Carol@Elsewhere.test"]
    assert (m.conn, m.tls, m.auth_user, m.helo) == (1, False, None, "client.example.test")
    assert s.mail.mailbox("alice@example.test").messages[0].raw == body
    assert s.mail.mailbox("carol@elsewhere.test").messages[0].raw == body
    [stored] = s.events("stored")
    assert (stored["mail_from"], stored["rcpt"], stored["size"]) == ("sender@example.test", m.rcpt_to, len(body))


def test_message_is_parsed_and_dot_unstuffed():
    s = Session()
    s.ehlo()
    s.envelope()
    s.data(MESSAGE + b"..\r\n")
    [m] = s.messages
    assert m.raw == MESSAGE + b".\r\n"
    assert m.message["Subject"] == "hi"
    assert m.message.get_content() == "body line\r\n.\r\n"


def test_the_body_split_anywhere_gives_the_same_bytes():
    body = b".starts with a dot\r\nline\r\n\r\n..\r\nx.\r\n.\r\r\n\rend\r\n"
    stuffed = b"." + body.replace(b"\r\n.", b"\r\n..") + b".\r\nNOOP\r\n"
    chunkings = [[stuffed[i:i + 1] for i in range(len(stuffed))]]  # byte by byte
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stuffed)), rng.randrange(1, 8)))
        chunkings.append([stuffed[a:b] for a, b in zip([0] + cuts, cuts + [len(stuffed)])])
    for chunks in chunkings:
        s = Session()
        s.ehlo()
        s.envelope()
        assert s.cmd(b"DATA") == b"354 Continue\r\n"
        replies = b"".join(s.send(chunk) for chunk in chunks)
        assert replies == b"250 2.0.0 Delivery in progress\r\n250 2.0.0 Ok\r\n"
        assert [m.raw for m in s.messages] == [body]


def test_lines_longer_than_a_command_line_pass_whole_however_split():
    long_line = b"".join(b"%05d." % i for i in range(8000))  # 48,000 bytes, a dot every 6
    body = b"head\r\n" + long_line + b"\r\n." + long_line[:20000] + b"\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    rng = random.Random(3)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stuffed)), 12) + [stuffed.index(b"\r\n..") + 2, len(stuffed) - 4])
        chunks = [stuffed[a:b] for a, b in zip([0] + cuts, cuts + [len(stuffed)])]
        s = Session(max_message_size=200000)
        s.ehlo()
        s.envelope()
        s.cmd(b"DATA")
        assert b"".join(s.send(chunk) for chunk in chunks) == b"250 2.0.0 Delivery in progress\r\n"
        assert s.messages[0].raw == body


def test_a_client_that_sends_the_body_with_the_data_command():
    s = Session()
    s.ehlo()
    replies = s.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n" + MESSAGE + b".\r\nQUIT\r\n")
    assert replies == (b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Continue\r\n"
                       b"250 2.0.0 Delivery in progress\r\n221 2.0.0 Bye\r\n")
    assert s.messages[0].raw == MESSAGE


def test_empty_message_and_pipelined_transactions():
    s = Session()
    s.ehlo()
    replies = s.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert replies == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Continue\r\n"
    assert s.send(b".\r\nMAIL FROM:<x@y.test>\r\nRSET\r\nNOOP\r\n") == (
        b"250 2.0.0 Delivery in progress\r\n250 2.1.0 Sender OK\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")
    assert [(m.mail_from, m.raw) for m in s.messages] == [("", b"")]


def test_sequence_errors_and_unknown_commands():
    s = Session()
    s.ehlo()
    assert s.cmd(b"RCPT TO:<a@b.test>") == b"503 5.5.1 Must have sender before recipient\r\n"
    assert s.cmd(b"DATA") == b"503 5.5.1 Must have valid receiver and originator\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"250 2.1.0 Sender OK\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"503 5.5.1 Only one sender per message, please\r\n"
    assert s.cmd(b"MAIL nonsense") == b"503 5.5.1 Only one sender per message, please\r\n"
    assert s.cmd(b"RCPT TO:<a@@b>") == b"553 5.1.3 Too many @\r\n"
    assert s.cmd(b"XYZZY") == b"500 5.5.2 Command unrecognized\r\n"
    assert s.cmd(b"VRFY alice") == b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    assert s.cmd(b"QUIT") == b"221 2.0.0 Bye\r\n"
    assert s.closed


def test_bad_input_gets_error_replies_and_the_session_goes_on():
    s = Session()
    s.ehlo()
    assert s.cmd(b"") == b"500 5.5.2 Error: bad syntax\r\n"
    assert s.cmd(b"\xff\xfe\x00 garbage") == b"500 5.5.2 Command unrecognized\r\n"
    assert s.cmd(b"AUTH") == b"501 5.5.4 Syntax: AUTH mechanism\r\n"
    assert s.cmd(b"AUTH PLAIN " + b64("no-nuls-here")) == b"501 5.5.2 Malformed authentication response\r\n"
    assert s.cmd(b"AUTH CRAM-MD5").startswith(b"334 ")
    assert s.cmd(b64("onlyoneword")) == b"501 5.5.2 Malformed authentication response\r\n"
    assert s.cmd(b"NOOP " + b"x" * 20000) == b"500 5.5.6 Line too long\r\n"
    # an over-long partial line is dropped as it arrives, and its end is skipped
    assert s.send(b"y" * 20000) == b"500 5.5.6 Line too long\r\n"
    assert s.send(b"tail of it\r\nNOOP\r\n") == b"250 2.0.0 Ok\r\n"
    s.envelope()
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"
    assert len(s.messages) == 1 and not s.closed


def test_an_exception_in_a_command_is_answered_451_and_journaled(monkeypatch):
    s = Session()
    s.ehlo()
    monkeypatch.setattr(s.mail, "resolve_recipient", lambda address: 1 / 0)
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"250 2.1.0 Sender OK\r\n"
    assert s.cmd(b"RCPT TO:<c@d.test>") == b"451 4.3.0 Requested action aborted: local error in processing\r\n"
    assert [e["error"] for e in s.events("error")] == ["ZeroDivisionError: division by zero"]
    assert s.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"


def test_a_delivery_failure_is_451_not_a_bare_550(monkeypatch):
    s = Session()
    s.ehlo()
    s.envelope()
    monkeypatch.setattr(s.mail, "deliver", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    assert s.data() == b"451 4.3.0 Requested action aborted: local error in processing\r\n"
    assert s.messages == []
    assert "disk full" in s.events("error")[0]["error"]



def test_a_connection_lost_in_the_middle_of_data_stores_nothing():
    s = Session()
    s.ehlo()
    s.envelope()
    assert s.cmd(b"DATA") == b"354 Continue\r\n"
    assert s.send(b"Subject: cut short\r\n\r\nthe first line\r\n") == b""
    s.conn.drop()
    assert s.messages == [] and s.mail.all_messages() == []
    assert s.events("error") == []


def test_the_same_addresses_in_every_transaction_and_a_bad_one_refused_each_time():
    s = Session()
    s.ehlo()
    for _ in range(2):
        assert s.cmd(b"MAIL FROM:<a@b.test>") == b"250 2.1.0 Sender OK\r\n"
        assert s.cmd(b"RCPT TO:<a@@b>") == b"553 5.1.3 Too many @\r\n"
        assert s.cmd(b"RCPT TO:<alice@example.test>") == b"250 2.1.5 Recipient OK\r\n"
        assert s.cmd(b"RCPT TO:<Bob@Example.Test>") == b"250 2.1.5 Recipient OK\r\n"
        assert s.data() == b"250 2.0.0 Delivery in progress\r\n"
    assert [(m.mail_from, m.rcpt_to) for m in s.messages] == [
        ("a@b.test", ["alice@example.test", "Bob@Example.Test"])] * 2
    assert [m.user for m in s.mail.all_messages()] == ["alice@example.test", "bob@example.test"] * 2

# -- AUTH -------------------------------------------------------------------------------------


def test_auth_plain_initial_response_and_journal_hides_it():
    s = Session()
    s.ehlo()
    secret = plain("alice@example.test", "secret")
    assert s.cmd(b"AUTH PLAIN " + secret) == b"235 2.7.0 Authentication successful.\r\n"
    assert s.cmd(b"AUTH PLAIN " + secret) == b"503 5.5.1 Already authenticated\r\n"
    s.envelope()
    s.data()
    assert s.messages[0].auth_user == "alice@example.test"
    auth = [e for e in s.events("command") if e["command"] == "AUTH"]
    assert [e["arg"] for e in auth] == ["PLAIN", "PLAIN"]
    assert not any(secret.decode() in repr(e) for e in s.events("command") + s.events("reply"))


def test_auth_plain_challenge_then_response():
    s = Session()
    s.ehlo()
    assert s.cmd(b"AUTH PLAIN") == b"334 \r\n"
    assert s.cmd(plain("bob@example.test", "hunter2")) == b"235 2.7.0 Authentication successful.\r\n"


def test_auth_login():
    s = Session()
    s.ehlo()
    assert s.cmd(b"AUTH LOGIN") == b"334 " + b64("Username:") + b"\r\n"
    assert s.cmd(b64("alice@example.test")) == b"334 " + b64("Password:") + b"\r\n"
    assert s.cmd(b64("secret")) == b"235 2.7.0 Authentication successful.\r\n"
    s2 = Session()
    s2.ehlo()  # with the user name as initial response, as smtplib sends it
    assert s2.cmd(b"AUTH LOGIN " + b64("alice@example.test")) == b"334 " + b64("Password:") + b"\r\n"
    assert s2.cmd(b64("wrong")) == b"535 5.7.8 Authentication failed\r\n"


def test_auth_cram_md5_with_a_user_added_at_runtime():
    s = Session()
    s.mail.add_user("dave@example.test", "pa55")
    s.ehlo()
    reply = s.cmd(b"AUTH CRAM-MD5")
    assert reply.startswith(b"334 ") and reply.endswith(b"\r\n")
    challenge = base64.b64decode(reply[4:-2])
    assert challenge.startswith(b"<") and challenge.endswith(b"@testbed.test>")
    digest = hmac.new(b"pa55", challenge, hashlib.md5).hexdigest()
    assert s.cmd(b64(f"dave@example.test {digest}")) == b"235 2.7.0 Authentication successful.\r\n"


def test_auth_failures():
    s = Session(auth=["PLAIN", "LOGIN"])
    s.ehlo()
    assert s.cmd(b"AUTH PLAIN " + plain("alice@example.test", "nope")) == b"535 5.7.8 Authentication failed\r\n"
    assert s.cmd(b"AUTH PLAIN " + plain("nobody@example.test", "secret")) == b"535 5.7.8 Authentication failed\r\n"
    assert s.cmd(b"AUTH CRAM-MD5") == b"504 5.5.4 Unrecognized authentication type\r\n"
    assert s.cmd(b"AUTH LOGIN") == b"334 " + b64("Username:") + b"\r\n"
    assert s.cmd(b"*") == b"501 5.5.4 Authentication aborted\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"250 2.1.0 Sender OK\r\n"
    assert s.cmd(b"AUTH PLAIN") == b"503 5.5.1 AUTH not allowed during a mail transaction\r\n"


def test_require_auth():
    s = Session(require_auth=True)
    s.ehlo()
    for command in (b"MAIL FROM:<a@b.test>", b"RCPT TO:<alice@example.test>", b"DATA"):
        assert s.cmd(command) == b"530 5.7.0 Authentication required\r\n"
    s.cmd(b"AUTH PLAIN " + plain("alice@example.test", "secret"))
    s.envelope()
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"


# -- TLS -----------------------------------------------------------------------------------


def test_starttls_resets_the_session_and_drops_pipelined_commands():
    s = Session(tls="starttls")
    s.allow_starttls()
    s.ehlo()
    s.cmd(b"MAIL FROM:<a@b.test>")
    replies = s.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert replies == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.tls_started == [FakeTLS.context]
    assert s.ehlo() == EHLO_PLAIN  # no STARTTLS any more
    assert s.cmd(b"STARTTLS") == b"503 5.5.1 TLS already active\r\n"
    s.envelope()  # the MAIL from before TLS was forgotten
    s.data()
    assert s.messages[0].tls is True
    assert not [e for e in s.events("command") if "injected" in e["arg"]]


def test_starttls_not_offered():
    s = Session(tls="none")
    s.ehlo()
    assert s.cmd(b"STARTTLS") == b"502 5.5.1 STARTTLS not available\r\n"


def test_require_tls():
    s = Session(tls="starttls", require_tls=True)
    s.allow_starttls()
    assert s.ehlo() == EHLO_STARTTLS.replace(b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n", b"")
    for command in (b"MAIL FROM:<a@b.test>", b"AUTH PLAIN " + plain("alice@example.test", "secret"), b"VRFY a"):
        assert s.cmd(command) == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    assert s.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
    assert s.cmd(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.ehlo() == EHLO_PLAIN
    s.envelope()
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"


def test_implicit_tls_connection_is_tls():
    s = Session(implicit=True)
    s.ehlo()
    s.envelope()
    s.data()
    assert s.messages[0].tls is True


# -- limits ------------------------------------------------------------------------------


def test_size_declared_at_mail():
    s = Session(max_message_size=100)
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=101") == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME") == b"250 2.1.0 Sender OK\r\n"


def test_size_exceeded_after_data_is_552_and_not_stored():
    s = Session(max_message_size=100)
    s.ehlo()
    s.envelope()
    assert s.data(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
    s.envelope()
    assert s.data(b"x" * 98 + b"\r\n") == b"250 2.0.0 Delivery in progress\r\n"  # exactly the limit
    assert [m.size for m in s.messages] == [100]


def test_a_line_longer_than_the_limit_in_data_is_552_and_the_dot_still_ends_it():
    s = Session(max_message_size=20000)
    s.ehlo()
    s.envelope()
    assert s.cmd(b"DATA") == b"354 Continue\r\n"
    assert s.send(b"z" * 30000) == b""
    assert s.send(b"z" * 30000 + b"\r\nmore\r\n.\r\nNOOP\r\n") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n")
    assert s.messages == []


def test_max_recipients():
    s = Session(max_recipients=2)
    s.ehlo()
    s.envelope(b"a@b.test", b"r1@example.test", b"r2@example.test")
    assert s.cmd(b"RCPT TO:<r3@example.test>") == b"452 4.5.3 Too many recipients\r\n"
    s.data()
    assert s.messages[0].rcpt_to == ["r1@example.test", "r2@example.test"]


def test_unknown_recipient_refused_when_not_accepting_unknown():
    s = Session(accept_unknown=False)
    s.ehlo()
    s.cmd(b"MAIL FROM:<a@b.test>")
    assert s.cmd(b"RCPT TO:<nobody@example.test>") == (
        b"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n")
    assert s.cmd(b"RCPT TO:<Alice@Example.test>") == b"250 2.1.5 Recipient OK\r\n"


def test_idle_timeout_through_the_clock():
    s = Session()
    s.clock.advance(599)
    assert s.conn.sent() == b"" and not s.closed
    s.clock.advance(2)
    assert s.conn.sent() == b"421 4.3.0 testbed.test Error: timeout exceeded\r\n"
    assert s.closed


# -- faults: greeting -------------------------------------------------------------------------


def test_fault_connect_421_closes():
    s = Session([{"server": "smtp", "on": "connect", "action": "reply", "code": 421}])
    assert s.greeting == b"421 4.3.2 Service not available, closing transmission channel\r\n"
    assert s.closed


def test_fault_connect_554_then_503_until_quit():
    s = Session([{"server": "smtp", "on": "connect", "action": "reply", "code": 554,
                  "message": "5.7.1 No SMTP service for you"}])
    assert s.greeting == b"554 5.7.1 No SMTP service for you\r\n"
    assert not s.closed
    assert s.ehlo() == b"503 5.5.1 Bad sequence of commands\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"503 5.5.1 Bad sequence of commands\r\n"
    assert s.cmd(b"QUIT") == b"221 2.0.0 Bye\r\n"
    assert s.closed


def test_fault_connect_silence():
    s = Session([{"server": "smtp", "on": "connect", "action": "silence"}])
    assert s.greeting == b""
    assert s.ehlo() == b"" and not s.closed


# -- faults: one stage at a time ----------------------------------------------------------------


def test_fault_ehlo_5xx_then_helo_works():
    s = Session([{"server": "smtp", "on": "EHLO", "action": "reply", "code": 502, "message": "5.5.1 EHLO not here"}])
    assert s.ehlo() == b"502 5.5.1 EHLO not here\r\n"
    assert s.cmd(b"HELO client") == b"250 testbed.test Hello 127.0.0.1\r\n"
    s.envelope()
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"


def test_fault_helo_match_on_helo_name():
    s = Session([{"server": "smtp", "on": "HELO", "match": {"helo": "bad*"}, "action": "reply", "code": 550}])
    assert s.cmd(b"HELO bad.example") == b"550 5.1.1 Requested action not taken: mailbox unavailable\r\n"
    assert s.cmd(b"HELO good.example") == b"250 testbed.test Hello 127.0.0.1\r\n"


def test_fault_starttls_454():
    s = Session([{"server": "smtp", "on": "STARTTLS", "action": "reply", "code": 454}], tls="starttls")
    s.allow_starttls()
    s.ehlo()
    assert s.cmd(b"STARTTLS") == b"454 4.7.0 Temporary failure, try again later\r\n"
    assert s.tls_started == []
    assert s.ehlo() == EHLO_STARTTLS  # still offered: the client may try again


@pytest.mark.parametrize("code, expected", [
    (535, b"535 5.7.8 Authentication credentials invalid\r\n"),
    (454, b"454 4.7.0 Temporary failure, try again later\r\n"),
    (534, b"534 5.7.9 Authentication mechanism is too weak\r\n"),
    (538, b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
])
def test_fault_auth(code, expected):
    s = Session([{"server": "smtp", "on": "AUTH", "match": {"user": "alice@*", "mechanism": "PLAIN"},
                  "action": "reply", "code": code, "times": 1}])
    s.ehlo()
    assert s.cmd(b"AUTH PLAIN " + plain("alice@example.test", "secret")) == expected
    assert s.cmd(b"AUTH PLAIN " + plain("alice@example.test", "secret")) == b"235 2.7.0 Authentication successful.\r\n"


def test_fault_auth_matches_the_user_of_a_login_exchange():
    s = Session([{"server": "smtp", "on": "AUTH", "match": {"user": "bob@*"}, "action": "reply", "code": 535}])
    s.ehlo()
    s.cmd(b"AUTH LOGIN")
    s.cmd(b64("bob@example.test"))
    assert s.cmd(b64("hunter2")) == b"535 5.7.8 Authentication credentials invalid\r\n"
    s.cmd(b"AUTH LOGIN")
    s.cmd(b64("alice@example.test"))
    assert s.cmd(b64("secret")) == b"235 2.7.0 Authentication successful.\r\n"


@pytest.mark.parametrize("code", [451, 452, 550, 553])
def test_fault_mail(code):
    s = Session([{"server": "smtp", "on": "MAIL", "match": {"mail_from": "*@spam.test"}, "action": "reply",
                  "code": code, "message": f"{code // 100}.7.1 go away"}])
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<x@spam.test>") == b"%d %d.7.1 go away\r\n" % (code, code // 100)
    assert s.cmd(b"RCPT TO:<alice@example.test>") == b"503 5.5.1 Must have sender before recipient\r\n"
    s.envelope(b"ok@fine.test")
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"


def test_fault_mail_matches_size():
    s = Session([{"server": "smtp", "on": "MAIL", "match": {"size": 5000}, "action": "reply", "code": 452}])
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=5000") == b"452 4.3.1 Insufficient system storage\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=4999") == b"250 2.1.0 Sender OK\r\n"


@pytest.mark.parametrize("code", [450, 451, 452, 550, 551, 553])
def test_fault_rcpt_refuses_only_matching_recipients(code):
    s = Session([{"server": "smtp", "on": "RCPT", "match": {"rcpt": "*@bounce.test"}, "action": "reply",
                  "code": code}])
    s.ehlo()
    s.cmd(b"MAIL FROM:<a@b.test>")
    replies = s.send(b"RCPT TO:<one@bounce.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<two@BOUNCE.test>\r\n")
    lines = replies.split(b"\r\n")[:-1]
    assert lines[1] == b"250 2.1.5 Recipient OK"
    assert lines[0] == lines[2] and lines[0].startswith(b"%d %d." % (code, code // 100))
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"
    assert s.messages[0].rcpt_to == ["alice@example.test"]
    assert not s.mail.has_user("one@bounce.test")


def test_fault_data_554_ends_the_transaction():
    s = Session([{"server": "smtp", "on": "DATA", "action": "reply", "code": 554, "times": 1}])
    s.ehlo()
    s.envelope()
    assert s.cmd(b"DATA") == b"554 5.3.0 Transaction failed\r\n"
    assert s.cmd(b"DATA") == b"503 5.5.1 Must have valid receiver and originator\r\n"
    s.envelope()  # a new MAIL without RSET, as smtplib does
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"


@pytest.mark.parametrize("code", [451, 452, 552, 554])
def test_fault_after_the_final_dot_is_not_stored(code):
    s = Session([{"server": "smtp", "on": "message", "action": "reply", "code": code, "times": 1}])
    s.ehlo()
    s.envelope()
    reply = s.data()
    assert reply.startswith(b"%d %d." % (code, code // 100)) and reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
    assert s.messages == [] and s.mail.mailbox("alice@example.test").messages == []
    assert s.events("stored") == []
    s.envelope()
    assert s.data() == b"250 2.0.0 Delivery in progress\r\n"
    assert len(s.messages) == 1


def test_fault_message_matches_size_and_rcpt():
    s = Session([{"server": "smtp", "on": "message", "match": {"rcpt": "*@big.test", "size": len(MESSAGE)},
                  "action": "reply", "code": 552}])
    s.ehlo()
    s.envelope(b"a@b.test", b"alice@example.test", b"x@big.test")
    assert s.data().startswith(b"552 ")
    s.envelope(b"a@b.test", b"alice@example.test")
    assert s.data().startswith(b"250 ")


def test_fault_message_silence_not_stored():
    s = Session([{"server": "smtp", "on": "message", "action": "silence"}])
    s.ehlo()
    s.envelope()
    assert s.data() == b""
    assert s.cmd(b"NOOP") == b""  # the server is hung on this message
    assert s.messages == [] and not s.closed


def test_fault_message_reply_then_reset():
    s = Session([{"server": "smtp", "on": "message", "action": "reply", "code": 451, "then": "reset"}])
    s.ehlo()
    s.envelope()
    assert s.data() == b"451 4.3.0 Requested action aborted: local error in processing\r\n"
    assert s.aborted and s.messages == []


def test_fault_message_250_then_reset_is_stored():
    s = Session([{"server": "smtp", "on": "message", "action": "reply", "code": 250, "message": "2.0.0 queued",
                  "then": "reset"}])
    s.ehlo()
    s.envelope()
    assert s.data() == b"250 2.0.0 queued\r\n"
    assert s.aborted and len(s.messages) == 1


def test_fault_then_close_and_then_stall():
    s = Session([{"server": "smtp", "on": "RCPT", "action": "reply", "code": 450, "then": "close"}])
    s.ehlo()
    s.cmd(b"MAIL FROM:<a@b.test>")
    assert s.send(b"RCPT TO:<alice@example.test>\r\nDATA\r\n") == b"450 4.2.1 Mailbox unavailable, try again later\r\n"
    assert s.closed and not s.aborted
    s = Session([{"server": "smtp", "on": "MAIL", "action": "reply", "code": 451, "then": "stall"}])
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b"451 4.3.0 Requested action aborted: local error in processing\r\n"
    assert s.cmd(b"QUIT") == b"" and not s.closed


@pytest.mark.parametrize("stage, line", [
    ("EHLO", b"EHLO x"), ("HELO", b"HELO x"), ("STARTTLS", b"STARTTLS"), ("MAIL", b"MAIL FROM:<a@b.test>"),
    ("RCPT", b"RCPT TO:<alice@example.test>"), ("DATA", b"DATA"), ("RSET", b"RSET"), ("NOOP", b"NOOP"),
    ("VRFY", b"VRFY alice"), ("QUIT", b"QUIT"), ("AUTH", b"AUTH PLAIN " + plain("alice@example.test", "secret")),
])
def test_fault_421_at_any_stage_closes(stage, line):
    s = Session([{"server": "smtp", "on": stage, "action": "reply", "code": 421, "message": "4.3.2 shutting down"}],
                tls="starttls")
    s.allow_starttls()
    if stage not in ("EHLO", "HELO"):
        s.ehlo()
    if stage in ("RCPT", "DATA"):
        s.cmd(b"MAIL FROM:<a@b.test>")
    if stage == "DATA":
        s.cmd(b"RCPT TO:<alice@example.test>")
    assert s.send(line + b"\r\nNOOP\r\n") == b"421 4.3.2 shutting down\r\n"
    assert s.closed and not s.aborted


@pytest.mark.parametrize("stage, line, normal", [
    ("RSET", b"RSET", b"250 2.0.0 Ok\r\n"),
    ("NOOP", b"NOOP", b"250 2.0.0 Ok\r\n"),
    ("VRFY", b"VRFY alice", b"252 "),
    ("QUIT", b"QUIT", b"221 2.0.0 Bye\r\n"),
])
def test_fault_reply_and_silence_at_the_small_commands(stage, line, normal):
    s = Session([{"server": "smtp", "on": stage, "action": "reply", "code": 500, "message": "5.5.1 nope",
                  "times": 1}])
    s.ehlo()
    assert s.cmd(line) == b"500 5.5.1 nope\r\n"
    assert s.cmd(line).startswith(normal)
    s = Session([{"server": "smtp", "on": stage, "action": "silence"}])
    s.ehlo()
    assert s.cmd(line) == b""


# -- wire actions scoped to a stage --------------------------------------------------------------


def test_wire_stall_at_data_comes_after_the_354():
    s = Session([{"server": "smtp", "on": "DATA", "action": "stall"}])
    s.ehlo()
    s.envelope()
    assert s.cmd(b"DATA") == b"354 Continue\r\n"
    assert s.send(MESSAGE + b".\r\n") == b""  # stored, but the 250 goes into the black hole
    assert not s.closed


def test_wire_reset_after_the_final_dot_is_not_stored():
    s = Session([{"server": "smtp", "on": "message", "action": "reset"}])
    s.ehlo()
    s.envelope()
    assert s.data() == b""
    assert s.aborted and s.messages == []


def test_wire_delay_at_mail_holds_the_reply_on_the_clock():
    s = Session([{"server": "smtp", "on": "MAIL", "action": "delay", "seconds": 2.0}])
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<a@b.test>") == b""
    s.clock.advance(1.9)
    assert s.conn.sent() == b""
    s.clock.advance(0.2)
    assert s.conn.sent() == b"250 2.1.0 Sender OK\r\n"


def test_wire_delay_at_message_still_stores():
    s = Session([{"server": "smtp", "on": "message", "action": "delay", "seconds": 1.0}])
    s.ehlo()
    s.envelope()
    assert s.data() == b""
    assert len(s.messages) == 1
    s.clock.advance(1.0)
    assert s.conn.sent() == b"250 2.0.0 Delivery in progress\r\n"


def test_faults_are_journaled_with_their_stage():
    s = Session([{"server": "smtp", "on": "RCPT", "action": "reply", "code": 550}])
    s.ehlo()
    s.cmd(b"MAIL FROM:<a@b.test>")
    s.cmd(b"RCPT TO:<alice@example.test>")
    [fault] = s.conn.journal.faults("smtp")
    assert (fault["on"], fault["action"], fault["attributes"]["rcpt"]) == ("RCPT", "reply", "alice@example.test")
    # The reply is folded into its command's event.
    assert (s.events("command")[-1]["command"], s.events("command")[-1]["code"]) == ("RCPT", 550)


def test_random_garbage_never_escapes_as_an_exception():
    """Seeded noise from SMTP words and bytes: every line gets a reply or is part of a body; nothing raises."""
    words = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"VRFY", b"QUIT", b"AUTH",
             b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"STARTTLS", b".", b"", b"*", b"<>", b"<a@b>",
             b"\xff\xfe", b"\x00", b"SIZE=99999999999999999999999", b'<"q"@x>', b"@@", b"<a@b.test> SIZE=10",
             b"BODY=8BITMIME", b"AGFsaWNlAHNlY3JldA==", b"\xc3\xa9@x.test"]
    rng = random.Random(1234)
    for _ in range(100):
        s = Session(tls="starttls", max_message_size=200, max_recipients=3)
        s.allow_starttls()
        for _ in range(60):
            line = b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 4)))
            if rng.random() < 0.1:
                line += bytes(rng.randrange(256) for _ in range(rng.randrange(10)))
            s.conn.send(line + rng.choice([b"\r\n", b"\r\n", b"\n", b"\r\n\r\n"]))
        assert s.events("error") == []
