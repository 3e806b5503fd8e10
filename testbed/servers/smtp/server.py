"""The SMTP and SMTPS server, on ``twisted.mail.smtp.ESMTP``: delivers into the shared mail store, with faults at every stage.

Commands, their parsing (``mail_re``, ``rcpt_re``, ``Address``), replies and AUTH
(through a cred portal) are Twisted's; the subclass adds the extensions (SIZE,
PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS), the limits, the journal
and the fault stages.

Twisted quirks worked around here (Twisted 26.10):

- ``SMTP.noisy`` logs a line per message: off.
- The message text is not fed through ``dataLineReceived`` line by line (the
  hot path, and it slips an empty line in before a first body line without a
  colon, as room for a Received: header): ``dataReceived`` finds the final dot
  and unstuffs in bulk; the end of DATA (store, then Twisted's "250 Delivery
  in progress") is done here too, with one copy of the text for all recipients.
- ``do_MAIL``/``do_RCPT`` wrap every answer of the delivery in Deferreds, and
  the end of DATA gathers the IMessages' in a ``DeferredList``: over a quarter
  of a message's cost. The same steps and replies are taken here, through a
  Deferred only when the delivery gives one (a fault that answered).
- ``LineOnlyReceiver`` drops the rest of a chunk after an over-long line and
  ``SMTP.lineLengthExceeded`` then reads the rest of a message body as
  commands; commands are framed here too: 500 for a long one, and on we go.
- Lines pipelined after STARTTLS in the same chunk would be run as commands
  once TLS is up (the CVE-2011-0411 injection): they are discarded.
- A malformed AUTH response (PLAIN without two NULs, CRAM-MD5 without a space)
  and ``AUTH`` with no mechanism raise out of ``state_AUTH``/``ext_AUTH`` and drop
  the connection: answered 501 instead. Any other exception from a command is
  answered 451 and journaled, never propagated to the transport.
- Faults and errors after the final dot reply themselves (Twisted would make
  any failure "550 Could not send e-mail").
- Twisted's LOGIN challenges carry NUL bytes (``"User Name\\0"``):
  ``smtp.LOGINCredentials`` ("Username:", "Password:") is used instead.
- ``SMTPServerError.resp`` must be ``str`` for RCPT/MAIL errors but ``bytes``
  for DATA errors; ``sendCode`` here takes either.
- Any other exception from ``validateFrom``/``validateTo`` goes to ``log.err``
  (a logged traceback) before the 451: journaled as an error instead.
- ``ext_STARTTLS`` keeps the HELO, envelope and AUTH state learnt in the clear
  (RFC 3207 4.2 says forget them): reset here.
- ``TimeoutMixin`` schedules on the global reactor: the factory's reactor
  (a ``Clock`` in unit tests) is used instead.
- smtplib sends no RSET after a refused DATA: a fault reply at DATA ends the
  transaction, so its next MAIL is not "503 only one sender".
"""

from __future__ import annotations

import functools
import re
from typing import Any

from twisted.cred import credentials as cred_credentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.mail import smtp
from twisted.mail._cred import PLAINCredentials
from twisted.mail._except import IllegalClientResponse
from twisted.mail.interfaces import IMessageDelivery
from twisted.python.failure import Failure
from zope.interface import implementer

from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.journal import COMMAND, ERROR, REPLY, STORED, Records, internal
from testbed.mail.credentials import MailChecker
from testbed.servers.base import Server

#: Wire actions that end or black-hole the connection: at the ``message`` stage
#: the message is then not stored (the client never saw it accepted).
CUTTING = frozenset({"reset", "close", "stall", "truncate", "refuse"})

#: Commands allowed before STARTTLS when ``require_tls``.
BEFORE_TLS = frozenset({"EHLO", "HELO", "STARTTLS", "NOOP", "RSET", "QUIT"})
#: Commands that need AUTH first when ``require_auth``.
NEED_AUTH = frozenset({"MAIL", "RCPT", "DATA"})

_ENHANCED = re.compile(rb"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
_SIZE = re.compile(rb"(?:^|\s)SIZE=([0-9]{1,20})(?=\s|$)", re.I)
_SIZE_PARAM = re.compile(rb"(?:^|\s)SIZE=", re.I)

#: The enhanced status code (RFC 3463) added to a reply that has none.
_ENHANCED_FOR = {
    221: b"2.0.0", 235: b"2.7.0", 250: b"2.0.0", 252: b"2.5.0",
    421: b"4.3.0", 450: b"4.2.1", 451: b"4.3.0", 452: b"4.3.1", 454: b"4.7.0",
    500: b"5.5.2", 501: b"5.5.4", 502: b"5.5.1", 503: b"5.5.1", 504: b"5.5.4",
    530: b"5.7.0", 534: b"5.7.9", 535: b"5.7.8", 538: b"5.7.11",
    551: b"5.1.6", 552: b"5.3.4", 553: b"5.1.3", 554: b"5.3.0",
}
#: Replies that never carry an enhanced code: the greeting, TLS go-ahead, AUTH challenges, DATA go-ahead.
_NO_ENHANCED = frozenset({220, 334, 354})



def _text(value: Any) -> str:
    """An address, HELO argument or user name as text, whatever bytes the client sent."""
    if value is None:
        return ""
    if not isinstance(value, bytes):
        value = bytes(value)
    return value.decode("utf-8", "replace")


@functools.lru_cache(maxsize=512)
def _address(path: bytes, domain: bytes) -> smtp.Address:
    """``smtp.Address(path, domain)`` (raises ``AddressError``), parsed once per distinct path.

    A session names the same few addresses again and again, and Twisted's ``Address`` tokenizes with a
    regular expression each time. Never changed once made, so shared.
    """
    return smtp.Address(path, domain)


def _format_reply(code: int, message: bytes | str, raw: bool) -> tuple[bytes, str]:
    """A reply's bytes on the wire (enhanced code added unless ``raw``) and its first line as text."""
    if isinstance(message, str):
        message = message.encode("utf-8")
    if not raw and code not in _NO_ENHANCED and (message[1:2] != b"." or not _ENHANCED.match(message)):
        prefix = _ENHANCED_FOR.get(code) or b"%d.0.0" % (code // 100)
        message = prefix + b" " + message if message else prefix
    if b"\n" in message or b"\r" in message:
        lines = message.splitlines() or [b""]
        first = lines[0]
        out = b"".join(b"%d-%s\r\n" % (code, l) for l in lines[:-1]) + b"%d %s\r\n" % (code, lines[-1])
    else:
        first = message
        out = b"%d %s\r\n" % (code, message)
    return out, first.decode("utf-8", "replace")


#: Formatted replies by (code, message, raw): a session repeats a handful ("2.1.0 Sender OK"...), and formatting
#: each (the enhanced-code check, the line split, the decode for the journal) was a tenth of a message's cost.
#: Bounded, since messages that name an address or a size vary without end; past the bound a reply is formatted anew.
_REPLIES: dict[tuple, tuple[bytes, str]] = {}
_REPLY_CACHE = 512
_REPLY_CACHED_LENGTH = 256


# -- what the server records --------------------------------------------------------


class SMTPMessage:
    """A message the server accepted: envelope, the bytes as received (dot-unstuffed), and its context."""

    __slots__ = ("mail_from", "rcpt_to", "raw", "conn", "tls", "auth_user", "helo", "_message")

    def __init__(self, mail_from: str, rcpt_to: list[str], raw: bytes, conn: int, tls: bool,
                 auth_user: str | None, helo: str):
        self.mail_from = mail_from
        self.rcpt_to = rcpt_to
        self.raw = raw
        self.conn = conn
        self.tls = tls
        self.auth_user = auth_user
        self.helo = helo
        self._message = None

    @property
    def message(self):
        """The message parsed as an ``email.message.EmailMessage`` (policy default), parsed on first use."""
        if self._message is None:
            import email
            import email.policy

            self._message = email.message_from_bytes(self.raw, policy=email.policy.default)
        return self._message

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def subject(self) -> str | None:
        return self.message["subject"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the envelope and its context, with the parsed message (headers, bodies, attachments, raw)."""
        from testbed.mail.render import message_dict

        return {"mail_from": self.mail_from, "rcpt_to": list(self.rcpt_to), "conn": self.conn, "tls": self.tls,
                "auth_user": self.auth_user, "helo": self.helo, **message_dict(self.message, self.raw)}

    def __repr__(self) -> str:
        try:
            subject = self.subject
        except Exception:  # a message that does not parse still gets a repr
            subject = "?"
        return (f"<SMTPMessage conn={self.conn} from={self.mail_from!r} to={self.rcpt_to!r} "
                f"size={self.size} subject={subject!r}>")


# -- Twisted's delivery interface --------------------------------------------------------


@implementer(IMessageDelivery)
class _Delivery:
    """The connection's IMessageDelivery; after AUTH the realm hands out one carrying the user."""

    __slots__ = ("protocol", "user")

    def __init__(self, protocol: "TestbedSMTP", user: str | None = None):
        self.protocol = protocol
        self.user = user

    def receivedHeader(self, helo, origin, recipients):
        return None  # the stored bytes are exactly the client's

    def validateFrom(self, helo, origin):
        return self.protocol._validate_from(origin)

    def validateTo(self, user):
        return self.protocol._validate_to(user)


@implementer(IRealm)
class _Realm:
    """Gives an authenticated connection (the ``mind``) a delivery that knows its user."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMessageDelivery not in interfaces:
            raise NotImplementedError("only IMessageDelivery")
        return IMessageDelivery, _Delivery(mind, avatarId), lambda: None


class _PortalGate:
    """What ``ESMTP.state_AUTH`` logs in through: asks the AUTH stage, then the real portal."""

    __slots__ = ("protocol", "portal")

    def __init__(self, protocol: "TestbedSMTP", portal: Portal):
        self.protocol = protocol
        self.portal = portal

    def login(self, credentials, mind, *interfaces):
        protocol = self.protocol
        fault = protocol._at("AUTH", user=_text(credentials.username), mechanism=protocol._mechanism)
        if protocol._fault_handled(fault, "AUTH"):
            return defer.Deferred()  # the fault answered; Twisted stays silent
        return self.portal.login(credentials, protocol, *interfaces)


# -- the protocol ----------------------------------------------------------------------


class TestbedSMTP(smtp.ESMTP):
    """Twisted's ESMTP with the testbed's extensions, limits, journal and fault stages."""

    noisy = False
    seam = NO_SEAM
    #: Longest command or AUTH line (message text is limited by size only).
    MAX_LENGTH = 16384

    def __init__(self, factory: "SMTPFactory", seam=NO_SEAM):
        super().__init__(factory.challengers, factory.tls_context)
        self.factory = factory
        self.seam = seam
        self.config = factory.config
        self._host = factory.host
        self.portal = _PortalGate(self, factory.portal)
        self.delivery = _Delivery(self)
        self.callLater = factory.reactor.callLater
        self.tls = False
        self._silenced = False
        self._rejecting = False
        self._halt = False
        #: A ``strip_starttls`` fault fired: this connection neither offers nor accepts STARTTLS.
        self._tls_stripped = False
        self._overflow = False
        self._helo_seen = self._helo_text = None
        self._mail_from = ""
        self._line_start = True
        self._declared_size: int | None = None
        self._mechanism = ""
        self._envelope: tuple[str, list[str]] | None = None
        #: The message text of the DATA under way (whole lines, dot-unstuffed), and its size so far.
        self._parts: list[bytes] = []
        self._size = 0
        #: The command being handled, until its reply is journaled with it.
        self._unanswered: dict | None = None

    # -- state the stages share ----------------------------------------------------------

    @property
    def auth_user(self) -> str | None:
        return self.delivery.user if self.delivery is not None else None

    @property
    def helo(self) -> str:
        """The HELO/EHLO argument as text ("" before one)."""
        helo = self._helo
        if helo is not self._helo_seen:
            self._helo_seen = helo
            self._helo_text = _text(helo[0]) if helo else ""
        return self._helo_text

    def _attributes(self, **extra: Any) -> dict:
        attributes = {"helo": self.helo, "user": self.auth_user, "tls": self.tls}
        attributes.update(extra)
        return attributes

    def _at(self, stage: str, **extra: Any):
        """``seam.at`` with the stage's attributes, built only when a rule is aimed at it (most runs: none)."""
        seam = self.seam
        if not seam.wants(stage):
            return None
        return seam.at(stage, **self._attributes(**extra))

    # -- faults ------------------------------------------------------------------------------

    def _fault_handled(self, fault, stage: str) -> bool:
        """Carry out a protocol action (reply, silence) through the seam; False when there is none to carry out."""
        if fault is None:  # every stage of most runs: no call, no bound methods made
            return False
        return self.seam.carry_out(fault, stage, self._send_fault_reply, silence=self._silence)

    def _send_fault_reply(self, code: int, message: str) -> None:
        self.sendCode(int(code), message.encode("utf-8"), raw=True)

    def _silence(self) -> None:
        """No more replies: input is ignored from now on (the client waits, or times out)."""
        self._silenced = True
        self._buffer = b""

    # -- lines in ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._silenced:
            return
        self._halt = False
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        while data:
            data = self._body(data) if self.mode == smtp.DATA else self._lines(data)

    def _lines(self, data: bytes) -> bytes:
        """Commands (and AUTH responses), a line at a time; returns the bytes after a DATA command's line."""
        lines = data.split(b"\r\n")
        tail = lines.pop()
        transport = self.transport
        for i, line in enumerate(lines):
            if transport.disconnecting or self._halt or self._silenced:
                return b""
            if self._overflow:  # the end of a line already refused as too long
                self._overflow = False
                continue
            if len(line) > self.MAX_LENGTH:
                self._line_too_long()
                continue
            try:
                self.lineReceived(line)
            except Exception as e:
                self._internal_error(e)
            if self.mode == smtp.DATA:  # the rest of the chunk is message body
                rest = lines[i + 1:]
                return b"\r\n".join(rest) + b"\r\n" + tail if rest else tail
        if self._halt or self._silenced:
            return b""
        if len(tail) > self.MAX_LENGTH:
            if not self._overflow:  # still the line refused in an earlier chunk: one reply per line
                self._line_too_long()
            self._overflow = True
        else:
            self._buffer = tail
        return b""

    def _line_too_long(self) -> None:
        if self.mode == smtp.AUTH:
            self.mode = smtp.COMMAND
            self.challenger = None
        self.seam.record(ERROR, error="line too long")
        self.sendCode(500, b"5.5.6 Line too long")

    def _body(self, data: bytes) -> bytes:
        """Message text after the 354, in bulk rather than line by line: up to the final dot.

        ``data`` starts at the start of a line when ``_line_start``; what is passed on
        to the collector is dot-unstuffed; a partial last line waits in ``_buffer``
        (a long one only by its last byte, which may be the CR of the final CRLF).
        Returns what follows the final dot (commands again), or b"".
        """
        self.resetTimeout()
        if self._line_start and data[:3] == b".\r\n":
            dot = 0
        else:
            dot = data.find(b"\r\n.\r\n")
            if dot >= 0:
                dot += 2
        if dot >= 0:
            self._body_part(data[:dot])
            self._line_start = True
            self._end_of_data()
            return data[dot + 3:]
        cut = data.rfind(b"\r\n") + 2  # complete lines end here (1: there are none)
        if cut > 1:
            self._body_part(data[:cut])
            self._line_start = True
            data = data[cut:]
        if len(data) > self.MAX_LENGTH:
            self._body_part(data[:-1])
            self._line_start = False
            data = data[-1:]
        self._buffer = data
        return b""

    def _body_part(self, part: bytes) -> None:
        """Pass text on to the collector, dot-unstuffed; ``_line_start`` says whether ``part`` starts a line."""
        if not part or self.datafailed:
            return
        if self._line_start and part[:1] == b".":
            part = part[1:]
        if b"\r\n." in part:
            part = part.replace(b"\r\n.", b"\r\n")
        self._size += len(part)
        limit = self.config.max_message_size
        if limit and self._size > limit:
            self._body_failed()
        else:
            self._parts.append(part)

    def _body_failed(self) -> None:
        if not self.datafailed:
            self.datafailed = smtp.SMTPServerError(552, b"5.3.4 Message size exceeds fixed maximum message size")
            self._parts = []

    def _internal_error(self, error: Exception) -> None:
        self.seam.record(ERROR, error=f"{type(error).__name__}: {error}", **internal(error))
        if self.mode != smtp.DATA:
            self.mode = smtp.COMMAND
            self.sendCode(451, b"4.3.0 Requested action aborted: local error in processing")

    def state_COMMAND(self, line: bytes) -> None:
        parts = line.strip().split(None, 1)
        if not parts:
            self.sendCode(500, b"5.5.2 Error: bad syntax")
            return
        verb = parts[0].upper()
        rest = parts[1] if len(parts) == 2 else b""
        try:
            name = verb.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        # Journaled with its reply folded in when that comes at once (``sendCode``), else alone when done here.
        if name == "AUTH":
            rest_text = _text(rest.split(None, 1)[0] if rest else b"")  # not the initial response: a credential
        else:
            rest_text = rest.decode("utf-8", "replace")
        self._unanswered = {"command": name or _text(verb), "arg": rest_text}
        try:
            self._command(name, rest)
        finally:
            unanswered, self._unanswered = self._unanswered, None
            if unanswered is not None:
                self.seam.record(COMMAND, **unanswered)

    def _command(self, name: str, rest: bytes) -> None:
        if self._rejecting and name != "QUIT":
            self.sendCode(503, b"5.5.1 Bad sequence of commands")
            return
        if self.config.require_tls and not self.tls and name not in BEFORE_TLS:
            self.sendCode(530, b"5.7.0 Must issue a STARTTLS command first")
            return
        if self.config.require_auth and not self.authenticated and name in NEED_AUTH:
            self.sendCode(530, b"5.7.0 Authentication required")
            return
        method = _VERBS.get(name)
        if method is None:
            self.sendCode(500, b"5.5.2 Command unrecognized")
        else:
            method(self, rest)

    def timeoutConnection(self) -> None:
        self.sendCode(421, self._host + b" Error: timeout exceeded", raw=False)
        self.transport.loseConnection()

    # -- replies out -------------------------------------------------------------------------

    def sendCode(self, code: int, message: bytes | str = b"", raw: bool = False) -> None:
        """One reply in one write, with an enhanced status code when it has none, journaled."""
        key = (code, message, raw)
        reply = _REPLIES.get(key)
        if reply is None:
            reply = _format_reply(code, message, raw)
            if len(_REPLIES) < _REPLY_CACHE and len(message) <= _REPLY_CACHED_LENGTH:
                _REPLIES[key] = reply
        out, first = reply
        self.transport.write(out)
        seam = self.seam
        journal = seam.journal
        if journal is None:
            return
        # Straight to the journal, not through ``seam.record``: one call and one keyword dict less a reply.
        unanswered = self._unanswered
        if unanswered is not None:
            self._unanswered = None
            journal.record(COMMAND, seam.server, seam.conn, code=code, message=first, **unanswered)
        else:
            journal.record(REPLY, seam.server, seam.conn, code=code, message=first)

    # -- connect -----------------------------------------------------------------------------

    def greeting(self) -> bytes:
        return self._host + b" ESMTP twisted-testbed"

    def connectionMade(self) -> None:
        self.tls = self.seam.tls
        if self.challengers:
            self.seam.guard(True)  # AUTH's responses carry the credentials
        fault = self.seam.at("connect")
        if fault is not None and fault.action == "strip_starttls":
            self._tls_stripped = True
        if fault is None or fault.wire or self._tls_stripped:
            smtp.SMTP.connectionMade(self)
            return
        peer = self.transport.getPeer()
        self._helo = (None, getattr(peer, "host", str(peer)))
        self.setTimeout(self.timeout)
        if self._fault_handled(fault, "connect") and not self._silenced and not self.transport.disconnecting:
            self._rejecting = True  # RFC 5321 3.1: after a 554 greeting, 503 to all but QUIT

    def connectionLost(self, reason) -> None:
        # In DATA mode ``SMTP.connectionLost`` tells its per-recipient IMessages (its private
        # ``__messages``); the text gathered here has no one to tell.
        self.mode = smtp.COMMAND
        self._parts = []
        super().connectionLost(reason)

    # -- HELO, EHLO, STARTTLS, AUTH -------------------------------------------------------------

    def extensions(self) -> dict:
        config = self.config
        ext: dict[bytes, list[bytes] | None] = {
            b"SIZE": [b"%d" % config.max_message_size],
            b"PIPELINING": None,
            b"8BITMIME": None,
            b"ENHANCEDSTATUSCODES": None,
        }
        if self.challengers and (self.tls or not config.require_tls):
            ext[b"AUTH"] = list(self.challengers)
        if self._can_start_tls():
            ext[b"STARTTLS"] = None
        return ext

    def _can_start_tls(self) -> bool:
        return self.config.tls == "starttls" and self.ctx is not None and not self.tls and not self._tls_stripped

    def _hello(self, rest: bytes, stage: str) -> bool:
        """The common part of HELO and EHLO; False when answered already."""
        fault = self._at(stage, helo=_text(rest))
        if fault is not None and fault.action == "strip_starttls":
            self._tls_stripped = True  # the downgrade: STARTTLS neither offered nor accepted from now on
        if self._fault_handled(fault, stage):
            return False
        if not rest:
            self.sendCode(501, b"5.5.4 Syntax: %s hostname" % stage.encode())
            return False
        self._helo = (rest, self._peer())
        self._from = None
        self._to = []
        return True

    def _peer(self) -> bytes:
        host = getattr(self.transport.getPeer(), "host", "")
        return host.encode("idna") if isinstance(host, str) else host

    def do_EHLO(self, rest: bytes) -> None:
        if self._hello(rest, "EHLO"):
            self.sendCode(250, self._host + b" Hello " + self._peer() + b"\n" + self.listExtensions(), raw=True)

    def do_HELO(self, rest: bytes) -> None:
        if self._hello(rest, "HELO"):
            self.sendCode(250, self._host + b" Hello " + self._peer(), raw=True)

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.tls:
            self.sendCode(503, b"5.5.1 TLS already active")
            return
        if not self._can_start_tls():
            self.sendCode(502, b"5.5.1 STARTTLS not available")
            return
        if self._fault_handled(self._at("STARTTLS"), "STARTTLS"):
            return
        self.sendCode(220, b"2.0.0 Ready to start TLS", raw=True)
        self.transport.startTLS(self.ctx)
        self.startedTLS = self.tls = True
        # RFC 3207 4.2: forget everything learnt in the clear, and run nothing sent with STARTTLS.
        self._helo = (None, self._peer())
        self._from = None
        self._to = []
        self.authenticated = False
        self.delivery = _Delivery(self)
        self._halt = True

    def ext_AUTH(self, rest: bytes) -> None:
        if self.authenticated:
            self.sendCode(503, b"5.5.1 Already authenticated")
            return
        if self._from is not None:
            self.sendCode(503, b"5.5.1 AUTH not allowed during a mail transaction")
            return
        parts = rest.split(None, 1)
        if not parts:
            self.sendCode(501, b"5.5.4 Syntax: AUTH mechanism")
            return
        mechanism = parts[0].upper()
        if mechanism not in self.challengers:
            self.sendCode(504, b"5.5.4 Unrecognized authentication type")
            return
        self._mechanism = _text(mechanism)
        if len(parts) == 2:
            self.seam.redact(parts[1])  # the initial response
        super().ext_AUTH(rest)

    def state_AUTH(self, response) -> None:
        self.seam.redact(response)
        try:
            super().state_AUTH(response)
        except (IllegalClientResponse, ValueError, TypeError):
            self.mode = smtp.COMMAND
            self.challenger = None
            self.sendCode(501, b"5.5.2 Malformed authentication response")

    # -- the transaction --------------------------------------------------------------------------
    #
    # MAIL, RCPT and DATA are Twisted's (``SMTP.do_MAIL``, ``do_RCPT``, ``do_DATA`` and
    # ``dataLineReceived`` at the final dot), with their replies, but an answer the delivery
    # gives at once is used at once: Twisted wraps each in Deferreds (two ``maybeDeferred``
    # per command, a ``DeferredList`` per message), over a quarter of a message's cost.
    # A fault that answered gives a Deferred that never fires, so nothing more is sent.

    def do_MAIL(self, rest: bytes) -> None:
        size = _SIZE.search(rest)
        if size is None and _SIZE_PARAM.search(rest):
            self.sendCode(501, b"5.5.4 Syntax: SIZE=<1 to 20 digits>")  # RFC 1870: size-value = 1*20DIGIT
            return
        self._declared_size = int(size.group(1)) if size else None
        if self._from:
            self.sendCode(503, b"Only one sender per message, please")
            return
        self._to = []
        match = self.mail_re.match(rest)
        if not match:
            self.sendCode(501, b"Syntax error")
            return
        try:
            origin = _address(match.group("path"), self.host)
        except smtp.AddressError as e:
            self.sendCode(553, str(e))
            return
        self._validated(self._cbFromValidate, self._ebFromValidate, (), self.delivery.validateFrom, self._helo, origin)

    def do_RCPT(self, rest: bytes) -> None:
        if not self._from:
            self.sendCode(503, b"Must have sender before recipient")
            return
        match = self.rcpt_re.match(rest)
        if not match:
            self.sendCode(501, b"Syntax error")
            return
        try:
            user = smtp.User(_address(match.group("path"), self.host), self._helo, self, self._from)
        except smtp.AddressError as e:
            self.sendCode(553, str(e))
            return
        self._validated(self._cbToValidate, self._ebToValidate, (user,), self.delivery.validateTo, user)

    @staticmethod
    def _validated(callback, errback, extra: tuple, validate, *args) -> None:
        """``maybeDeferred(validate, *args)`` without the Deferred: its answer goes to ``callback`` (with
        ``extra``) at once, through its Deferred only when it gives one; an exception goes to ``errback``."""
        try:
            answer = validate(*args)
        except Exception:
            errback(Failure())
            return
        if isinstance(answer, defer.Deferred):
            answer.addCallbacks(callback, errback, callbackArgs=extra)
        else:
            callback(answer, *extra)

    # SMTP._cbFromValidate and _cbToValidate with enhanced codes, written out: no super() call per command.
    def _cbFromValidate(self, fromEmail, code=250, msg=b"2.1.0 Sender OK"):
        self._from = fromEmail
        self.sendCode(code, msg)

    def _cbToValidate(self, to, user=None, code=250, msg=b"2.1.5 Recipient OK"):
        self._to.append((to if user is None else user, to))
        self.sendCode(code, msg)

    def _ebFromValidate(self, failure):
        if failure.check(smtp.SMTPServerError):
            return super()._ebFromValidate(failure)
        self._internal_error(failure.value)

    def _ebToValidate(self, failure):
        if failure.check(smtp.SMTPServerError):
            return super()._ebToValidate(failure)
        self._internal_error(failure.value)

    def _validate_from(self, origin):
        self._mail_from = mail_from = _text(origin)
        size = self._declared_size
        fault = self._at("MAIL", mail_from=mail_from, size=size)
        if self._fault_handled(fault, "MAIL"):
            return defer.Deferred()  # answered by the fault; Twisted stays silent
        limit = self.config.max_message_size
        if limit and size is not None and size > limit:
            raise smtp.SMTPServerError(552, "5.3.4 Message size exceeds fixed maximum message size")
        return origin

    def _validate_to(self, user) -> str:
        """The recipient's address as text (what ``_to`` pairs with its ``User``), or a refusal."""
        rcpt = _text(user.dest)
        fault = self._at("RCPT", rcpt=rcpt, mail_from=self._mail_from)
        if self._fault_handled(fault, "RCPT"):
            return defer.Deferred()
        if len(self._to) >= self.config.max_recipients:
            raise smtp.SMTPServerError(452, "4.5.3 Too many recipients")
        if self.factory.mail.resolve_recipient(rcpt) is None:
            raise smtp.SMTPServerError(550, f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
        return rcpt

    def do_DATA(self, rest: bytes) -> None:
        if self._from is None or not self._to:
            self.sendCode(503, b"Must have valid receiver and originator")
            return
        mail_from = self._mail_from
        rcpts = [rcpt for _, rcpt in self._to]
        seam = self.seam
        fault = seam.decide("DATA", **self._attributes(mail_from=mail_from, rcpt=rcpts)) if seam.wants("DATA") else None
        self._from = None
        self._to = []
        if self._fault_handled(fault, "DATA"):
            return  # the transaction ends: smtplib sends no RSET after a refused DATA
        # One copy of the text for every recipient, where Twisted keeps an IMessage each.
        self._envelope = (mail_from, rcpts)
        self._parts = []
        self._size = 0
        self._line_start = True
        self.datafailed = None
        self.mode = smtp.DATA
        self.sendCode(354, b"Continue")
        if fault is not None:
            seam.apply(fault)  # a wire action at DATA acts after the 354

    def _end_of_data(self) -> None:
        """The final dot: the size refusal, or the message stored and Twisted's 250 (unless a fault answered)."""
        self.mode = smtp.COMMAND
        parts, self._parts = self._parts, []
        if self.datafailed:
            self.sendCode(self.datafailed.code, self.datafailed.resp)
        elif self._end_of_message(b"".join(parts)):
            self.sendCode(250, b"Delivery in progress")

    def _end_of_message(self, raw: bytes) -> bool:
        """After the final dot: the ``message`` stage, then delivery; False when the reply is not a plain 250."""
        mail_from, rcpts = self._envelope
        fault = self._at("message", mail_from=mail_from, rcpt=rcpts, size=len(raw))
        if fault is not None:
            if fault.wire:
                if fault.action in CUTTING:
                    return False  # the server "died" before committing: not stored
            elif fault.action == "reply" and 200 <= int(fault.param("code", 451)) < 300:
                self._store(mail_from, rcpts, raw)
                self._fault_handled(fault, "message")
                return False
            else:
                self._fault_handled(fault, "message")
                return False
        try:
            stored = self._store(mail_from, rcpts, raw)
        except Exception as e:
            stored = False
            self.seam.record(ERROR, error=f"delivery failed: {type(e).__name__}: {e}", **internal(e))
        if not stored:
            self.sendCode(451, b"4.3.0 Requested action aborted: local error in processing")
        return stored

    def _store(self, mail_from: str, rcpts: list[str], raw: bytes) -> bool:
        deliver = self.factory.mail.deliver
        delivered = []
        for rcpt in rcpts:
            try:
                deliver(rcpt, raw)
            except Exception as e:
                self.seam.record(ERROR, error=f"delivery to {rcpt} failed: {type(e).__name__}: {e}",
                                 **internal(e))
            else:
                delivered.append(rcpt)
        if not delivered:
            return False
        message = SMTPMessage(mail_from, delivered, raw, self.seam.conn, self.tls, self.auth_user,
                              self.helo)
        self.factory.messages.append(message)
        self.seam.record(STORED, mail_from=mail_from, rcpt=delivered, size=len(raw))
        return True

    # -- the rest -----------------------------------------------------------------------------------

    def do_RSET(self, rest: bytes) -> None:
        if not self._fault_handled(self._at("RSET"), "RSET"):
            self._from = None
            self._to = []
            self.sendCode(250, b"2.0.0 Ok")

    def do_NOOP(self, rest: bytes) -> None:
        if not self._fault_handled(self._at("NOOP"), "NOOP"):
            self.sendCode(250, b"2.0.0 Ok")

    def do_VRFY(self, rest: bytes) -> None:
        if not self._fault_handled(self._at("VRFY", rcpt=_text(rest)), "VRFY"):
            self.sendCode(252, b"2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    def do_QUIT(self, rest: bytes) -> None:
        if not self._fault_handled(self._at("QUIT"), "QUIT"):
            self.sendCode(221, b"2.0.0 Bye")
            self.transport.loseConnection()


def _verbs(cls: type) -> dict[str, Any]:
    """What ``ESMTP.lookupMethod`` finds for each verb (``do_VERB``, else ``ext_VERB``), as functions of ``cls``."""
    verbs = {}
    for prefix in ("ext_", "do_"):  # do_ last: it wins
        for attr in dir(cls):
            verb = attr[len(prefix):]
            if attr.startswith(prefix) and verb.isalpha() and verb.isupper():
                verbs[verb] = getattr(cls, attr)
    return verbs


#: The command methods, looked up once rather than by two ``getattr`` with built names per command.
_VERBS = _verbs(TestbedSMTP)


# -- the factory ------------------------------------------------------------------------------


_CHALLENGERS = {
    "PLAIN": lambda host: PLAINCredentials,
    "LOGIN": lambda host: smtp.LOGINCredentials,
    "CRAM-MD5": lambda host: functools.partial(cred_credentials.CramMD5Credentials, host),
}


class SMTPFactory(SeamFactory, smtp.SMTPFactory):
    """Builds ``TestbedSMTP`` connections sharing one config, mail store and list of accepted messages."""

    protocol = TestbedSMTP
    noisy = False

    def __init__(self, config, mail, tls=None, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(Portal(_Realm(), [MailChecker(mail)]))
        self.config = config
        self.mail = mail
        self.reactor = reactor
        self.host = config.hostname.encode("idna")
        self.tls_context = tls.options() if tls is not None and config.tls == "starttls" else None
        self.challengers = {name.upper().encode("ascii"): _CHALLENGERS[name.upper()](self.host)
                            for name in config.auth}
        #: Accepted messages; the server handle bounds it by ``[journal] max_events``.
        self.messages = Records()

    def buildProtocol(self, addr, seam=NO_SEAM):
        p = self.protocol(self, seam)
        p.timeout = self.timeout
        return p


def build_factory(config, mail, tls=None, reactor=None) -> SMTPFactory:
    """The SMTP protocol factory for ``config`` over the mail store ``mail``.

    ``tls`` is the run's ``ServerTLS`` (or anything with ``options()``) for
    STARTTLS; ``reactor`` gives the timeouts their clock.
    """
    return SMTPFactory(config, mail, tls, reactor)


# -- the handle -------------------------------------------------------------------------------


class SMTPServer(Server):
    """``smtp_server``: ``host``, ``port``, ``tls_port``, ``messages``, ``wait_for(...)``, ``faults``."""

    scheme = "smtp"
    tls_scheme = "smtps"

    def __init__(self, context):
        super().__init__(context)
        self.factory = build_factory(self.config, context.mail(), self.tls, context.reactor)
        self.factory.messages = context.journal.records()

    @defer.inlineCallbacks
    def start(self):
        config = self.config
        if config.listen:
            implicit = config.tls == "implicit"
            yield self.listen(config.listen, self.factory, "smtps" if implicit else "smtp", tls=implicit)
        if config.tls_listen:
            yield self.listen(config.tls_listen, self.factory, "smtps", tls=True)

    def reset(self) -> None:
        super().reset()
        self.factory.messages = self.context.journal.records()

    @property
    def messages(self) -> list[SMTPMessage]:
        """Every message accepted since the test began, in order."""
        return list(self.factory.messages)

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the accepted messages (``SMTPMessage``)."""
        return (lambda: list(self.factory.messages)), "message"
