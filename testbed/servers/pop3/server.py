"""The POP3 and POP3S server, on ``twisted.mail.pop3.POP3``, over the shared mail store (``context.mail()``).

USER/PASS, APOP, SASL PLAIN and STLS; the RFC 1939 maildrop lock; deletions committed on QUIT only; faults per command.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import re
from typing import Any, Callable

import attrs
from twisted.cred import credentials
from twisted.cred.error import LoginDenied, LoginFailed
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, interfaces
from twisted.internet.protocol import ServerFactory
from twisted.mail import pop3
from twisted.protocols import basic
from zope.interface import implementer

from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.journal import COMMAND, ERROR, REPLY, STORED, Records, internal
from testbed.mail.credentials import APOPCredentials, MailChecker
from testbed.servers.base import Server

__all__ = ["POP3Server", "POP3Factory", "POP3Session", "Retrieval", "TestbedPOP3", "Maildrop", "build_factory"]

#: Bytes of a message read (and stuffed) at a time while streaming RETR and TOP.
CHUNK = 64 * 1024
HIDDEN = "<hidden>"
IMPLEMENTATION = b"twisted-testbed"
HOSTNAME = "testbed.test"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_EMPTY_LINE = re.compile(rb"(?:^|\n)\r?\n")
#: Numbers the APOP timestamps of every listener of the process.
_MAGIC = itertools.count(1)

#: Commands carrying credentials, refused in the clear when ``require_tls``.
_CREDENTIALS = frozenset({"USER", "PASS", "APOP", "AUTH"})
#: Commands valid before login (AUTHORIZATION) and after (TRANSACTION), RFC 1939.
_AUTHORIZATION = frozenset({"CAPA", "USER", "PASS", "APOP", "AUTH", "STLS", "QUIT"})
_TRANSACTION = frozenset({"CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"})
#: How many arguments each command takes (PASS takes the rest of the line, spaces included).
_ARITY = {"CAPA": (0, 0), "USER": (1, 1), "PASS": (1, 1), "APOP": (2, 2), "AUTH": (0, 2), "STLS": (0, 0),
          "STAT": (0, 0), "LIST": (0, 1), "UIDL": (0, 1), "RETR": (1, 1), "TOP": (2, 2), "DELE": (1, 1),
          "NOOP": (0, 0), "RSET": (0, 0), "QUIT": (0, 0)}
_NUMBERED = frozenset({"LIST", "UIDL", "RETR", "TOP", "DELE"})


class MaildropLocked(LoginFailed):
    """Another session holds the maildrop lock of this user (RFC 2449 [IN-USE])."""


# -- what the handle records -------------------------------------------------------


@attrs.define(eq=False)
class POP3Session:
    """One successful login, updated as the session goes on."""

    conn: int
    user: str
    method: str  # "USER", "APOP" or "SASL PLAIN"
    tls: bool
    #: Message numbers retrieved completely with RETR, in order.
    retrieved: list[int] = attrs.Factory(list)
    #: UIDs marked with DELE (and not unmarked by RSET).
    marked: list[int] = attrs.Factory(list)
    #: UIDs removed from the store at QUIT; None until a QUIT committed.
    committed: list[int] | None = None
    quit: bool = False
    closed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field."""
        return attrs.asdict(self)


@attrs.frozen
class Retrieval:
    """A RETR or TOP that streamed (completely, or cut by a fault or the client)."""

    conn: int
    user: str
    number: int
    uid: int
    octets: int
    sent: int
    complete: bool
    top: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field."""
        return attrs.asdict(self)


class POP3Log:
    """What the sessions of one server did, shared by its plain and TLS listeners."""

    def __init__(self, limit: int = 0) -> None:
        #: Each list keeps the newest ``limit`` items (``[journal] max_events``; 0: all).
        self.sessions: Records = Records(limit)
        self.retrievals: Records = Records(limit)

    def clear(self) -> None:
        self.sessions.clear()
        self.retrievals.clear()


# -- the mailbox ------------------------------------------------------------------


class _Message:
    """A stored message as POP3 sends it: CRLF line ends (``size`` counts them), dots stuffed."""

    __slots__ = ("stored", "size", "bare_lf", "deleted")

    def __init__(self, stored) -> None:
        raw = stored.raw
        self.stored = stored
        self.bare_lf = raw.count(b"\n") - raw.count(b"\r\n")
        self.size = len(raw) + self.bare_lf
        self.deleted = False

    @property
    def uid(self) -> int:
        return self.stored.uid


@implementer(pop3.IMailbox)
class Maildrop:
    """``IMailbox`` over one user's INBOX as it was at login: numbers fixed, deletions held until ``sync``."""

    loginDelay = 0
    messageExpiration = None

    def __init__(self, store, user: str) -> None:
        self.store = store
        self.user = user
        self.inbox = store.mailbox(user)
        self.uid_validity = self.inbox.uid_validity
        self.messages = [_Message(m) for m in self.inbox.messages]

    # our own reading --------------------------------------------------------------

    def message(self, number: int) -> _Message | None:
        """The message numbered ``number`` (from 1), deleted or not; None when out of range."""
        if 1 <= number <= len(self.messages):
            return self.messages[number - 1]
        return None

    def live(self) -> list[tuple[int, _Message]]:
        return [(i + 1, m) for i, m in enumerate(self.messages) if not m.deleted]

    def uidl(self, message: _Message) -> str:
        return f"{self.uid_validity}.{message.uid}"

    def marked(self) -> list[int]:
        return [m.uid for m in self.messages if m.deleted]

    # IMailbox -------------------------------------------------------------------------

    def _index(self, i: int) -> _Message:
        if not 0 <= i < len(self.messages) or self.messages[i].deleted:
            raise ValueError(i)
        return self.messages[i]

    def listMessages(self, i=None):
        if i is None:
            return [0 if m.deleted else m.size for m in self.messages]
        return self._index(i).size

    def getMessage(self, i):
        import io

        return io.BytesIO(self._index(i).stored.raw)

    def getUidl(self, i):
        return self.uidl(self._index(i)).encode("ascii")

    def deleteMessage(self, i):
        self._index(i).deleted = True

    def undeleteMessages(self):
        for m in self.messages:
            m.deleted = False

    def sync(self) -> list[int]:
        """Remove the marked messages from the store (the UPDATE state); returns their UIDs."""
        uids = self.marked()
        if uids and not self.inbox.deleted:  # after a store reset this session's INBOX is gone
            self.inbox.delete(uids)
        return uids

    def release(self) -> None:
        """Give the maildrop lock back (on logout), unless a store reset already did."""
        if not self.inbox.deleted:
            self.store.unlock_maildrop(self.user)


# -- authentication ---------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@implementer(IRealm)
class MailStoreRealm:
    """Hands out a ``Maildrop`` holding the user's maildrop lock; logging out releases it."""

    def __init__(self, store) -> None:
        self.store = store

    def requestAvatar(self, avatarId, mind, *interfaces_):
        if pop3.IMailbox not in interfaces_:
            raise NotImplementedError("only POP3 mailboxes here")
        user = _text(avatarId)
        if not self.store.lock_maildrop(user):
            raise MaildropLocked(user)
        try:
            drop = Maildrop(self.store, user)
        except BaseException:
            self.store.unlock_maildrop(user)
            raise
        return pop3.IMailbox, drop, drop.release


# -- streaming a message -------------------------------------------------------------------


def _top_end(raw: bytes, lines: int) -> int:
    """Where TOP ``lines`` stops: after the header, the empty line and ``lines`` body lines."""
    match = _EMPTY_LINE.search(raw)
    if match is None:
        return len(raw)  # all header
    pos = match.end()
    for _ in range(lines):
        newline = raw.find(b"\n", pos)
        if newline < 0:
            return len(raw)
        pos = newline + 1
    return pos


class _WireReader:
    """A file-like view of a message in POP3 wire form for ``FileSender``.

    Chunks end at a line end, so each is converted on its own: bare LF to CRLF,
    a dot starting a line doubled; ``limit`` cuts the stream after that many
    bytes (the ``disconnect`` fault).
    """

    def __init__(self, raw: bytes, bare_lf: bool, end: int, limit: int | None = None) -> None:
        self.raw = raw
        self.bare_lf = bare_lf
        self.end = end
        self.limit = limit
        self.pos = 0
        self.sent = 0
        self.cut = False
        #: Whether what was sent so far ends at a line start (decides the terminator).
        self.at_line_start = True

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.end or self.cut:
            if self.limit is not None:
                self.cut = True
            return b""
        raw, pos = self.raw, self.pos
        if self.end - pos <= CHUNK:
            stop = self.end
        else:
            newline = raw.find(b"\n", pos + CHUNK - 1, self.end)
            stop = self.end if newline < 0 else newline + 1
        data = raw[pos:stop]
        self.pos = stop
        if self.bare_lf:
            data = _BARE_LF.sub(b"\r\n", data)
        if b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
        if data[:1] == b".":
            data = b"." + data
        if self.limit is not None and self.sent + len(data) >= self.limit:
            data = data[: self.limit - self.sent]
            self.cut = True
        self.sent += len(data)
        if data:
            self.at_line_start = data[-1:] == b"\n"
        return data


class _MessageSender(basic.FileSender):
    CHUNK_SIZE = CHUNK


# -- the protocol ----------------------------------------------------------------------


class TestbedPOP3(pop3.POP3):
    """Twisted's POP3 server with honest CAPA, STLS, SASL PLAIN, response codes and fault stages.

    Kept from Twisted: line framing, the idle timeout, cred login, APOP
    challenges, pipelined-command queueing (``blocked``/``_longOperation``) and
    ``FileSender`` streaming. Overridden because Twisted 26.10 gets them wrong:
    dispatch (a missing argument raises out of ``lineReceived`` and drops the
    connection; a queued command that fails raises inside a Deferred and is
    never answered), CAPA (PIPELINE, CELERITY, AUSPEX, POTENCE), APOP (compares
    a str digest with bytes: never succeeds), STAT/LIST/UIDL (count deleted
    messages), DELE (``DELE 0`` marks the last message), RETR/TOP (CRLF becomes
    CR CR LF; a dot opening the first line or a chunk is not stuffed; TOP misses
    a header end split across reads), listings through the global cooperator
    (nothing is sent under a ``Clock``), RPOP's joke reply, the obsolete LAST,
    and "+OK " with a trailing space. Added: STLS (RFC 2595), SASL PLAIN (RFC 5034).

    Faults: each command (and ``connect``) is a stage, asked once the command
    is well-formed and valid in the state, with ``user`` (the USER/APOP name,
    the pending USER at PASS, the logged-in user after; None at AUTH),
    ``message`` (the message number, None for a whole listing) and ``tls``.
    ``reply`` answers ``-ERR <message>`` (then ``close`` by default at connect
    and QUIT, ``none`` elsewhere) and skips the command, so a QUIT commits
    nothing; ``silence`` skips it without a word; ``no_terminator`` leaves out
    the ".\\r\\n" of a multi-line answer (the CRLF of a one-line one);
    ``disconnect`` closes after ``bytes`` of the message (RETR/TOP), of the
    listing (CAPA/LIST/UIDL) or of the line; ``wrong_size`` adds ``delta`` to
    the sizes STAT, LIST and RETR's "+OK n octets" state (elsewhere it does nothing).
    A wire action at a stage shapes the connection from that command's reply on.
    """

    seam = NO_SEAM
    #: RFC 1939: the autologout timer is at least ten minutes.
    timeOut = 600
    factory: "POP3Factory"

    session: POP3Session | None = None
    _tls = False
    _gone = False
    _sasl: str | None = None
    _sasl_fault = None
    #: Set by STLS: lines already read in the same packet are plaintext injection, dropped.
    _drop_buffered = False
    #: A ``strip_starttls`` fault fired: this connection neither offers nor accepts STLS.
    _tls_stripped = False

    # -- connection life ------------------------------------------------------------

    def connectionMade(self):
        factory = self.factory
        self._tls = factory.implicit_tls or interfaces.ISSLTransport.providedBy(self.transport)
        self.magic = factory.next_magic()
        self.setTimeout(self.timeOut)
        self.seam.guard(True)  # until a login: PASS, APOP and AUTH carry secrets
        greeting = f"{factory.hostname} POP3 server ready {self.magic.decode('ascii')}"
        fault = self.seam.at("connect", tls=self._tls)
        if fault is not None and fault.action == "strip_starttls":
            self._tls_stripped, fault = True, None
        if self._fault_handled(fault, "connect"):
            return
        self._respond(b"+OK", greeting, fault=None if fault is None or fault.wire else fault)

    def connectionLost(self, reason=None):
        self._gone = True
        super().connectionLost(reason)  # logs out: releases the maildrop lock
        if self.session is not None:
            self.session.closed = True
            self.seam.record("pop3.logout", user=self.session.user, committed=self.session.committed)

    def setTimeout(self, period):
        # _longOperation re-arms the timer when a transfer ends, even one ended by connectionLost.
        return super().setTimeout(None if self._gone else period)

    def timeoutConnection(self):
        # RFC 1939: on autologout the server closes without a response and commits nothing.
        self.seam.record(ERROR, error="autologout timer expired")
        self.transport.loseConnection()

    # -- lines in ------------------------------------------------------------------------

    def dataReceived(self, data):
        self._drop_buffered = False
        super().dataReceived(data)

    def lineReceived(self, line):
        if self._drop_buffered:
            self.seam.record(ERROR, error="command pipelined after STLS dropped", size=len(line))
            return
        self.resetTimeout()
        self.processCommand(line)

    def lineLengthExceeded(self, line):
        self.seam.record(ERROR, error="line too long", size=len(line))
        self._respond(b"-ERR", "line too long")
        self.transport.loseConnection()

    def processCommand(self, line, *ignored):
        """Answer one line; queued while a transfer runs (pipelining), never raises."""
        if getattr(self.transport, "disconnecting", False) or self._gone:
            return
        if self.blocked is not None:
            self.blocked.append((line, ()))
            return
        try:
            if self._sasl is not None:
                self._sasl_response(line)
            else:
                self._dispatch(line)
        except Exception as e:  # a bug here must cost one -ERR, never the connection
            self.seam.record(ERROR, error=f"{type(e).__name__}: {e}", **internal(e))
            self._respond(b"-ERR", "[SYS/TEMP] internal server error")

    def _dispatch(self, line: bytes) -> None:
        head, _, rest = line.partition(b" ")
        verb = head.decode("ascii", "replace").upper()
        if verb == "PASS":
            args = [rest] if rest else []
            self.seam.redact(rest)
        else:
            args = rest.split()
            if verb in ("APOP", "AUTH") and len(args) == 2:
                self.seam.redact(args[1])  # the APOP digest, the SASL initial response
        self.seam.record(COMMAND, command=verb[:40], args=self._shown_args(verb, args), user=self._user_attr())
        if verb not in _ARITY:
            return self._respond(b"-ERR", "unknown command")
        valid = _TRANSACTION if self.mbox is not None else _AUTHORIZATION
        if verb not in valid:
            return self._respond(b"-ERR", "command not valid in this state")
        if verb in _CREDENTIALS and self._plaintext_refused():
            return self._respond(b"-ERR", "[AUTH] TLS required: send STLS first")
        low, high = _ARITY[verb]
        if not low <= len(args) <= high:
            return self._respond(b"-ERR", f"syntax error: {verb} takes {_arity_text(low, high)}")
        number = None
        if verb in _NUMBERED and args:
            number = _number(args[0])
            if number is None:
                return self._respond(b"-ERR", "invalid message number")
        if verb == "TOP" and _number(args[1], zero=True) is None:
            return self._respond(b"-ERR", "invalid line count")
        user = args[0].decode("utf-8", "replace") if verb in ("USER", "APOP") else self._user_attr()
        fault = self.seam.at(verb, user=user, message=number, tls=self._tls)
        if fault is not None and fault.wire:
            fault = None
        elif fault is not None:
            if fault.action == "reply" and verb == "PASS":
                self._userIs = None
            if self._fault_handled(fault, verb):
                return
        getattr(self, "cmd_" + verb)(fault, *args)

    def _shown_args(self, verb: str, args: list[bytes]) -> list[str]:
        shown = [a.decode("utf-8", "replace")[:200] for a in args]
        if verb == "PASS":
            return [HIDDEN] * len(shown)
        if verb == "APOP" and len(shown) == 2:
            return [shown[0], HIDDEN]
        if verb == "AUTH" and len(shown) == 2:
            return [shown[0], HIDDEN]
        return shown

    def _user_attr(self) -> str | None:
        if self.mbox is not None:
            return self.mbox.user
        return self._userIs.decode("utf-8", "replace") if self._userIs is not None else None

    # -- replies out -------------------------------------------------------------------------

    def _respond(self, status: bytes, text: str | bytes = "", lines: list[bytes] | None = None, fault=None) -> None:
        """Write one reply (``lines`` makes it multi-line), shaped by a ``no_terminator`` or ``disconnect`` fault."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        text = text.replace(b"\r", b" ").replace(b"\n", b" ")
        head = status + (b" " + text if text else b"") + b"\r\n"
        if lines is None:
            body = term = b""
        else:
            body = b"".join((b"." + l if l[:1] == b"." else l) + b"\r\n" for l in lines)
            term = b".\r\n"
        action = fault.action if fault is not None else None
        if action == "no_terminator":
            if lines is None:
                head = head[:-2]
            else:
                term = b""
        event = {"status": status.decode("ascii"), "text": text.decode("utf-8", "replace")}
        if lines is not None:
            event["lines"] = len(lines)
        if action in ("no_terminator", "disconnect"):
            event["fault"] = action
        data = head + body + term
        if action == "disconnect":
            cut = int(fault.param("bytes", 0)) + (len(head) if lines is not None else 0)
            data = data[:cut]
        self.seam.record(REPLY, **event)
        self.transport.write(data)
        if action == "disconnect":
            self.transport.loseConnection()

    # Twisted's own code paths (USER/PASS callbacks...) answer through these two.
    def successResponse(self, message=""):
        self._respond(b"+OK", message if isinstance(message, (str, bytes)) else str(message))

    def failResponse(self, message=b""):
        self._respond(b"-ERR", message if isinstance(message, (str, bytes)) else str(message))

    def _fault_handled(self, fault, stage: str) -> bool:
        """A ``reply`` (-ERR) or ``silence`` fault, carried out through the seam; False for any other."""
        return self.seam.carry_out(fault, stage, lambda _status, text: self._respond(b"-ERR", text))

    # -- AUTHORIZATION ---------------------------------------------------------------------------

    def _plaintext_refused(self) -> bool:
        return self.factory.config.require_tls and not self._tls

    def listCapabilities(self) -> list[bytes]:
        caps = [b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"SASL PLAIN"]
        if self._plaintext_refused():  # RFC 2595 4: no USER (nor SASL) while it would be refused
            caps = [c for c in caps if c not in (b"USER", b"SASL PLAIN")]
        if self.factory.starttls and not self._tls and self.mbox is None and not self._tls_stripped:
            caps.append(b"STLS")
        caps.append(b"IMPLEMENTATION " + IMPLEMENTATION)
        return caps

    def cmd_CAPA(self, fault):
        if fault is not None and fault.action == "strip_starttls":
            self._tls_stripped, fault = True, None  # the downgrade: STLS neither offered nor accepted from now on
        self._respond(b"+OK", "capability list follows", self.listCapabilities(), fault)

    def cmd_USER(self, fault, name):
        self._userIs = name
        self._respond(b"+OK", "send PASS", fault=fault)

    def cmd_PASS(self, fault, password):
        if self._userIs is None:
            return self._respond(b"-ERR", "USER first", fault=fault)
        user, self._userIs = self._userIs, None
        self._login(credentials.UsernamePassword(user, password), "USER", fault)

    def cmd_APOP(self, fault, name, digest):
        self._login(APOPCredentials(self.magic, name, digest), "APOP", fault)

    def cmd_AUTH(self, fault, mechanism=None, initial=None):
        if mechanism is None:  # the pre-RFC 5034 listing some clients still ask for
            return self._respond(b"+OK", "SASL mechanisms follow", [b"PLAIN"], fault)
        if mechanism.upper() != b"PLAIN":
            return self._respond(b"-ERR", "unsupported SASL mechanism", fault=fault)
        if initial is None:
            self._sasl = "PLAIN"
            self._sasl_fault = fault
            self.seam.record(REPLY, status="+", text="")
            self.transport.write(b"+ \r\n")
            return
        self._plain(b"" if initial == b"=" else initial, fault)

    def _sasl_response(self, line: bytes) -> None:
        self._sasl = None
        fault, self._sasl_fault = self._sasl_fault, None
        self.seam.redact(line)
        self.seam.record(COMMAND, command="(SASL response)", args=[HIDDEN])
        if line.strip() == b"*":
            return self._respond(b"-ERR", "AUTH cancelled", fault=fault)
        self._plain(line.strip(), fault)

    def _plain(self, encoded: bytes, fault) -> None:
        try:
            authzid, authcid, password = base64.b64decode(encoded, validate=True).split(b"\x00")
        except (binascii.Error, ValueError):
            return self._respond(b"-ERR", "[AUTH] malformed SASL PLAIN response", fault=fault)
        if authzid and authzid != authcid:
            return self._respond(b"-ERR", "[AUTH] cannot act as another user", fault=fault)
        self._login(credentials.UsernamePassword(authcid, password), "SASL PLAIN", fault)

    def _login(self, creds, method: str, fault) -> None:
        d = self.portal.login(creds, self, pop3.IMailbox)
        d.addCallbacks(self._logged_in, self._login_failed, callbackArgs=(method, fault), errbackArgs=(fault,))
        self._longOperation(d.addErrback(self._internal_error))

    def _internal_error(self, failure) -> None:
        """The last errback of a long operation: answer once and let queued commands run."""
        self.seam.record(ERROR, error=f"{failure.type.__name__}: {failure.getErrorMessage()}", **internal(failure))
        if not self._gone:
            self._respond(b"-ERR", "[SYS/TEMP] internal server error")

    def _logged_in(self, result, method: str, fault) -> None:
        _, drop, logout = result
        if self._gone:  # the client left while the portal thought
            logout()
            return
        self.mbox, self._onLogout = drop, logout
        self.seam.guard(False)
        self.session = POP3Session(conn=self.seam.conn, user=drop.user, method=method, tls=self._tls)
        self.factory.log.sessions.append(self.session)
        live = drop.live()
        octets = sum(m.size for _, m in live)
        self._respond(b"+OK", f"{drop.user} has {_messages(len(live))} ({octets} octets)", fault=fault)

    def _login_failed(self, failure, fault) -> None:
        if failure.check(MaildropLocked):
            self._respond(b"-ERR", "[IN-USE] maildrop already locked by another session", fault=fault)
        elif failure.check(LoginDenied, LoginFailed):
            self._respond(b"-ERR", "[AUTH] authentication failed", fault=fault)
        else:
            self.seam.record(ERROR, error=failure.getErrorMessage(), **internal(failure))
            self._respond(b"-ERR", "[SYS/TEMP] cannot open the maildrop", fault=fault)

    def cmd_STLS(self, fault):
        if self._tls:
            return self._respond(b"-ERR", "TLS already active", fault=fault)
        start = getattr(self.transport, "startTLS", None)
        if not self.factory.starttls or start is None or self._tls_stripped:
            return self._respond(b"-ERR", "STLS not available", fault=fault)
        self._respond(b"+OK", "Begin TLS negotiation", fault=fault)
        if getattr(self.transport, "disconnecting", False):
            return
        start(self.factory.tls.options())
        self._tls = True
        self._userIs = None
        # RFC 2595: anything the client sent after STLS before the handshake is discarded.
        self._drop_buffered = True
        self._buffer = b""

    # -- TRANSACTION --------------------------------------------------------------------------------

    def _sized(self, size: int, fault) -> int:
        if fault is not None and fault.action == "wrong_size":
            return max(0, size + int(fault.param("delta", 0)))
        return size

    def _lookup(self, number: int) -> _Message | None:
        message = self.mbox.message(number)
        if message is None:
            self._respond(b"-ERR", "no such message")
        elif message.deleted:
            self._respond(b"-ERR", f"message {number} already deleted")
            return None
        return message

    def cmd_STAT(self, fault):
        live = self.mbox.live()
        total = sum(self._sized(m.size, fault) for _, m in live)
        self._respond(b"+OK", f"{len(live)} {total}", fault=fault)

    def cmd_LIST(self, fault, arg=None):
        if arg is not None:
            number = _number(arg)
            message = self._lookup(number)
            if message is not None:
                self._respond(b"+OK", f"{number} {self._sized(message.size, fault)}", fault=fault)
            return
        live = self.mbox.live()
        lines = [b"%d %d" % (n, self._sized(m.size, fault)) for n, m in live]
        octets = sum(m.size for _, m in live)
        self._respond(b"+OK", f"{_messages(len(live))} ({octets} octets)", lines, fault)

    def cmd_UIDL(self, fault, arg=None):
        drop = self.mbox
        if arg is not None:
            number = _number(arg)
            message = self._lookup(number)
            if message is not None:
                self._respond(b"+OK", f"{number} {drop.uidl(message)}", fault=fault)
            return
        lines = [f"{n} {drop.uidl(m)}".encode("ascii") for n, m in drop.live()]
        self._respond(b"+OK", "unique-id listing follows", lines, fault)

    def cmd_RETR(self, fault, arg):
        number = _number(arg)
        message = self._lookup(number)
        if message is not None:
            self._stream(number, message, None, fault)

    def cmd_TOP(self, fault, arg, lines):
        number = _number(arg)
        message = self._lookup(number)
        if message is not None:
            self._stream(number, message, _number(lines, zero=True), fault)

    def _stream(self, number: int, message: _Message, top: int | None, fault) -> None:
        raw = message.stored.raw
        action = fault.action if fault is not None else None
        if top is None:
            self._respond(b"+OK", f"{self._sized(message.size, fault)} octets")
            end = len(raw)
        else:
            self._respond(b"+OK", "top of message follows")
            end = _top_end(raw, top)
        limit = int(fault.param("bytes", 0)) if action == "disconnect" else None
        reader = _WireReader(raw, message.bare_lf > 0, end, limit)
        d = _MessageSender().beginFileTransfer(reader, self.transport)

        def finished(_):
            if reader.cut:
                self.seam.record(REPLY, status=None, text="", fault="disconnect", sent=reader.sent)
                self.transport.loseConnection()
            elif action == "no_terminator":
                self.seam.record(REPLY, status=None, text="", fault="no_terminator", sent=reader.sent)
                if not reader.at_line_start:
                    self.transport.write(b"\r\n")
            else:
                self.transport.write(b".\r\n" if reader.at_line_start else b"\r\n.\r\n")
            done(not reader.cut)

        def failed(failure):
            self.seam.record(ERROR, error=f"transfer of message {number} stopped: {failure.getErrorMessage()}")
            done(False)

        def done(complete: bool):
            if top is None and complete and self.session is not None:
                self.session.retrieved.append(number)
            self.factory.log.retrievals.append(Retrieval(
                conn=self.seam.conn, user=self.mbox.user, number=number, uid=message.uid, octets=message.size,
                sent=reader.sent, complete=complete, top=top))
            self.seam.record("pop3.sent", number=number, uid=message.uid, sent=reader.sent,
                               complete=complete, top=top)

        d.addCallbacks(finished, failed)
        self._longOperation(d.addErrback(self._internal_error))

    def cmd_DELE(self, fault, arg):
        number = _number(arg)
        message = self._lookup(number)
        if message is not None:
            message.deleted = True
            self.session.marked.append(message.uid)
            self._respond(b"+OK", f"message {number} deleted", fault=fault)

    def cmd_NOOP(self, fault):
        self._respond(b"+OK", fault=fault)

    def cmd_RSET(self, fault):
        self.mbox.undeleteMessages()
        self.session.marked.clear()
        live = self.mbox.live()
        self._respond(b"+OK", f"maildrop has {_messages(len(live))} ({sum(m.size for _, m in live)} octets)",
                      fault=fault)

    def cmd_QUIT(self, fault):
        text = f"{self.factory.hostname} POP3 server signing off"
        if self.mbox is not None:
            uids = self.mbox.sync()
            self.session.committed = uids
            self.session.quit = True
            if uids:
                self.seam.record(STORED, user=self.mbox.user, deleted=uids)
            text += f" ({_messages(len(uids))} deleted)"
        self._respond(b"+OK", text, fault=fault)
        self.transport.loseConnection()


def _number(arg: bytes, zero: bool = False) -> int | None:
    """A message number (from 1), or with ``zero`` a count (from 0); None when malformed."""
    if not arg.isdigit() or len(arg) > 12:
        return None
    value = int(arg)
    return value if value > 0 or (zero and value == 0) else None


def _messages(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


def _arity_text(low: int, high: int) -> str:
    if low == high:
        return "no argument" if low == 0 else f"{low} argument{'s' if low > 1 else ''}"
    return f"{low} to {high} arguments"


# -- the factory and the server --------------------------------------------------------------------


class POP3Factory(SeamFactory, ServerFactory):
    """Builds ``TestbedPOP3`` protocols sharing a portal over the mail store, the clock and the session log."""

    protocol = TestbedPOP3
    noisy = False

    def __init__(self, config, mail, tls, reactor=None, implicit_tls: bool = False, log: POP3Log | None = None,
                 hostname: str = HOSTNAME):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.mail = mail
        self.tls = tls
        self.reactor = reactor
        self.implicit_tls = implicit_tls
        self.log = log if log is not None else POP3Log()
        self.hostname = hostname
        self.portal = Portal(MailStoreRealm(mail), [MailChecker(mail)])

    @property
    def starttls(self) -> bool:
        """STLS is offered (on a plain connection) when the scenario says ``tls = "starttls"``."""
        return self.config.tls == "starttls" and not self.implicit_tls

    def next_magic(self) -> bytes:
        """The APOP timestamp of a new connection: unique per process, connection and second."""
        return f"<{os.getpid()}.{next(_MAGIC)}.{int(self.reactor.seconds())}@{self.hostname}>".encode("ascii")

    def buildProtocol(self, addr, seam=NO_SEAM):
        p = self.protocol()
        p.seam = seam
        p.factory = self
        p.portal = self.portal
        p.callLater = self.reactor.callLater
        return p


def build_factory(config, mail, tls, reactor=None, *, implicit_tls: bool = False,
                  log: POP3Log | None = None) -> POP3Factory:
    """The protocol factory the server listens with, from a ``POP3Config``, a ``MailStore`` and a TLS provider."""
    return POP3Factory(config, mail, tls, reactor, implicit_tls=implicit_tls, log=log)


class POP3Server(Server):
    """``pop3_server``: ``sessions``, ``retrievals``, ``deliver(...)``, ``inbox(...)``, ``wait_for(...)``."""

    scheme = "pop3"
    tls_scheme = "pop3s"

    def __init__(self, context) -> None:
        super().__init__(context)
        self.log = POP3Log(context.journal.max_events)

    @defer.inlineCallbacks
    def start(self):
        context, config = self.context, self.config
        implicit = config.tls == "implicit"
        if config.listen:
            factory = build_factory(config, context.mail(), self.tls, context.reactor, implicit_tls=implicit, log=self.log)
            yield self.listen(config.listen, factory, "pop3s" if implicit else "pop3", tls=implicit)
        if config.tls_listen:
            factory = build_factory(config, context.mail(), self.tls, context.reactor, implicit_tls=True, log=self.log)
            yield self.listen(config.tls_listen, factory, "pop3s", tls=True)

    def reset(self) -> None:
        super().reset()
        self.log.clear()

    # -- the handle -----------------------------------------------------------------------

    @property
    def sessions(self) -> list[POP3Session]:
        """Every successful login since the test started, in order."""
        return list(self.log.sessions)

    @property
    def retrievals(self) -> list[Retrieval]:
        """Every RETR and TOP that streamed, complete or cut."""
        return list(self.log.retrievals)

    def deliver(self, recipient: str, raw: bytes):
        """Put a message into ``recipient``'s INBOX (as SMTP would); returns the ``StoredMessage``."""
        return self.context.call(self.context.mail().deliver, recipient, raw)

    def inbox(self, user: str) -> list:
        """The ``StoredMessage`` objects in ``user``'s INBOX now."""
        return self.context.call(lambda: list(self.context.mail().mailbox(user).messages))

    _KINDS: dict[str, Callable[["POP3Server"], list]] = {
        "login": lambda s: list(s.log.sessions),
        "retr": lambda s: [r for r in s.log.retrievals if r.top is None],
        "top": lambda s: [r for r in s.log.retrievals if r.top is not None],
        "quit": lambda s: [x for x in s.log.sessions if x.quit],
        "close": lambda s: [x for x in s.log.sessions if x.closed],
    }

    wait_selector = "kind"

    def wait_records(self, selector: str | None):
        """``wait_for(kind=...)`` reads sessions ("login", the default; "quit", "close") or retrievals ("retr", "top")."""
        kind = selector or "login"
        if kind not in self._KINDS:
            raise ValueError(f"kind must be one of {', '.join(self._KINDS)}, not {kind!r}")
        collect = self._KINDS[kind]
        return (lambda: collect(self)), kind
