"""The POP3 server byte for byte over a StringTransport and a Clock: the session, bad input and every fault."""

from __future__ import annotations

import base64
import re
from hashlib import md5

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from testbed import testing
from testbed.servers.pop3.spec import POP3Config
from testbed.faults.engine import FaultEngine
from testbed.journal import COMMAND, REPLY, Journal
from testbed.mail.store import MailStore
from testbed.servers.pop3 import server as pop3

ALICE, BOB = "alice@example.test", "bob@example.test"
NOW = 1_700_000_000
#: A CRLF message whose body starts a line with a dot, and a bare-LF one.
MSG1 = b"From: a@example.org\r\nSubject: one\r\n\r\n.leading dot\r\nbody\r\n"
MSG2 = b"Subject: two\n\nbare\n.dot\nend"
WIRE1 = b"From: a@example.org\r\nSubject: one\r\n\r\n..leading dot\r\nbody\r\n"
WIRE2 = b"Subject: two\r\n\r\nbare\r\n..dot\r\nend"
SIZE1, SIZE2 = len(MSG1), len(MSG2) + 4  # bare LFs count as CRLF
UIDS = (f"{NOW}.1", f"{NOW}.2")


class FakeTLS:
    """Stands for ``ServerTLS``: hands out a marker context factory."""

    def options(self, kind: str = "valid"):
        return ("context", kind)


@pytest.fixture
def store():
    store = MailStore(users={ALICE: "secret", BOB: "hunter2"}, clock=lambda: NOW)
    store.deliver(ALICE, MSG1)
    store.deliver(ALICE, MSG2)
    return store


class Client:
    """One connection to the POP3 factory: send a line, get exactly what the server wrote."""

    def __init__(self, conn: testing.Connection):
        self.conn = conn
        self.greeting = conn.sent()

    @property
    def protocol(self) -> pop3.TestbedPOP3:
        return self.conn.protocol

    def pump(self) -> None:
        """Run a registered pull producer (a RETR/TOP stream) to its end, as a socket would."""
        for _ in range(10_000):
            producer = self.conn.transport.producer
            if producer is None:
                return
            producer.resumeProducing()
        raise AssertionError("the message stream never finished")

    def send(self, data: bytes) -> bytes:
        self.conn.send(data)
        self.pump()
        return self.conn.sent()

    def __call__(self, line: str | bytes) -> bytes:
        return self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")

    def login(self, user: str = ALICE, password: str = "secret") -> None:
        assert self(f"USER {user}") == b"+OK send PASS\r\n"
        assert self(f"PASS {password}").startswith(b"+OK ")

    def drop(self) -> None:
        """The client goes away without QUIT."""
        self.conn.wrapper.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def bed(store):
    """Opens clients on one factory, one clock, one journal and one fault engine."""

    class Bed:
        clock = Clock()
        journal = Journal(clock=clock.seconds)
        engine = testing.engine(0, journal)
        log = pop3.POP3Log()

        def factory(self, implicit: bool = False, **config):
            return pop3.build_factory(POP3Config(**config), store, FakeTLS(), self.clock, implicit_tls=implicit,
                                      log=self.log)

        def connect(self, *rules: dict, implicit: bool = False, **config) -> Client:
            for rule in testing.rules(*rules):
                self.engine.add(rule)
            conn = testing.connect(self.factory(implicit, **config), "pop3", clock=self.clock,
                                   journal=self.journal, engine=self.engine, tls=implicit)
            return Client(conn)

    return Bed()


def fault(on: str, action: str, **params) -> dict:
    return dict(server="pop3", on=on, action=action, **params)


# -- the normal session ------------------------------------------------------------------------


def test_greeting_carries_the_apop_timestamp(bed):
    client = bed.connect()
    magic = client.protocol.magic
    assert re.fullmatch(rb"<\d+\.\d+\.0@testbed\.test>", magic)
    assert client.greeting == b"+OK testbed.test POP3 server ready " + magic + b"\r\n"
    assert bed.connect().protocol.magic != magic


def test_capa_is_honest(bed):
    client = bed.connect()
    common = b"TOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\n"
    assert client("CAPA") == (b"+OK capability list follows\r\n" + common
                              + b"STLS\r\nIMPLEMENTATION twisted-testbed\r\n.\r\n")
    client.login()
    assert client("CAPA") == b"+OK capability list follows\r\n" + common + b"IMPLEMENTATION twisted-testbed\r\n.\r\n"
    no_stls = b"+OK capability list follows\r\n" + common + b"IMPLEMENTATION twisted-testbed\r\n.\r\n"
    assert bed.connect(tls="none")("CAPA") == no_stls
    assert bed.connect(implicit=True)("CAPA") == no_stls


def test_a_whole_session_byte_for_byte(bed, store):
    client = bed.connect()
    assert client("USER alice@example.test") == b"+OK send PASS\r\n"
    assert client("PASS secret") == b"+OK alice@example.test has 2 messages (%d octets)\r\n" % (SIZE1 + SIZE2)
    assert client("STAT") == b"+OK 2 %d\r\n" % (SIZE1 + SIZE2)
    assert client("LIST") == b"+OK 2 messages (%d octets)\r\n1 %d\r\n2 %d\r\n.\r\n" % (SIZE1 + SIZE2, SIZE1, SIZE2)
    assert client("LIST 2") == b"+OK 2 %d\r\n" % SIZE2
    assert client("UIDL") == f"+OK unique-id listing follows\r\n1 {UIDS[0]}\r\n2 {UIDS[1]}\r\n.\r\n".encode()
    assert client("UIDL 1") == f"+OK 1 {UIDS[0]}\r\n".encode()
    assert client("RETR 1") == b"+OK %d octets\r\n" % SIZE1 + WIRE1 + b".\r\n"
    assert client("RETR 2") == b"+OK %d octets\r\n" % SIZE2 + WIRE2 + b"\r\n.\r\n"
    assert client("TOP 1 0") == b"+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n"
    assert client("TOP 1 1") == (b"+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n"
                                 b"..leading dot\r\n.\r\n")
    assert client("TOP 2 99") == b"+OK top of message follows\r\n" + WIRE2 + b"\r\n.\r\n"
    assert client("NOOP") == b"+OK\r\n"
    assert client("DELE 1") == b"+OK message 1 deleted\r\n"
    assert client("STAT") == b"+OK 1 %d\r\n" % SIZE2
    assert client("LIST") == b"+OK 1 message (%d octets)\r\n2 %d\r\n.\r\n" % (SIZE2, SIZE2)
    assert client("UIDL") == f"+OK unique-id listing follows\r\n2 {UIDS[1]}\r\n.\r\n".encode()
    assert client("RETR 1") == b"-ERR message 1 already deleted\r\n"
    assert client("RSET") == b"+OK maildrop has 2 messages (%d octets)\r\n" % (SIZE1 + SIZE2)
    assert client("DELE 2") == b"+OK message 2 deleted\r\n"
    assert client("QUIT") == b"+OK testbed.test POP3 server signing off (1 message deleted)\r\n"
    assert client.conn.closed
    assert [m.raw for m in store.mailbox(ALICE).messages] == [MSG1]
    [session] = bed.log.sessions
    assert (session.user, session.method, session.retrieved, session.committed, session.quit) == (
        ALICE, "USER", [1, 2], [2], True)
    assert [(r.number, r.complete, r.top) for r in bed.log.retrievals] == [
        (1, True, None), (2, True, None), (1, True, 0), (1, True, 1), (2, True, 99)]


def test_quit_before_login_says_goodbye(bed):
    client = bed.connect()
    assert client("QUIT") == b"+OK testbed.test POP3 server signing off\r\n"
    assert client.conn.closed


def test_deletions_are_committed_on_quit_only(bed, store):
    client = bed.connect()
    client.login()
    assert client("DELE 1") == b"+OK message 1 deleted\r\n"
    client.drop()
    assert len(store.mailbox(ALICE).messages) == 2  # dropped without QUIT: nothing committed
    client = bed.connect()
    client.login()
    client("DELE 1")
    client("QUIT")
    assert [m.raw for m in store.mailbox(ALICE).messages] == [MSG2]


def test_uidl_is_stable_across_sessions_and_deletions(bed):
    first = bed.connect()
    first.login()
    listing = first("UIDL")
    first("DELE 1")
    first("QUIT")
    first.drop()
    second = bed.connect()
    second.login()
    assert listing == f"+OK unique-id listing follows\r\n1 {UIDS[0]}\r\n2 {UIDS[1]}\r\n.\r\n".encode()
    assert second("UIDL") == f"+OK unique-id listing follows\r\n1 {UIDS[1]}\r\n.\r\n".encode()


def test_uidl_survives_reopening_a_maildir(tmp_path):
    def uidl():
        store = MailStore(maildir=str(tmp_path), users={ALICE: "secret"})
        if not store.mailbox(ALICE).messages:
            store.deliver(ALICE, MSG1)
        client = Client(testing.connect(pop3.build_factory(POP3Config(), store, FakeTLS(), Clock()), "pop3"))
        client.login()
        return client("UIDL")

    assert uidl() == uidl()


def test_messages_are_streamed_in_chunks_and_stuffed_across_them():
    lines = [b".line %06d with a leading dot" % i if i % 3 == 0 else b"line %06d" % i for i in range(20_000)]
    raw = b"Subject: big\n\n" + b"\n".join(lines) + b"\n"
    store = MailStore(users={ALICE: "secret"})
    store.deliver(ALICE, raw)
    client = Client(testing.connect(pop3.build_factory(POP3Config(), store, FakeTLS(), Clock()), "pop3"))
    client.login()
    client.conn.send(b"RETR 1\r\n")
    writes = 0
    while client.conn.transport.producer is not None:
        client.conn.transport.producer.resumeProducing()
        writes += 1
    assert writes > 3  # streamed by FileSender, not written whole
    crlf = raw.replace(b"\n", b"\r\n")
    stuffed = re.sub(rb"(?m)^\.", b"..", crlf)
    assert client.conn.sent() == b"+OK %d octets\r\n" % len(crlf) + stuffed + b".\r\n"


def test_pipelined_commands_are_answered_in_order(bed):
    client = bed.connect()
    out = client.send(b"USER alice@example.test\r\nPASS secret\r\nRETR 1\r\nSTAT\r\n"
                      b"RETR 2\r\nBOGUS\r\nNOOP\r\nQUIT\r\n")
    assert out == (b"+OK send PASS\r\n"
                   + b"+OK alice@example.test has 2 messages (%d octets)\r\n" % (SIZE1 + SIZE2)
                   + b"+OK %d octets\r\n" % SIZE1 + WIRE1 + b".\r\n"
                   + b"+OK 2 %d\r\n" % (SIZE1 + SIZE2)
                   + b"+OK %d octets\r\n" % SIZE2 + WIRE2 + b"\r\n.\r\n"
                   + b"-ERR unknown command\r\n"
                   + b"+OK\r\n"
                   + b"+OK testbed.test POP3 server signing off (0 messages deleted)\r\n")


# -- authentication and the lock ----------------------------------------------------------------------


def test_wrong_password_unknown_user_and_pass_without_user(bed):
    client = bed.connect()
    assert client("PASS secret") == b"-ERR USER first\r\n"
    client("USER alice@example.test")
    assert client("PASS wrong") == b"-ERR [AUTH] authentication failed\r\n"
    client("USER nobody@example.test")
    assert client("PASS secret") == b"-ERR [AUTH] authentication failed\r\n"
    client("USER ../../etc")
    assert client("PASS secret") == b"-ERR [AUTH] authentication failed\r\n"
    assert client("STAT") == b"-ERR command not valid in this state\r\n"
    client("USER ALICE@example.test")  # user names are case-insensitive
    assert client("PASS secret").startswith(b"+OK alice@example.test has 2")


def test_passwords_may_hold_spaces_and_users_added_at_runtime_log_in(bed, store):
    store.add_user("carol@example.test", "two words")
    client = bed.connect()
    client("USER carol@example.test")
    assert client("PASS two words") == b"+OK carol@example.test has 0 messages (0 octets)\r\n"


def test_apop(bed):
    client = bed.connect()
    digest = md5(client.protocol.magic + b"secret").hexdigest()
    assert client(f"APOP alice@example.test {digest}") == (
        b"+OK alice@example.test has 2 messages (%d octets)\r\n" % (SIZE1 + SIZE2))
    assert bed.log.sessions[0].method == "APOP"
    other = bed.connect()
    assert other(f"APOP bob@example.test {digest}") == b"-ERR [AUTH] authentication failed\r\n"
    assert other("APOP bob@example.test") == b"-ERR syntax error: APOP takes 2 arguments\r\n"


def test_sasl_plain(bed):
    token = base64.b64encode(b"\x00alice@example.test\x00secret").decode()
    client = bed.connect()
    assert client("AUTH") == b"+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
    assert client("AUTH CRAM-MD5") == b"-ERR unsupported SASL mechanism\r\n"
    assert client("AUTH PLAIN") == b"+ \r\n"
    assert client("*") == b"-ERR AUTH cancelled\r\n"
    assert client("AUTH PLAIN") == b"+ \r\n"
    assert client("not base64!") == b"-ERR [AUTH] malformed SASL PLAIN response\r\n"
    as_bob = base64.b64encode(b"bob@example.test\x00alice@example.test\x00secret").decode()
    assert client(f"AUTH PLAIN {as_bob}") == b"-ERR [AUTH] cannot act as another user\r\n"
    wrong = base64.b64encode(b"\x00alice@example.test\x00nope").decode()
    assert client(f"AUTH PLAIN {wrong}") == b"-ERR [AUTH] authentication failed\r\n"
    assert client(f"AUTH PLAIN {token}").startswith(b"+OK alice@example.test has 2 messages")
    second = bed.connect()
    second("AUTH PLAIN")
    assert second(token) == b"-ERR [IN-USE] maildrop already locked by another session\r\n"
    assert bed.log.sessions[0].method == "SASL PLAIN"


def test_a_second_login_to_a_locked_maildrop_is_in_use_until_the_first_leaves(bed):
    first = bed.connect()
    first.login()
    second = bed.connect()
    second("USER alice@example.test")
    assert second("PASS secret") == b"-ERR [IN-USE] maildrop already locked by another session\r\n"
    bob = bed.connect()
    bob.login(BOB, "hunter2")  # another maildrop is not locked
    first("QUIT")
    first.drop()
    second("USER alice@example.test")
    assert second("PASS secret").startswith(b"+OK alice@example.test has 2 messages")


def test_a_store_reset_does_not_let_an_old_session_free_a_new_lock(bed, store):
    old = bed.connect()
    old.login()
    old("DELE 1")
    store.reset()  # between tests: locks released, INBOXes emptied
    new = bed.connect()
    new.login()
    old("QUIT")
    old.drop()  # the old session must neither unlock the new session's maildrop nor touch the new INBOX
    third = bed.connect()
    third("USER alice@example.test")
    assert third("PASS secret") == b"-ERR [IN-USE] maildrop already locked by another session\r\n"


# -- STLS ---------------------------------------------------------------------------------------------


def _with_starttls(client: Client) -> list:
    calls = []
    client.conn.transport.startTLS = lambda ctx, normal=True: calls.append(ctx)
    return calls


def test_stls_starts_tls_and_forgets_what_was_pipelined(bed):
    client = bed.connect()
    calls = _with_starttls(client)
    client("USER alice@example.test")
    assert client.send(b"STLS\r\nPASS secret\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert calls == [("context", "valid")]
    assert client("STLS") == b"-ERR TLS already active\r\n"
    assert b"STLS" not in client("CAPA")
    assert client("PASS secret") == b"-ERR USER first\r\n"  # the USER before STLS is forgotten too
    client.login()
    assert bed.log.sessions[0].tls is True


def test_stls_is_refused_after_login_in_tls_or_when_not_configured(bed):
    client = bed.connect()
    _with_starttls(client)
    client.login()
    assert client("STLS") == b"-ERR command not valid in this state\r\n"
    plain = bed.connect(tls="none")
    _with_starttls(plain)
    assert plain("STLS") == b"-ERR STLS not available\r\n"
    assert bed.connect(implicit=True)("STLS") == b"-ERR TLS already active\r\n"


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, reply", [
    (b"", b"-ERR unknown command"),
    (b"FROB", b"-ERR unknown command"),
    (b"\xff\xfe\x00", b"-ERR unknown command"),
    (b"LAST", b"-ERR unknown command"),
    (b"RPOP alice", b"-ERR unknown command"),
    (b"RETR", b"-ERR syntax error: RETR takes 1 argument"),
    (b"RETR 1 2", b"-ERR syntax error: RETR takes 1 argument"),
    (b"TOP 1", b"-ERR syntax error: TOP takes 2 arguments"),
    (b"NOOP now", b"-ERR syntax error: NOOP takes no argument"),
    (b"LIST 1 2", b"-ERR syntax error: LIST takes 0 to 1 arguments"),
    (b"RETR x", b"-ERR invalid message number"),
    (b"RETR -1", b"-ERR invalid message number"),
    (b"DELE 0", b"-ERR invalid message number"),
    (b"RETR 99", b"-ERR no such message"),
    (b"LIST 99999999999999", b"-ERR invalid message number"),
    (b"UIDL 3", b"-ERR no such message"),
    (b"TOP 1 -1", b"-ERR invalid line count"),
    (b"USER bob@example.test", b"-ERR command not valid in this state"),
])
def test_bad_input_gets_err_and_the_session_goes_on(bed, store, line, reply):
    client = bed.connect()
    client.login()
    assert client(line) == reply + b"\r\n"
    assert client("STAT") == b"+OK 2 %d\r\n" % (SIZE1 + SIZE2)
    assert len(store.mailbox(ALICE).messages) == 2


def test_transaction_commands_before_login_are_refused(bed):
    client = bed.connect()
    for line in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "UIDL", "TOP 1 1"):
        assert client(line) == b"-ERR command not valid in this state\r\n"
    assert not client.conn.closed


def test_an_overlong_line_gets_err_then_the_connection_closes(bed):
    client = bed.connect()
    assert client.send(b"USER " + b"a" * 20_000) == b"-ERR line too long\r\n"
    assert client.conn.closed


def test_the_idle_timer_closes_without_a_reply_and_commits_nothing(bed, store):
    client = bed.connect()
    client.login()
    client("DELE 1")
    bed.clock.advance(599)
    assert not client.conn.closed
    bed.clock.advance(1)
    assert client.conn.closed and client.conn.sent() == b""
    client.drop()
    assert len(store.mailbox(ALICE).messages) == 2


def test_the_journal_has_commands_without_secrets_and_every_reply(bed):
    client = bed.connect()
    client.login()
    client(f"APOP alice@example.test {'0' * 32}")
    client("AUTH PLAIN " + base64.b64encode(b"\x00a\x00b").decode())
    commands = [(e["command"], e["args"]) for e in bed.journal.query(COMMAND)]
    assert commands == [("USER", [ALICE]), ("PASS", ["<hidden>"]), ("APOP", [ALICE, "<hidden>"]),
                        ("AUTH", ["PLAIN", "<hidden>"])]
    assert "secret" not in repr([e for e in bed.journal.events if e["kind"] != "data"])
    assert [(e["status"], e["text"]) for e in bed.journal.query(REPLY)][:3] == [
        ("+OK", "testbed.test POP3 server ready " + client.protocol.magic.decode()),
        ("+OK", "send PASS"), ("+OK", f"{ALICE} has 2 messages ({SIZE1 + SIZE2} octets)")]


# -- faults ----------------------------------------------------------------------------------------------


def test_a_greeting_error_closes(bed):
    client = bed.connect(fault("connect", "reply", message="[SYS/TEMP] too busy"))
    assert client.greeting == b"-ERR [SYS/TEMP] too busy\r\n"
    assert client.conn.closed


def test_a_silent_greeting(bed):
    client = bed.connect(fault("connect", "silence"))
    assert client.greeting == b""
    assert not client.conn.closed


@pytest.mark.parametrize("message", ["[AUTH] bad password", "[IN-USE] locked elsewhere", "[SYS/TEMP] try later"])
def test_pass_answers_the_injected_error_and_logs_nobody_in(bed, message):
    client = bed.connect(fault("PASS", "reply", message=message, times=1))
    client("USER alice@example.test")
    assert client("PASS secret") == f"-ERR {message}\r\n".encode()
    assert client("STAT") == b"-ERR command not valid in this state\r\n"
    assert not client.conn.closed and bed.log.sessions == []
    client.login()  # the lock was not taken; the next try works


def test_faults_match_on_user_and_message_number(bed):
    client = bed.connect(fault("PASS", "reply", message="[AUTH] not bob", match={"user": "bob@*"}),
                         fault("RETR", "reply", message="not this one", match={"message": 2}))
    client("USER bob@example.test")
    assert client("PASS hunter2") == b"-ERR [AUTH] not bob\r\n"
    client.login()
    assert client("RETR 1").startswith(b"+OK %d octets" % SIZE1)
    assert client("RETR 2") == b"-ERR not this one\r\n"


def test_retr_error_once_then_the_message(bed):
    client = bed.connect(fault("RETR", "reply", message="[SYS/TEMP] disk on fire", times=1))
    client.login()
    assert client("RETR 1") == b"-ERR [SYS/TEMP] disk on fire\r\n"
    assert client("RETR 1") == b"+OK %d octets\r\n" % SIZE1 + WIRE1 + b".\r\n"


def test_retr_disconnects_after_n_bytes_of_the_message(bed):
    client = bed.connect(fault("RETR", "disconnect", bytes=10))
    client.login()
    assert client("RETR 1") == b"+OK %d octets\r\n" % SIZE1 + WIRE1[:10]
    assert client.conn.closed and not client.conn.aborted
    assert bed.log.retrievals[0].complete is False and bed.log.retrievals[0].sent == 10
    assert bed.log.sessions[0].retrieved == []


def test_retr_without_its_terminator(bed):
    client = bed.connect(fault("RETR", "no_terminator"))
    client.login()
    assert client("RETR 1") == b"+OK %d octets\r\n" % SIZE1 + WIRE1
    assert client("RETR 2") == b"+OK %d octets\r\n" % SIZE2 + WIRE2 + b"\r\n"
    assert not client.conn.closed
    assert client("NOOP") == b"+OK\r\n"


def test_stat_and_list_sizes_disagree_with_retr(bed):
    client = bed.connect(fault("STAT", "wrong_size", delta=-5), fault("LIST", "wrong_size", delta=100),
                         fault("RETR", "wrong_size", delta=1, match={"message": 2}))
    client.login()
    assert client("STAT") == b"+OK 2 %d\r\n" % (SIZE1 + SIZE2 - 10)
    assert client("LIST") == b"+OK 2 messages (%d octets)\r\n1 %d\r\n2 %d\r\n.\r\n" % (
        SIZE1 + SIZE2, SIZE1 + 100, SIZE2 + 100)
    assert client("LIST 1") == b"+OK 1 %d\r\n" % (SIZE1 + 100)
    assert client("RETR 1") == b"+OK %d octets\r\n" % SIZE1 + WIRE1 + b".\r\n"
    assert client("RETR 2") == b"+OK %d octets\r\n" % (SIZE2 + 1) + WIRE2 + b"\r\n.\r\n"


def test_dele_error_and_quit_error_commit_nothing(bed, store):
    client = bed.connect(fault("DELE", "reply", message="[SYS/TEMP] read-only", times=1),
                         fault("QUIT", "reply", message="[SYS/TEMP] some deleted messages not removed"))
    client.login()
    assert client("DELE 1") == b"-ERR [SYS/TEMP] read-only\r\n"
    assert client("DELE 2") == b"+OK message 2 deleted\r\n"
    assert client("QUIT") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert client.conn.closed
    client.drop()
    assert len(store.mailbox(ALICE).messages) == 2
    assert bed.log.sessions[0].committed is None


def test_silence_swallows_a_command_and_the_session_goes_on(bed, store):
    client = bed.connect(fault("RETR", "silence", times=1), fault("QUIT", "silence"))
    client.login()
    assert client("RETR 1") == b""
    assert client("DELE 1") == b"+OK message 1 deleted\r\n"
    assert client("QUIT") == b""
    assert not client.conn.closed and len(store.mailbox(ALICE).messages) == 2


def test_multi_and_single_line_replies_without_terminators(bed):
    client = bed.connect(fault("CAPA", "no_terminator"), fault("UIDL", "no_terminator"),
                         fault("NOOP", "no_terminator"))
    assert client("CAPA").endswith(b"IMPLEMENTATION twisted-testbed\r\n")
    client.login()
    assert client("UIDL") == f"+OK unique-id listing follows\r\n1 {UIDS[0]}\r\n2 {UIDS[1]}\r\n".encode()
    assert client("NOOP") == b"+OK"


def test_disconnect_mid_listing_and_mid_reply(bed):
    client = bed.connect(fault("LIST", "disconnect", bytes=3))
    client.login()
    head = b"+OK 2 messages (%d octets)\r\n" % (SIZE1 + SIZE2)
    assert client("LIST") == head + (b"1 %d\r\n" % SIZE1)[:3]
    assert client.conn.closed
    greeting = bed.connect(fault("connect", "disconnect", bytes=7))
    assert greeting.greeting == b"+OK tes" and greeting.conn.closed


@pytest.mark.parametrize("then, closed, aborted", [("close", True, False), ("reset", True, True),
                                                    ("none", False, False)])
def test_a_reply_fault_then(bed, then, closed, aborted):
    client = bed.connect(fault("NOOP", "reply", message="no", then=then))
    client.login()
    assert client("NOOP") == b"-ERR no\r\n"
    assert (client.conn.closed, client.conn.aborted) == (closed, aborted)


def test_a_reply_fault_then_stall_sends_nothing_more(bed):
    client = bed.connect(fault("NOOP", "reply", message="stalling", then="stall"))
    client.login()
    assert client("NOOP") == b"-ERR stalling\r\n"
    assert client("STAT") == b"" and not client.conn.closed


def test_stls_and_apop_and_auth_faults(bed):
    client = bed.connect(fault("STLS", "reply", message="[SYS/TEMP] no TLS today"),
                         fault("APOP", "reply", message="[AUTH] no APOP"),
                         fault("AUTH", "reply", message="[AUTH] no SASL"))
    calls = _with_starttls(client)
    assert client("STLS") == b"-ERR [SYS/TEMP] no TLS today\r\n" and calls == []
    assert client("APOP alice@example.test " + "0" * 32) == b"-ERR [AUTH] no APOP\r\n"
    assert client("AUTH PLAIN") == b"-ERR [AUTH] no SASL\r\n"


def test_a_wire_throttle_scoped_to_retr(bed):
    client = bed.connect(fault("RETR", "throttle", bytes_per_second=200))
    client.login()
    assert client("STAT") == b"+OK 2 %d\r\n" % (SIZE1 + SIZE2)  # before the RETR: untouched
    expected = b"+OK %d octets\r\n" % SIZE1 + WIRE1 + b".\r\n"
    assert client("RETR 1") == expected[:10]  # 200 B/s: ten bytes each twentieth of a second
    received = expected[:10]
    for _ in range(40):
        bed.clock.advance(0.05)
        received += client.conn.sent()
    assert received == expected


def test_a_wire_reset_after_n_bytes_of_a_retr(bed):
    client = bed.connect(fault("RETR", "reset", bytes=20))
    client.login()
    assert client("RETR 1") == (b"+OK %d octets\r\n" % SIZE1 + WIRE1)[:20]
    assert client.conn.aborted


def test_a_refused_connection_never_reaches_the_protocol(bed):
    client = bed.connect(fault("connect", "refuse"))
    assert client.greeting == b"" and client.conn.closed


def test_random_input_never_breaks_the_session_or_the_store(bed, store):
    import random

    rng = random.Random(1939)
    verbs = [b"CAPA", b"STAT", b"LIST", b"UIDL", b"RETR", b"TOP", b"DELE", b"NOOP", b"RSET", b"USER", b"PASS",
             b"APOP", b"AUTH", b"STLS", b"LAST", b"XYZZY", b"", b"\x00", b"r\xc3\xa9tr"]
    args = [b"1", b"2", b"3", b"0", b"-1", b"99999999999999", b"x", b"\xff", b"1 1", b"2 0", b"", b" ", b"\t",
            b"%s", b"{0}", b"..", b"*"]
    client = bed.connect()
    client.login()
    for _ in range(400):
        words = b" ".join(rng.choice(args) for _ in range(rng.randint(0, 3)))
        line = rng.choice(verbs) + b" " * rng.randint(0, 2) + words
        reply = client(line)
        assert reply[:3] == b"+OK" or reply[:4] == b"-ERR", (line, reply)
    assert not client.conn.closed
    assert not [e for e in bed.journal.query("error") if "internal" in str(e)]
    client.drop()
    assert [m.raw for m in store.mailbox(ALICE).messages] == [MSG1, MSG2]
