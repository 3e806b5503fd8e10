"""The IMAP and IMAPS server: Twisted's ``IMAP4Server`` over the shared mail store, with faults at every command.

``TestbedIMAPServer`` subclasses ``twisted.mail.imap4.IMAP4Server`` where a fault
needs a hook or Twisted falls short (each override says why): FETCH writes its
response itself (Twisted's never slices partials, never sets \\Seen, retitles
header names and iterates on the global reactor), SEARCH evaluates keys itself
(Twisted's compares bytes with str on Python 3), and LOGIN/AUTHENTICATE, STARTTLS,
IDLE, SELECT, STATUS, APPEND and COPY answer with RFC 3501/5530 response codes.
The extensions production servers offer, which Twisted lacks, are added here:
UIDPLUS (APPENDUID, COPYUID, UID EXPUNGE), MOVE, ID, ENABLE, UNSELECT,
SPECIAL-USE (the mailboxes come from ``store.SPECIAL_USE``) and LITERAL+.
Bad input is refused before Twisted sees it: a literal size Twisted's int() would take
("{-1}", "{1_0}") gets BAD, and an undecodable mailbox name NO without the traceback
Twisted's ``_parseMbox`` logs.

Faults: ``on`` is "connect" or the command verb (UID FETCH is "FETCH" with the
attribute ``uid = true``), asked once the command's arguments are parsed.
Match attributes: ``user``, ``mailbox``, ``message`` (the sequence set), ``tls``,
``uid``, ``mechanism``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable, Mapping

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory
from twisted.mail import imap4

from testbed.servers.imap.spec import IMAPConfig
from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.journal import COMMAND, ERROR, REPLY, STORED, internal
from testbed.mail.store import MailStore
from testbed.servers.base import Server
from testbed.servers.imap.store import (Account, LoginCredentials, SearchError, body_structure, envelope,
                                        imap_date, parse_imap_date, portal_for, wire)

#: Extensions beyond IMAP4rev1 that CAPABILITY lists after AUTH and IDLE.
EXTENSIONS = (b"NAMESPACE", b"CHILDREN", b"UIDPLUS", b"MOVE", b"ID", b"ENABLE", b"UNSELECT", b"SPECIAL-USE",
              b"LITERAL+")

#: What ``ID`` (RFC 2971) says about the server.
SERVER_ID = (b"name", b"twisted-testbed", b"vendor", b"twisted-testbed")

IMAP4Server = imap4.IMAP4Server

#: SASL mechanisms the server knows; the scenario's ``auth`` picks among them.
MECHANISMS: dict[str, Callable[[str], Any]] = {
    "PLAIN": lambda host: imap4.PLAINCredentials(),
    "LOGIN": lambda host: LoginCredentials(),
    "CRAM-MD5": lambda host: imap4.credentials.CramMD5Credentials(host),
}

#: Commands whose first argument is a mailbox name (for the ``mailbox`` match attribute).
_MAILBOX_FIRST = {"SELECT", "EXAMINE", "STATUS", "APPEND", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE"}

#: Messages per reactor turn in a FETCH (the rest go on the next turn, other commands wait).
FETCH_BATCH = 200

#: The largest literal (an APPEND's message) accepted; a bigger one gets NO [TOOBIG] before "+".
MAX_LITERAL = 64 * 1024 * 1024

_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
_LITERAL_SIZE = re.compile(rb"[0-9]{1,20}")
_LITERAL_SPEC = re.compile(rb"(?:^|\s)\{([^{}]*)\}$")

#: A non-synchronizing literal (LITERAL+, RFC 7888) ending a line: the client sends it without waiting for "+".
_NONSYNC = re.compile(rb"\{(\d+)\+\}$")


def uid_set(uids: list[int]) -> bytes:
    """A UID set in ranges ("3:5,9"), in the order given (COPYUID pairs its two sets by position)."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in runs)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _mailbox_text(value: Any) -> str:
    # Not imap4._parseMbox: it logs a traceback (log.err) for every undecodable name before raising.
    try:
        return value.decode("imap4-utf-7") if isinstance(value, bytes) else _text(value)
    except Exception:
        return _text(value)


def _mailbox_args(name: str, args: tuple) -> tuple:
    """The arguments of command C{name} that are mailbox names (or LIST patterns)."""
    if name in ("RENAME", "LIST", "LSUB"):
        return args[:2]
    if name in _MAILBOX_FIRST:
        return args[:1]
    if name == "COPY":
        return args[1:2]
    return ()


def _undecodable(value: Any) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode("imap4-utf-7")
    except Exception:
        return True
    return False


def _first_word(rest: bytes | None) -> bytes:
    return (rest or b"").split(None, 1)[0] if (rest or b"").split() else b""


class ResponseTap:
    """Stands in for the transport while one command answers, to break that response on purpose.

    ``bye_mid_fetch``: after ``bytes`` bytes, ``* BYE`` and close. ``short_literal``:
    the first literal of the response sends ``missing`` bytes fewer than it announces.
    """

    def __init__(self, inner, server: "TestbedIMAPServer", tag: bytes, fault):
        self.inner = inner
        self.server = server
        self.tag = tag
        self.fault = fault
        self.action = fault.action
        self.limit = max(0, int(fault.param("bytes", 0) or 0))
        self.missing = max(0, int(fault.param("missing", 1) or 0))
        self.message = str(fault.param("message") or "[UNAVAILABLE] Connection lost during FETCH (injected fault)")
        self.passed = 0
        self.last = b"\n"
        self.closed = False
        self._held = b""
        self._state = "scan"  # short_literal: scan -> literal -> done
        self._keep = self._drop = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.action == "bye_mid_fetch":
            self._bye_after(data)
        else:
            self._shorten(data)

    def _bye_after(self, data: bytes) -> None:
        room = self.limit - self.passed
        if len(data) < room:
            self.passed += len(data)
            self.last = data[-1:]
            self.inner.write(data)
            return
        head = data[:room]
        if head:
            self.inner.write(head)
            self.last = head[-1:]
        self.passed += len(head)
        self.closed = True
        bye = (b"" if self.last == b"\n" else b"\r\n") + b"* BYE " + self.message.encode("utf-8") + b"\r\n"
        self.inner.write(bye)
        self.server.journal(REPLY, tag=None, command=self.server.command_of(self.tag), status="BYE",
                            text=self.message, after_bytes=self.passed)
        self.inner.loseConnection()

    def _shorten(self, data: bytes) -> None:
        if self._state == "done":
            self.inner.write(data)
            return
        if self._state == "scan":
            buffered = self._held + data
            match = _LITERAL.search(buffered)
            if match is None:
                cut = max(0, len(buffered) - 16)  # a literal header may be split across writes
                self.inner.write(buffered[:cut])
                self._held = buffered[cut:]
                return
            self._held = b""
            self.inner.write(buffered[:match.end()])
            size = int(match.group(1))
            self._keep = max(0, size - self.missing)
            self._drop = size - self._keep
            self._state = "literal"
            data = buffered[match.end():]
        if self._keep:
            chunk, data = data[:self._keep], data[self._keep:]
            self._keep -= len(chunk)
            self.inner.write(chunk)
        if self._drop:
            dropped, data = data[:self._drop], data[self._drop:]
            self._drop -= len(dropped)
        if not self._keep and not self._drop:
            self._state = "done"
            if data:
                self.inner.write(data)

    def finish(self) -> None:
        """The command answered: hand on what was held back."""
        if self._held and not self.closed:
            self.inner.write(self._held)
        self._held = b""


class TestbedIMAPServer(IMAP4Server):
    """Twisted's IMAP4 server, asking the fault engine at every command and journaling it."""

    seam = NO_SEAM
    IDENT = b"testbed IMAP4rev1 ready"
    #: Long enough for the longest UID sets clients send (LineReceiver's default is 16 KiB).
    MAX_LENGTH = 64 * 1024
    lost = False
    #: The line being parsed ended in a LITERAL+ literal: its data follows without a "+".
    _nonsync = False
    #: A ``strip_starttls`` fault fired: this connection neither offers nor accepts STARTTLS.
    _tls_stripped = False
    #: Bytes of a failed command's LITERAL+ literal still to drop, then the rest of its line.
    _discarding = 0
    _discard_rest = False

    def __init__(self, factory: "IMAPFactory"):
        challengers = {name.encode(): (lambda make=make: make(factory.hostname))
                       for name, make in MECHANISMS.items() if name in factory.mechanisms}
        super().__init__(chal=challengers, contextFactory=factory.ctx)
        self.factory = factory
        self.portal = factory.portal
        self.callLater = factory.clock.callLater
        self.secure = False
        self.tap: ResponseTap | None = None
        self._idle_ack = True
        self._tags: dict[bytes, str] = {}
        self._tag: bytes | None = None

    # -- journal ------------------------------------------------------------------

    def journal(self, kind: str, **fields: Any) -> None:
        self.seam.record(kind, **fields)

    def command_of(self, tag: bytes | None) -> str | None:
        return self._tags.get(tag) if tag else None

    @property
    def user(self) -> str | None:
        return getattr(self.account, "user", None)

    def dispatchCommand(self, tag, cmd, rest, uid=None):
        # Journal the command as received (LOGIN/AUTHENTICATE without their secrets);
        # a UID command is journaled once, as its verb with uid=True.
        self._tag = tag
        if rest is None:
            rest = b""  # Twisted's argument parsers crash on None: make it "Missing argument"
        if uid is None:
            name = cmd.upper().decode("ascii", "replace")
            fields: dict[str, Any] = {"uid": False}
            args = rest
            if name == "UID":
                name = _first_word(rest).upper().decode("ascii", "replace")
                fields["uid"] = True
                args = rest.split(None, 1)[1] if rest and len(rest.split(None, 1)) > 1 else b""
            if name == "LOGIN":
                user = _first_word(args)
                fields["user"] = "<literal>" if user.startswith(b"{") else _text(user.strip(b'"'))
                self._secret_tag = tag
                self.seam.redact(args)  # user and password as sent; literals follow in ``rawDataReceived``
            elif name == "AUTHENTICATE":
                fields["mechanism"] = _text(_first_word(args)).upper()
                self._secret_tag = tag
                initial = args.split(None, 1)[1:] if args else []
                if initial:
                    self.seam.redact(initial[0])  # SASL-IR
            elif args:
                fields["args"] = _text(args)[:200]
            self._tags[tag] = name
            self.journal(COMMAND, tag=_text(tag), command=name, **fields)
        refusal = self._bad_literal_size(rest)
        if refusal is not None:
            raise imap4.IllegalClientResponse(refusal)  # Twisted's parse_command answers it with BAD
        return super().dispatchCommand(tag, cmd, rest, uid)

    def _bad_literal_size(self, line: bytes) -> str | None:
        """Why the literal that ends C{line} is refused, journaled; None if there is none or it is good.

        Twisted reads a literal's size with int(), which takes "-1" (then waits for a negative count
        of octets and swallows the next line), "+5", "1_0" and " 5"; RFC 3501 says number = 1*DIGIT.
        """
        if not line.endswith(b"}"):
            return None
        match = _LITERAL_SPEC.search(line)
        if match is None or _LITERAL_SIZE.fullmatch(match.group(1)):
            return None
        size = match.group(1)[:40]
        self.journal(ERROR, error="invalid literal size", size=_text(size))
        return f"Invalid literal size: {size!r}"  # the repr of bytes: Twisted sends the reason as ASCII

    def parse_pending(self, line):
        if self._secret_tag is not None:
            self.seam.redact(line)
        # The line after a literal may announce the next literal of the same command.
        refusal = self._bad_literal_size(line)
        if refusal is None:
            return super().parse_pending(line)
        self._pendingLiteral, self.parseState = None, "command"
        self.sendBadResponse(self._tag, b"Illegal syntax: " + refusal.encode("utf-8"))

    def _respond(self, state, tag, message):
        # Twisted passes str messages in places (TRYCREATE, \Noselect): encode them, don't crash.
        if isinstance(message, str):
            message = message.encode("utf-8")
        if isinstance(state, str):
            state = state.encode("utf-8")
        super()._respond(state, tag, message)
        if tag and tag != b"*" and state in (b"OK", b"NO", b"BAD"):
            command = self._tags.pop(tag, None)
            fields: dict[str, Any] = {}
            if tag == self._secret_tag:
                self._secret_tag = None
            if state == b"OK" and command in ("LOGIN", "AUTHENTICATE") and self.account is not None:
                fields.update(login=True, user=self.user)
                self.seam.guard(False)
            self.journal(REPLY, tag=_text(tag), command=command, status=state.decode(),
                         text=_text(message)[:200], **fields)
            if self.tap is not None and self.tap.tag == tag and not self.tap.closed:
                self.tap.finish()
                self.transport = self.tap.inner
                self.tap = None
        elif not tag and state.startswith(b"BYE"):
            self.journal(REPLY, tag=None, command=None, status="BYE", text=_text(state[4:])[:200])

    # -- connection -----------------------------------------------------------------

    #: The tag of a LOGIN or AUTHENTICATE under way: its literals and continuation lines are secrets.
    _secret_tag: bytes | None = None

    def connectionMade(self):
        self.seam.guard(True)  # until a login: LOGIN and AUTHENTICATE carry secrets
        self.tags = {}
        self.canStartTLS = interfaces.ITLSTransport(self.transport, None) is not None
        self.secure = self.seam.tls or (
            interfaces.ISSLTransport(self.transport, None) is not None)
        self.setTimeout(self.timeOut)
        fault = self.seam.at("connect")
        if fault is not None and fault.action == "strip_starttls":
            self._tls_stripped, fault = True, None
        if fault is not None and fault.action == "preauth":
            self._preauth(fault)
        elif not self.seam.carry_out(fault, "connect", self._send_untagged, command="connect", tag=None):
            self.sendServerGreeting()

    def _preauth(self, fault) -> None:
        user = fault.param("user") or self.factory.preauth_user
        if not user or not self.factory.mail.has_user(user):
            self.journal(ERROR, error="preauth user unknown", user=user)
            self.sendServerGreeting()
            return
        self.account = Account(self.factory.mail, user.lower(), self.factory.on_stored)
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        caps = b" ".join(self.listCapabilities())
        self.sendLine(b"* PREAUTH [CAPABILITY " + caps + b"] Logged in as " + self.user.encode("utf-8"))
        self.journal(REPLY, tag=None, command="connect", status="PREAUTH", login=True, user=self.user)

    def connectionLost(self, reason):
        # Twisted leaves the selected mailbox listening to the store after a disconnect.
        self.lost = True
        if self.mbox is not None:
            self.mbox.removeListener(self)
            self.mbox = None
        super().connectionLost(reason)

    def lineReceived(self, line):
        # LITERAL+: "{n+}" is read as "{n}", and the "+" Twisted would then send is not.
        if self._discard_rest:
            self._discard_rest = False
            match = _NONSYNC.search(line)
            if match is not None:
                self._discard(int(match.group(1)))
            return None
        match = None
        if self.blocked is None and self.parseState in ("command", "pending"):
            match = _NONSYNC.search(line)
            if match is not None:
                line = line[:match.start()] + b"{" + match.group(1) + b"}"
                self._nonsync = True
        try:
            return super().lineReceived(line)
        finally:
            if self._nonsync:
                # The command failed before reading its literal, which is on its way
                # regardless: it must not be taken for commands.
                self._nonsync = False
                self._discard(int(match.group(1)))

    def sendContinuationRequest(self, msg=b"Ready for additional command text"):
        if self._nonsync:
            self._nonsync = False
            return
        super().sendContinuationRequest(msg)

    def _discard(self, size: int) -> None:
        """Drop the next ``size`` bytes (a failed command's literal), then the rest of that command's line."""
        self._discarding = size
        self.journal(ERROR, error="literal discarded", size=size)
        self.setRawMode()

    def rawDataReceived(self, data):
        if self._secret_tag is not None:
            self.seam.redact(data)  # a literal of LOGIN or AUTHENTICATE
        if not self._discarding:
            return super().rawDataReceived(data)
        taken = min(len(data), self._discarding)
        self._discarding -= taken
        if not self._discarding:
            self._discard_rest = True
            self.setLineMode(data[taken:])

    def lineLengthExceeded(self, line):
        # LineReceiver would drop the connection without a word.
        self.journal(ERROR, error="line too long", size=len(line))
        self.sendLine(b"* BYE [TOOBIG] Line too long")
        self.transport.loseConnection()

    def parse_command(self, line):
        # An exception here would otherwise become an untagged BAD and the client would wait forever.
        try:
            return super().parse_command(line)
        except Exception as e:
            tag = line.split(None, 1)[0] if line.split() else None
            # Twisted's parser decodes a command name as ASCII, as RFC 3501 requires: a non-ASCII one is the
            # client's bad input; any other exception is ours, and fails the test that caused it.
            cause = {} if isinstance(e, UnicodeDecodeError) else internal(e)
            self.journal(ERROR, error="command failed", detail=repr(e)[:200], **cause)
            self.sendBadResponse(tag, b"Server error: " + str(e).encode("utf-8", "replace")[:200])

    # -- faults at each command ---------------------------------------------------------

    def lookupCommand(self, cmd):
        entry = super().lookupCommand(cmd)
        if not entry:
            return entry
        name = cmd.upper().decode("ascii", "replace")
        if name == "UID":
            return entry  # do_UID dispatches the verb again, with uid=1
        handler = entry[0]

        def run(server, tag, *args, **kwargs):
            return server._run(name, handler, tag, args, kwargs)

        return (run,) + tuple(entry[1:])

    def _attributes(self, name: str, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {"tls": self.secure, "uid": bool(kwargs.get("uid"))}
        user = self.user
        mailbox = self.mbox.name if self.mbox is not None else None
        if name == "LOGIN" and args:
            user = _text(args[0])
        elif name == "AUTHENTICATE" and args:
            attrs["mechanism"] = _text(args[0]).upper()
        if name in _MAILBOX_FIRST and args:
            mailbox = _mailbox_text(args[0])
        elif name in ("LIST", "LSUB") and len(args) > 1:
            mailbox = _mailbox_text(args[1])
        elif name in ("COPY", "MOVE") and len(args) > 1:
            mailbox = _mailbox_text(args[1])
        if name in ("FETCH", "STORE", "COPY", "MOVE") and args:
            attrs["message"] = str(args[0])
        attrs["user"] = user
        attrs["mailbox"] = mailbox
        return attrs

    def _run(self, name: str, handler, tag: bytes, args: tuple, kwargs: dict):
        for mailbox in _mailbox_args(name, args):
            if _undecodable(mailbox):
                # Bad input, not a server error: Twisted's handlers would log a traceback (_parseMbox's log.err).
                self.journal(ERROR, error="undecodable mailbox name", command=name, mailbox=_text(mailbox))
                self.sendNegativeResponse(tag, b"Illegal mailbox name: " + repr(mailbox).encode("ascii"))
                return None
        attributes = self._attributes(name, args, kwargs)
        fault = self.seam.at(name, **attributes)
        if fault is None or fault.wire:
            return handler(self, tag, *args, **kwargs)
        if self.seam.carry_out(fault, name, lambda status, text: self._fault_reply(status, text, name, tag),
                               command=name, tag=_text(tag)):
            self._tags.pop(tag, None)
            return None
        action = fault.action
        if action in ("bye_mid_fetch", "short_literal"):
            if self.tap is None:
                self.tap = ResponseTap(self.transport, self, tag, fault)
                self.transport = self.tap
        elif action == "strip_starttls":
            self._tls_stripped = True  # the downgrade: STARTTLS neither offered nor accepted from now on
        elif action == "idle_no_ack":
            self._idle_ack = False
        elif action == "uidvalidity_change":
            box = self._box_named(attributes.get("mailbox"))
            if box is not None:
                value = box.bump_uid_validity()
                self.journal(STORED, uid_validity=value, mailbox=box.name, user=self.user)
        return handler(self, tag, *args, **kwargs)

    def _box_named(self, name: str | None):
        if self.account is None or not name:
            return None
        return self.account.box(name)

    def _send_untagged(self, status: str, text: str) -> None:
        """A ``reply`` fault at the greeting: ``* BYE``, ``* NO`` or ``* BAD`` instead of ``* OK``."""
        self.sendLine(f"* {status} {text}".encode("utf-8"))
        self.journal(REPLY, tag=None, command="connect", status=status, text=text)

    def _fault_reply(self, status: str, text: str, name: str, tag: bytes) -> None:
        """A ``reply`` fault at a command: a tagged NO/BAD, or an untagged BYE (the seam then closes)."""
        if status == "BYE":
            self.sendLine(b"* BYE " + text.encode("utf-8"))
            self._tags.pop(tag, None)
            self.journal(REPLY, tag=_text(tag), command=name, status="BYE", text=text)
            return
        self._respond(status.encode(), tag, text.encode("utf-8"))

    # -- capabilities, STARTTLS, LOGIN, AUTHENTICATE ----------------------------------------

    def _starttls_offered(self) -> bool:
        return bool(self.ctx) and self.canStartTLS and not self.secure and not self._tls_stripped

    def _login_disabled(self) -> bool:
        return self.factory.require_tls and not self.secure

    def capabilities(self):
        # Twisted advertises LOGINDISABLED whenever STARTTLS is possible; here only with require_tls.
        cap: dict[bytes, Any] = {}
        if self._starttls_offered():
            cap[b"STARTTLS"] = None
        if self._login_disabled():
            cap[b"LOGINDISABLED"] = None
        else:
            cap[b"AUTH"] = list(self.challengers)
        cap[b"IDLE"] = None
        for extension in EXTENSIONS:
            cap[extension] = None
        return cap

    def do_STARTTLS(self, tag):
        # Twisted's does not drop plaintext pipelined after STARTTLS (the STARTTLS injection flaw).
        if self.secure:
            self.sendBadResponse(tag, b"TLS is already active")
        elif not (self.ctx and self.canStartTLS) or self._tls_stripped:
            self.sendNegativeResponse(tag, b"TLS not available")
        else:
            self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
            self._buffer = b""
            self.transport.startTLS(self.ctx)
            self.secure = self.startedTLS = True

    unauth_STARTTLS = (do_STARTTLS,)

    def do_LOGIN(self, tag, user, passwd):
        if self._login_disabled():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] LOGIN is disabled before STARTTLS")
            return
        d = defer.maybeDeferred(self.authenticateLogin, user, passwd)
        d.addCallbacks(self._logged_in, self._login_failed, (tag, b"LOGIN"), None, (tag,), None)

    unauth_LOGIN = (do_LOGIN, IMAP4Server.arg_astring, IMAP4Server.arg_finalastring)

    def do_AUTHENTICATE(self, tag, mechanism):
        # Twisted's: no response codes, a BAD-less "*" cancel, and "User Name\0" LOGIN prompts.
        mechanism = mechanism.upper().strip()
        if self._login_disabled():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Authentication is disabled before STARTTLS")
        elif mechanism not in self.challengers:
            self.sendNegativeResponse(tag, b"[CANNOT] Unsupported authentication mechanism")
        else:
            self._challenge(self.challengers[mechanism](), tag)

    unauth_AUTHENTICATE = (do_AUTHENTICATE, IMAP4Server.arg_atom)

    def _challenge(self, chal, tag) -> None:
        challenge = chal.getChallenge()
        self.parseState = "pending"
        self._pendingLiteral = defer.Deferred()
        self._pendingLiteral.addCallback(self._auth_response, chal, tag)
        self._pendingLiteral.addErrback(self._auth_error, tag)
        self.sendLine(b"+ " + base64.b64encode(challenge))  # "+ " even for an empty challenge (RFC 3501 9)

    def _auth_response(self, line: bytes, chal, tag) -> None:
        if line.strip() == b"*":
            self.sendBadResponse(tag, b"AUTHENTICATE cancelled")
            return
        try:
            response = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.sendBadResponse(tag, b"Invalid base64 in the AUTHENTICATE response")
            return
        try:
            chal.setResponse(response)
        except Exception:
            self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Malformed response")
            return
        if chal.moreChallenges():
            self._challenge(chal, tag)
            return
        d = self.portal.login(chal, None, imap4.IAccount)
        d.addCallbacks(self._logged_in, self._login_failed, (tag, b"AUTHENTICATE"), None, (tag,), None)

    def _auth_error(self, failure, tag) -> None:
        self.sendBadResponse(tag, b"Server error: " + str(failure.value).encode("utf-8", "replace"))

    def _logged_in(self, result, tag, how: bytes) -> None:
        _, avatar, logout = result
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        self.sendPositiveResponse(tag, how + b" completed")

    def _login_failed(self, failure, tag) -> None:
        if failure.check(UnauthorizedLogin):
            self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Authentication failed")
        else:
            self.journal(ERROR, error="login failed unexpectedly", detail=repr(failure.value)[:200],
                         **internal(failure))
            self.sendBadResponse(tag, b"Server error: login failed unexpectedly")

    # -- SELECT, STATUS, APPEND, COPY ---------------------------------------------------------

    def _cbSelectWork(self, mbox, cmdName, tag):
        # Twisted sends neither UIDNEXT, PERMANENTFLAGS nor UNSEEN, and [NONEXISTENT] is RFC 5530.
        if mbox is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        mbox.addListener(self)
        flags = b" ".join(f.encode() for f in mbox.getFlags())
        self.sendUntaggedResponse(b"FLAGS (" + flags + b")")
        self.sendUntaggedResponse(b"%d EXISTS" % mbox.getMessageCount())
        self.sendUntaggedResponse(b"%d RECENT" % mbox.getRecentCount())
        unseen = mbox.first_unseen()
        if unseen is not None:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen" % unseen)
        permanent = flags + b" \\*" if mbox.isWriteable() else b""
        self.sendPositiveResponse(None, b"[PERMANENTFLAGS (" + permanent + b")] Limited")
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % mbox.getUIDValidity())
        self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % mbox.getUIDNext())
        mode = b"[READ-WRITE]" if mbox.isWriteable() else b"[READ-ONLY]"
        self.state = "select"
        self.mbox = mbox
        self.sendPositiveResponse(tag, mode + b" " + cmdName + b" completed")

    _STATUS_ITEMS = {"MESSAGES": "getMessageCount", "RECENT": "getRecentCount", "UIDNEXT": "getUIDNext",
                     "UIDVALIDITY": "getUIDValidity", "UNSEEN": "getUnseenCount"}

    def _cbStatusGotMailbox(self, mbox, tag, mailbox, names):
        # Twisted's crashes on an unknown item and sends the name unquoted.
        if not mbox:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        items = []
        for name in names:
            method = self._STATUS_ITEMS.get(name.upper())
            if method is None:
                self.sendBadResponse(tag, b"Unknown STATUS item " + name.encode("utf-8", "replace"))
                return
            items.append(b"%s %d" % (name.upper().encode(), getattr(mbox, method)()))
        self.sendUntaggedResponse(b"STATUS " + imap4._prepareMailboxName(mailbox) + b" (" + b" ".join(items) + b")")
        self.sendPositiveResponse(tag, b"STATUS completed")

    def _cbAppendGotMailbox(self, mbox, tag, flags, date, message):
        # Twisted's sends "* n EXISTS" of the target even when another mailbox is selected;
        # here the selected mailbox's own listener reports what changed.
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        try:
            when = parse_imap_date(_text(date)) if date else None
        except ValueError:
            self.sendBadResponse(tag, b"Invalid date-time")
            return
        try:
            uid = mbox.append(message.read(), [_text(f) for f in flags or ()], when)
        except ValueError as e:
            self.sendNegativeResponse(tag, b"[CANNOT] " + str(e).encode("utf-8", "replace"))
            return
        self.sendPositiveResponse(tag, b"[APPENDUID %d %d] APPEND completed" % (mbox.getUIDValidity(), uid))

    def arg_literal(self, line):
        match = re.fullmatch(rb"\{(\d+)\}", line or b"")
        if match is not None and int(match.group(1)) > MAX_LITERAL:
            self.sendNegativeResponse(self._tag, b"[TOOBIG] Message too large")
            # Never fires: the command ends here. The client sends no literal, or
            # (LITERAL+) sends it anyway and lineReceived drops it.
            return defer.Deferred()
        return IMAP4Server.arg_literal(self, line)

    auth_APPEND = select_APPEND = (IMAP4Server.do_APPEND, IMAP4Server.arg_astring, IMAP4Server.opt_plist,
                                   IMAP4Server.opt_datetime, arg_literal)

    def _cbCopySelectedMailbox(self, mbox, tag, messages, mailbox, uid):
        # Twisted's answers a missing mailbox without [TRYCREATE] and never says COPYUID (RFC 4315).
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        copied = self._copy_to(mbox, messages, uid, tag)
        if copied is not None:
            self.sendPositiveResponse(tag, self._copyuid(mbox, *copied) + b"COPY completed")

    def _copy_to(self, target, messages, uid, tag) -> tuple[list[int], list[int]] | None:
        """Copy the messages to ``target``: (source UIDs, new UIDs), or None after a NO."""
        sources, copies = [], []
        try:
            for _, message in self.mbox.fetch(messages, uid):
                copies.append(target.copy(message))
                sources.append(message.getUID())
        except ValueError as e:
            self.sendNegativeResponse(tag, b"[CANNOT] " + str(e).encode("utf-8", "replace"))
            return None
        return sources, copies

    @staticmethod
    def _copyuid(target, sources: list[int], copies: list[int]) -> bytes:
        if not sources:
            return b""
        return b"[COPYUID %d %s %s] " % (target.getUIDValidity(), uid_set(sources), uid_set(copies))

    # -- UIDPLUS, MOVE, UNSELECT, ID, ENABLE --------------------------------------------------

    def do_UID(self, tag, command, line):
        # Twisted's knows only UID COPY, FETCH, STORE and SEARCH.
        command = command.upper()
        if command not in (b"COPY", b"FETCH", b"STORE", b"SEARCH", b"EXPUNGE", b"MOVE"):
            raise imap4.IllegalClientResponse(command)
        self.dispatchCommand(tag, command, line, uid=1)

    select_UID = (do_UID, IMAP4Server.arg_atom, IMAP4Server.arg_line)

    def opt_uid_set(self, line):
        """EXPUNGE takes nothing; UID EXPUNGE a UID set (RFC 4315)."""
        if not (line or b"").strip():
            return None, b""
        return IMAP4Server.arg_seqset(self, line)

    def do_EXPUNGE(self, tag, uids=None, uid=0):
        if not uid:
            if uids is not None:
                raise imap4.IllegalClientResponse("EXPUNGE takes no arguments")
            return IMAP4Server.do_EXPUNGE(self, tag)
        if uids is None:
            raise imap4.IllegalClientResponse("UID EXPUNGE needs a UID set")
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        for seq in self.mbox.expunge_uids(uids):
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        self.sendPositiveResponse(tag, b"UID EXPUNGE completed")

    select_EXPUNGE = (do_EXPUNGE, opt_uid_set)

    def do_MOVE(self, tag, messages, mailbox, uid=0):
        """RFC 6851: copy, say COPYUID untagged, expunge the originals, then OK."""
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        target = self.account.select(imap4._parseMbox(mailbox))
        if not target:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        copied = self._copy_to(target, messages, uid, tag)
        if copied is None:
            return
        sources, copies = copied
        if sources:
            self.sendUntaggedResponse(b"OK " + self._copyuid(target, sources, copies) + b"Moved")
        for seq in self.mbox.remove(sources):
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        self.sendPositiveResponse(tag, b"MOVE completed")

    select_MOVE = (do_MOVE, IMAP4Server.arg_seqset, IMAP4Server.arg_finalastring)

    def do_UNSELECT(self, tag):
        """RFC 3691: leave the selected mailbox without expunging it."""
        self.mbox.removeListener(self)
        self.mbox = None
        self.state = "auth"
        self.sendPositiveResponse(tag, b"UNSELECT completed")

    select_UNSELECT = (do_UNSELECT,)

    def arg_id_params(self, line):
        """ID's argument: NIL, or a parenthesized list of field-value pairs (RFC 2971)."""
        line = (line or b"").strip()
        if line.upper() == b"NIL":
            return None, b""
        try:
            params = imap4.parseNestedParens(line)
        except Exception as e:
            raise imap4.IllegalClientResponse(f"bad ID parameters: {e}") from None
        if len(params) != 1 or not isinstance(params[0], list) or len(params[0]) % 2:
            raise imap4.IllegalClientResponse("ID takes NIL or a list of field-value pairs")
        return params[0], b""

    def do_ID(self, tag, params):
        self.sendUntaggedResponse(b"ID (" + b" ".join(b'"%s"' % v for v in SERVER_ID) + b")")
        self.sendPositiveResponse(tag, b"ID completed")

    unauth_ID = auth_ID = select_ID = (do_ID, arg_id_params)

    def do_ENABLE(self, tag, extensions):
        # None of the extensions ENABLE can turn on (CONDSTORE, UTF8=ACCEPT...) is offered: none is enabled.
        if not extensions.strip():
            raise imap4.IllegalClientResponse("ENABLE needs at least one capability")
        self.sendUntaggedResponse(b"ENABLED")
        self.sendPositiveResponse(tag, b"ENABLE completed")

    auth_ENABLE = (do_ENABLE, IMAP4Server.arg_line)

    # -- IDLE -----------------------------------------------------------------------------

    def do_IDLE(self, tag):
        # Twisted's sends a bare "+" and ends IDLE on any line, not only DONE.
        if self._idle_ack:
            self.sendContinuationRequest(b"idling")
        self._idle_ack = True
        self.parseTag = tag
        self.lastState = self.parseState
        self.parseState = "idle"

    def parse_idle(self, line):
        self.parseState = self.lastState
        tag = self.parseTag
        del self.lastState, self.parseTag
        if line.strip().upper() == b"DONE":
            self.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self.sendBadResponse(tag, b"Expected DONE")

    auth_IDLE = select_IDLE = (do_IDLE,)

    def messageExpunged(self, seq: int) -> None:
        """Another session expunged message ``seq`` of the selected mailbox."""
        self.sendUntaggedResponse(b"%d EXPUNGE" % seq, isAsync=True)

    # -- FETCH, STORE, SEARCH --------------------------------------------------------------

    def arg_plist(self, line):
        try:
            return IMAP4Server.arg_plist(self, line)
        except imap4.IllegalClientResponse:
            raise
        except Exception as e:
            raise imap4.IllegalClientResponse(f"bad list: {e}") from None

    auth_STATUS = select_STATUS = (IMAP4Server.do_STATUS, IMAP4Server.arg_astring, arg_plist)

    def arg_fetchatt(self, line):
        # Twisted's parser raises a bare Exception, which became an untagged BAD.
        try:
            return super().arg_fetchatt(line)
        except imap4.IllegalClientResponse:
            raise
        except Exception as e:
            raise imap4.IllegalClientResponse(str(e)) from None

    def do_FETCH(self, tag, messages, query, uid=0):
        if not query:
            self.sendPositiveResponse(tag, b"FETCH completed")
            return
        results = self.mbox.fetch(messages, uid=uid)
        self._fetch_batch(tag, results, query, uid, 0)

    select_FETCH = (do_FETCH, IMAP4Server.arg_seqset, arg_fetchatt)

    def _fetch_batch(self, tag, results, query, uid, start: int) -> None:
        if self.lost:
            return
        end = min(start + FETCH_BATCH, len(results))
        for seq, message in results[start:end]:
            self.transport.write(self._fetch_response(seq, message, query, uid))
        if end < len(results):
            if self.blocked is None:
                self.blocked = []
            self.callLater(0, self._fetch_batch, tag, results, query, uid, end)
            return
        self.sendPositiveResponse(tag, b"FETCH completed")
        if self.blocked is not None:
            self._unblock()

    @staticmethod
    def _sets_seen(item) -> bool:
        return item.type in ("rfc822", "rfc822text") or (item.type == "body" and not item.peek and (
            item.empty or item.header or item.text or item.mime))

    def _fetch_response(self, seq: int, message, query, uid) -> bytes:
        items = []
        types = {item.type for item in query}
        if uid and "uid" not in types:
            items.append(b"UID %d" % message.getUID())
        if (self.mbox.isWriteable() and "\\Seen" not in message.stored.flags
                and any(self._sets_seen(item) for item in query)):
            self.mbox.set_flags(message.stored, ["\\Seen"], 1)
            if "flags" not in types:
                items.append(self._fetch_item(self._FLAGS, message))
        for item in query:
            items.append(self._fetch_item(item, message))
        return b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"

    _FLAGS = imap4._FetchParser.Flags()

    def _fetch_item(self, item, message) -> bytes:
        kind = item.type
        part = message.part
        if kind == "flags":
            return b"FLAGS (" + " ".join(message.getFlags()).encode("utf-8") + b")"
        if kind == "uid":
            return b"UID %d" % message.getUID()
        if kind == "internaldate":
            return b'INTERNALDATE "' + imap_date(message.stored.internal_date).encode() + b'"'
        if kind == "rfc822size":
            return b"RFC822.SIZE %d" % message.getSize()
        if kind == "envelope":
            return b"ENVELOPE " + imap4.collapseNestedLists([wire(envelope(part))])
        if kind == "bodystructure":
            return b"BODYSTRUCTURE " + imap4.collapseNestedLists([wire(body_structure(part, True))])
        if kind == "rfc822":
            return b"RFC822 " + _literal(message.stored.raw)
        if kind == "rfc822header":
            return b"RFC822.HEADER " + _literal(part.header)
        if kind == "rfc822text":
            return b"RFC822.TEXT " + _literal(part.body)
        # BODY, BODY[section]<partial>, BODY.PEEK[...]
        if not (item.empty or item.header or item.text or item.mime):
            return b"BODY " + imap4.collapseNestedLists([wire(body_structure(part, False))])
        path = list(item.part or ())
        numbers = b".".join(b"%d" % (n + 1) for n in path)
        fields: list[str] = []
        if item.header is not None:
            fields = [_text(f).upper() for f in (item.header.fields or ())]
            spec = "FIELDS" if fields else "HEADER"
            name = b"HEADER" if not fields else (
                b"HEADER.FIELDS" + (b".NOT" if item.header.negate else b"") + b" (" + " ".join(fields).encode() + b")")
            data = part.section(path, spec, fields, bool(item.header.negate and fields))
        elif item.text is not None:
            name, data = b"TEXT", part.section(path, "TEXT")
        elif item.mime is not None:
            name, data = b"MIME", part.section(path, "MIME")
        else:
            name, data = b"", part.section(path)
        section = numbers + (b"." if numbers and name else b"") + name
        label = b"BODY[" + section + b"]"
        if data is None:
            return label + b" NIL"
        if item.partialBegin is not None:
            begin = int(item.partialBegin)
            data = data[begin:begin + int(item.partialLength)]
            label += b"<%d>" % begin
        return label + b" " + _literal(data)

    def do_STORE(self, tag, messages, mode, flags, uid=0):
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        return super().do_STORE(tag, messages, mode, flags, uid=uid)

    def arg_flaglist(self, line):
        if not line:
            raise imap4.IllegalClientResponse("Missing argument")
        return IMAP4Server.arg_flaglist(self, line)

    select_STORE = (do_STORE, IMAP4Server.arg_seqset, IMAP4Server.arg_atom, arg_flaglist)

    def arg_searchkeys(self, line, _prefix=b""):
        # Twisted's parses a literal ({n}) as an empty string; here it is read and quoted in.
        match = re.search(rb"\{(\d+)\}$", line)
        if match is None:
            try:
                return imap4.parseNestedParens(_prefix + line), b""
            except Exception as e:
                raise imap4.IllegalClientResponse(f"bad search keys: {e}") from None
        before = line[:match.start()]
        d = self._stringLiteral(int(match.group(1)))

        def literal(result):
            data, rest = result
            quoted = b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
            return self.arg_searchkeys(rest, _prefix + before + quoted)

        return d.addCallback(literal)

    def do_SEARCH(self, tag, charset, query, uid=0):
        if charset and charset.upper() not in (b"US-ASCII", b"UTF-8"):
            self.sendNegativeResponse(tag, b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
            return
        try:
            found = self.mbox.search(query, uid=uid)
        except SearchError as e:
            self.sendBadResponse(tag, str(e).encode("utf-8", "replace"))
            return
        self.sendUntaggedResponse(b"SEARCH" + b"".join(b" %d" % n for n in found))
        self.sendPositiveResponse(tag, b"SEARCH completed")

    select_SEARCH = (do_SEARCH, IMAP4Server.opt_charset, arg_searchkeys)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class IMAPFactory(SeamFactory, Factory):
    """Builds ``TestbedIMAPServer`` connections sharing one store, one portal and one clock."""

    protocol = TestbedIMAPServer
    noisy = False

    def __init__(self, config: IMAPConfig, mail: MailStore, ctx=None, clock=None, preauth_user: str | None = None,
                 on_stored: Callable[..., None] | None = None, hostname: str = "testbed.test"):
        if clock is None:
            from twisted.internet import reactor as clock
        unknown = [m for m in config.auth if m.upper() not in MECHANISMS]
        if unknown:
            raise ValueError(f"servers.imap.auth: expected mechanisms among {', '.join(MECHANISMS)}, got {unknown[0]!r}")
        self.config = config
        self.mail = mail
        self.ctx = ctx
        self.clock = clock
        self.mechanisms = [m.upper() for m in config.auth]
        self.require_tls = config.require_tls
        self.hostname = hostname
        self.preauth_user = preauth_user if preauth_user is not None else next(iter(mail.users), None)
        self.on_stored = on_stored
        self.portal = portal_for(mail, on_stored)

    def buildProtocol(self, addr, seam=NO_SEAM):
        p = self.protocol(self)
        p.seam = seam
        return p


def build_factory(config: IMAPConfig, mail: MailStore, tls=None, reactor=None, preauth_user: str | None = None,
                  on_stored: Callable[..., None] | None = None) -> IMAPFactory:
    """The protocol factory the server listens with: STARTTLS offered when ``config.tls == "starttls"``."""
    ctx = tls.options() if tls is not None and config.tls == "starttls" else None
    return IMAPFactory(config, mail, ctx=ctx, clock=reactor, preauth_user=preauth_user, on_stored=on_stored)


class IMAPServer(Server):
    """``imap_server``: ``host``, ``port``, ``tls_port``, ``commands``, ``logins``, ``messages()``, ``wait_for``."""

    scheme = "imap"
    tls_scheme = "imaps"

    @defer.inlineCallbacks
    def start(self):
        context = self.context
        users = list(context.users)
        factory = build_factory(self.config, context.mail(), self.tls, context.reactor,
                                preauth_user=users[0] if users else None, on_stored=self._stored)
        config = self.config
        if config.listen:
            yield self.listen(config.listen, factory, "imap", tls=config.tls == "implicit")
        if config.tls_listen:
            yield self.listen(config.tls_listen, factory, "imaps", tls=True)

    def _stored(self, **fields: Any) -> None:
        self.context.journal.record(STORED, self.name, None, **fields)

    # -- the handle -------------------------------------------------------------------------

    @property
    def commands(self) -> list[dict]:
        """Every command received (journal events: tag, command, uid, args or user/mechanism)."""
        return self.context.journal.query(COMMAND, server=self.name)

    @property
    def replies(self) -> list[dict]:
        """Every tagged reply and BYE sent (journal events: tag, command, status, text)."""
        return self.context.journal.query(REPLY, server=self.name)

    @property
    def logins(self) -> list[dict]:
        """Successful logins (LOGIN, AUTHENTICATE or PREAUTH), each with its user."""
        return [e for e in self.replies if e.get("login")]

    def messages(self, user: str | None = None, mailbox: str = "INBOX") -> list:
        """The ``StoredMessage`` list of a mailbox (default: the scenario's first user's INBOX)."""
        context = self.context
        if user is None:
            user = next(iter(self.context.users))
        return context.call(lambda: list(context.mail().mailbox(user, mailbox).messages))

    def deliver(self, recipient: str, raw: bytes):
        """Put a message into ``recipient``'s INBOX, as SMTP would (in the reactor thread)."""
        context = self.context
        return context.call(context.mail().deliver, recipient, raw)

    wait_selector = "of"

    def wait_records(self, selector: str | None):
        """``wait_for(of=...)`` reads "commands" (the default), "replies" or "logins" (journal events)."""
        sources = {"commands": lambda: self.commands, "replies": lambda: self.replies, "logins": lambda: self.logins}
        of = selector or "commands"
        if of not in sources:
            raise ValueError(f"wait_for(of=...): one of {', '.join(sources)}, not {of!r}")
        return sources[of], of.rstrip("s")



__all__ = ["IMAPFactory", "IMAPServer", "TestbedIMAPServer", "build_factory"]
