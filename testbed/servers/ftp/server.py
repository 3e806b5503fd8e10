"""The FTP server with explicit FTPS, on twisted.protocols.ftp: a jailed or in-memory tree, faults at every command.

Subclasses Twisted's FTP, FTPFactory, DTP and DTPFactory and adds what they lack: REST and APPE,
MLSD/MLST, AUTH TLS/PBSZ/PROT (TLS on data connections too), bare NLST, a working ASCII mode, passive
ports bound to the control connection's address, fault-wrapped data connections, sendfile downloads.
"""

from __future__ import annotations

import fnmatch
import io
import ipaddress
import os
import re
import time
from typing import Any, Callable, Iterable, Sequence

import attrs
from twisted.cred import checkers, credentials, error as cred_error, portal
from twisted.internet import defer, error, interfaces, tcp
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import ftp
from twisted.python.failure import Failure
from zope.interface import implementer

from testbed.faults.wire import NO_FAULTS, FaultingFactory, FaultingProtocol
from testbed.journal import COMMAND, ERROR, OPEN, REPLY, STORED
from testbed.servers.base import Server
from testbed.servers.ftp.fs import ChunkedFileSender, files_snapshot, make_shell

_log = Logger()

#: Every command the server implements; each is also a fault stage (with ``connect`` and ``data``).
COMMANDS = frozenset({
    "USER", "PASS", "AUTH", "PBSZ", "PROT", "FEAT", "OPTS", "SYST", "NOOP", "QUIT",
    "PWD", "CWD", "CDUP", "TYPE", "STRU", "MODE", "PASV", "EPSV", "PORT", "EPRT",
    "LIST", "NLST", "MLSD", "MLST", "RETR", "STOR", "APPE", "REST", "SIZE", "MDTM",
    "DELE", "MKD", "RMD", "RNFR", "RNTO", "ABOR", "ALLO",
})
#: Allowed before login.
PUBLIC = frozenset({"FEAT", "QUIT", "AUTH", "PBSZ", "PROT", "OPTS", "SYST", "NOOP"})
#: Commands that take a mandatory argument.
NEEDS_ARGUMENT = frozenset({
    "USER", "AUTH", "PBSZ", "PROT", "OPTS", "CWD", "TYPE", "STRU", "MODE", "PORT", "EPRT",
    "RETR", "STOR", "APPE", "REST", "SIZE", "MDTM", "DELE", "MKD", "RMD", "RNFR", "RNTO",
})
#: Commands that take no argument: one given is ignored.
NO_ARGUMENT = frozenset({"FEAT", "SYST", "NOOP", "QUIT", "PWD", "CDUP", "PASV", "ABOR"})
DOWNLOADS = frozenset({"RETR", "LIST", "NLST", "MLSD"})
TRANSFERS = DOWNLOADS | {"STOR", "APPE"}
#: Where each protocol fault action other than ``reply`` and ``silence`` applies.
APPLIES_TO = {
    "wrong_address": frozenset({"PASV", "EPSV"}),
    "short_transfer": DOWNLOADS,
    "no_completion": TRANSFERS,
}

#: The text of a ``reply`` fault that gives no ``message``.
FAULT_TEXT = {
    421: "Service not available, closing control connection.",
    425: "Can't open data connection.",
    426: "Connection closed; transfer aborted.",
    450: "Requested file action not taken. File unavailable.",
    451: "Requested action aborted: local error in processing.",
    452: "Requested action not taken. Insufficient storage space in system.",
    500: "Syntax error, command unrecognized.",
    501: "Syntax error in parameters or arguments.",
    502: "Command not implemented.",
    503: "Bad sequence of commands.",
    504: "Command not implemented for that parameter.",
    521: "Data connection cannot be opened with this PROT setting.",
    522: "Network protocol not supported.",
    530: "Not logged in.",
    534: "Request denied for policy reasons.",
    536: "Requested PROT level not supported by mechanism.",
    550: "Requested action not taken. File unavailable.",
    552: "Requested file action aborted. Exceeded storage allocation.",
    553: "Requested action not taken. File name not allowed.",
}

#: Where a ``wrong_address`` fault sends the client when it names no port (nothing listens there).
WRONG_PORT = 1

_STAT_KEYS = ("size", "directory", "permissions", "hardlinks", "modified", "owner", "group")
_MLST_FACTS = ("type", "size", "modify", "perm")
_SENDFILE_STEP = 4 * 1024 * 1024
_SENDFILE_BUDGET = 16 * 1024 * 1024
_LONE_LF = re.compile(rb"(?<!\r)\n")


class FTPReply(Exception):
    """Answer the current command with ``code text`` (raised anywhere in a command's handling)."""

    def __init__(self, code: int, text: str):
        super().__init__(code, text)
        self.code = code
        self.text = text


def _show(path: Any) -> str:
    return str(path).replace("\0", "\\0").replace("\r", "\\r").replace("\n", "\\n")


def _shell_reply(failure: Failure) -> tuple[int, str] | None:
    """The reply for a filesystem error raised by a shell (Twisted's texts are wrong for some commands)."""
    value = failure.value
    if not isinstance(value, ftp.FTPCmdError):
        return None
    shown = _show(value.errorMessage[0]) if value.errorMessage else ""
    texts = {
        ftp.FileNotFoundError: "No such file or directory.",
        ftp.PermissionDeniedError: "Permission denied.",
        ftp.IsNotADirectoryError: "Not a directory.",
        ftp.IsADirectoryError: "Is a directory.",
        ftp.FileExistsError: "File exists.",
    }
    for cls, text in texts.items():
        if isinstance(value, cls):
            return 550, f"{shown}: {text}" if shown else text
    if isinstance(value, ftp.CmdArgSyntaxError):
        return 501, f"Syntax error in arguments: {shown}."
    return None


def parse_port_range(text: str) -> range | None:
    """ "LOW-HIGH" (validated by the scenario) as a range; None for empty."""
    if not text:
        return None
    low, high = (int(p) for p in text.split("-"))
    return range(low, high + 1)


def _plain_host(host: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4; anything else unchanged."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def _to_crlf() -> Callable[[bytes], bytes]:
    """ASCII-mode download transform: lone LF -> CRLF, across chunk boundaries."""
    state = {"cr": False}

    def transform(chunk: bytes) -> bytes:
        out = _LONE_LF.sub(b"\r\n", chunk)
        if state["cr"] and chunk[:1] == b"\n":
            out = out[1:]  # the CR ended the previous chunk
        state["cr"] = chunk[-1:] == b"\r"
        return out

    return transform


class _Limited:
    """A file object that ends after ``limit`` bytes (a ``short_transfer``)."""

    def __init__(self, fobj: Any, limit: int):
        self.fobj = fobj
        self.left = max(0, limit)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.fobj.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


# -- data connections ----------------------------------------------------------------------------


class _ChannelJournal:
    """The journal as a data connection's wrapper sees it: every event marked ``channel="data"``."""

    def __init__(self, journal):
        self._journal = journal
        self.payload_cap = journal.payload_cap

    def record(self, kind: str, server: str | None = None, conn: int | None = None, **fields: Any) -> dict:
        fields.setdefault("channel", "data")
        return self._journal.record(kind, server, conn, **fields)


@implementer(interfaces.IHandshakeListener)
class DataFaultingProtocol(FaultingProtocol):
    """The fault wrapper on a data connection: numbered as its control connection, TLS beneath it when PROT P.

    It does not ask about ``connect`` (the control connection did); the FTP protocol asks about the
    ``data`` stage when a transfer starts, and wire actions then apply to this connection.
    """

    _handshake_done = False

    def makeConnection(self, transport):
        self._handshake_waiters: list[defer.Deferred] = []
        factory = self.factory
        self.tls = False
        if factory.tls_options is not None and hasattr(transport, "startTLS"):
            # Beneath the wrapper, so wire faults see plaintext. We are the TLS server whichever
            # side connected: normal for an accepted (passive) connection, reversed for active.
            transport.startTLS(factory.tls_options, factory.mode == "passive")
            self.tls = True
        super().makeConnection(transport)

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.journal.record(OPEN, self.server, self.conn, peer=f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}",
                            listener=self.factory.label, mode=self.factory.mode, tls=self.tls)

    def handshakeCompleted(self):
        self._handshake_done = True
        waiters, self._handshake_waiters = self._handshake_waiters, []
        for d in waiters:
            d.callback(None)

    def handshake(self) -> defer.Deferred:
        """Fires once the TLS handshake is done (at once without TLS); fails if the connection goes first."""
        if not self.tls or self._handshake_done:
            return defer.succeed(None)
        if self.lost:
            return defer.fail(error.ConnectionLost("data connection lost before the TLS handshake"))
        d = defer.Deferred()
        self._handshake_waiters.append(d)
        return d

    def connectionLost(self, reason):
        waiters, self._handshake_waiters = getattr(self, "_handshake_waiters", []), []
        super().connectionLost(reason)
        for d in waiters:
            d.errback(reason)


class DataFaultingFactory(FaultingFactory):
    """Wraps one DataFactory: its connection carries the control connection's number, journaled as ``channel="data"``."""

    protocol = DataFaultingProtocol

    def __init__(self, data_factory: "DataFactory", control: FaultingFactory, conn: int, tls_options=None):
        super().__init__(data_factory, control.server, control.engine, _ChannelJournal(control.journal),
                         control.clock, label="ftp-data")
        self.conn = conn
        self.mode = data_factory.mode
        self.tls_options = tls_options
        self.control_journal = control.journal

    def buildProtocol(self, addr):
        data_factory = self.wrappedFactory
        expected = data_factory.peer_host
        if expected is not None and _plain_host(getattr(addr, "host", "")) != _plain_host(expected):
            self.control_journal.record(ERROR, self.server, self.conn, error="data connection from a foreign address",
                                        peer=getattr(addr, "host", ""), expected=expected)
            return None
        wrapped = data_factory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped, self.conn)


class DataProtocol(ftp.DTP):
    """Twisted's DTP, telling the transfer in progress when the connection goes, and failing uploads cut short."""

    transfer: "_Download | None" = None

    def connectionMade(self):
        # Twisted fires the factory's Deferred before it makes the buffer, and a transfer
        # waiting on it runs at once: make the buffer first.
        self._buffer = []
        self.isConnected = True
        self.factory.deferred.callback(None)

    def connectionLost(self, reason=connectionDone):
        self.isConnected = False
        transfer, self.transfer = self.transfer, None
        if transfer is not None:
            transfer.connection_lost(reason)
        d, self._onConnLost = self._onConnLost, None
        if d is not None:
            # Twisted's DTP calls any close a complete upload; only the client's clean close is
            # (not one a wire fault made on the way up: close, reset, truncate).
            up = getattr(self.transport, "up", None)
            if reason.check(error.ConnectionDone) and not (up is not None and up.black_hole):
                d.callback(None)
            else:
                d.errback(reason)


class DataFactory(ftp.DTPFactory):
    """Twisted's DTPFactory with any number of waiters for the connection, and a mode (passive or active)."""

    noisy = False

    def __init__(self, pi: "FTPProtocol", reactor, mode: str, peer_host: str | None = None):
        super().__init__(pi, peerHost=peer_host, reactor=reactor)
        self.mode = mode
        self.peer_host = peer_host
        self.instance: DataProtocol | None = None
        self._outcome: Any = None
        self._waiters: list[defer.Deferred] = []
        self.deferred.addBoth(self._settle)

    def _settle(self, result: Any) -> None:
        self._outcome = result if isinstance(result, Failure) else True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._fire(d)

    def _fire(self, d: defer.Deferred) -> None:
        if self._outcome is True:
            d.callback(self.instance)
        else:
            d.errback(self._outcome)

    def wait(self) -> defer.Deferred:
        """Fires with the DataProtocol once connected, or fails (time-out, refused)."""
        d = defer.Deferred()
        if self._outcome is None:
            self._waiters.append(d)
        else:
            self._fire(d)
        return d

    # Twisted's versions log a line each (four per transfer in twistd's log).
    def setTimeout(self, seconds):
        self.delayedCall = self._reactor.callLater(seconds, self.timeoutFactory)

    def cancelTimeout(self):
        if self.delayedCall is not None and self.delayedCall.active():
            self.delayedCall.cancel()

    def stopFactory(self):
        self.cancelTimeout()

    def buildProtocol(self, addr):
        if self._state is not self._IN_PROGRESS:
            return None
        self._state = self._FINISHED
        self.cancelTimeout()
        p = DataProtocol()
        p.factory = self
        p.pi = self.pi
        self.pi.dtpInstance = p
        self.instance = p
        return p


@implementer(interfaces.IConsumer)
class _Download:
    """One outgoing transfer: a producer feeding the data connection, and its outcome (``result``).

    ``result`` fires with the bytes sent once the producer ran dry and the connection closed, and
    fails when the connection goes first. A wire fault that swallows the data (stall, truncate,
    close, reset) stops the producer, so the server never reports as sent what the client never got.
    """

    def __init__(self, dtp: DataProtocol):
        self.dtp = dtp
        self.transport = dtp.transport
        self.result = defer.Deferred()
        self.producer = None
        self.sent = 0
        self.finished = False
        self.cut = False
        self.done = False
        dtp.transfer = self

    # IConsumer, for the producer
    def registerProducer(self, producer, streaming):
        self.producer = producer
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        if self.producer is None:
            return
        self.producer = None
        self.finished = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def write(self, data: bytes) -> None:
        if self.cut or self.done or not self.dtp.isConnected:
            return
        self.sent += len(data)
        self.transport.write(data)
        down = getattr(self.transport, "down", None)
        if down is not None and down.black_hole:
            self._cut()

    def count(self, n: int) -> None:
        """Bytes the sendfile path sent past the wrapper."""
        self.sent += n
        if isinstance(self.transport, FaultingProtocol):
            self.transport.bytes_down += n

    def _cut(self) -> None:
        self.cut = True
        if self.producer is not None:
            self.producer = None
            self.transport.unregisterProducer()

    def connection_lost(self, reason: Failure) -> None:
        if self.done:
            return
        self.done = True
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        if self.finished and not self.cut:
            self.result.callback(self.sent)
        else:
            self.result.errback(reason if not reason.check(error.ConnectionDone)
                                else Failure(error.ConnectionLost("data connection closed mid-transfer")))


@implementer(interfaces.IPullProducer)
class _SendfileProducer:
    """Copies a file to a plain TCP data connection with os.sendfile, driven by the socket's writability."""

    def __init__(self, download: _Download, tcp_transport, fobj):
        self.download = download
        self.tcp = tcp_transport
        self.in_fd = fobj.fileno()
        self.offset = fobj.tell()
        self.out_fd = tcp_transport.fileno()
        self.stopped = False

    def start(self) -> None:
        self.download.producer = self
        self.tcp.registerProducer(self, False)  # a pull producer: resumeProducing is called now

    def resumeProducing(self):
        if self.stopped:
            return
        budget = _SENDFILE_BUDGET
        while budget > 0:
            try:
                n = os.sendfile(self.out_fd, self.in_fd, self.offset, min(budget, _SENDFILE_STEP))
            except BlockingIOError:
                break
            except OSError as e:
                self.stopped = True
                self.download.transport.abortConnection()
                _log.debug("sendfile failed: {e}", e=e)
                return
            if n == 0:
                self.stopped = True
                self.download.unregisterProducer()
                return
            self.offset += n
            budget -= n
            self.download.count(n)
        self.tcp.startWriting()  # called again once the socket can take more (or on the next turn)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True


@implementer(interfaces.IConsumer)
class _ASCIIUpload:
    """ASCII-mode upload: CRLF -> LF on the way to the file, a CR split across chunks included."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.pending = b""

    def registerProducer(self, producer, streaming):
        self.consumer.registerProducer(producer, streaming)

    def unregisterProducer(self):
        if self.pending:
            self.consumer.write(self.pending)
            self.pending = b""
        self.consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        data = self.pending + data
        self.pending = b""
        if data.endswith(b"\r"):
            data, self.pending = data[:-1], b"\r"
        self.consumer.write(data.replace(b"\r\n", b"\n"))


# -- the protocol interpreter --------------------------------------------------------------------


class FTPProtocol(ftp.FTP):
    """Twisted's FTP server protocol with the testbed's commands, faults and journal.

    Every command is journaled (PASS hidden), then the fault engine is asked at the command's stage;
    handlers return ``(code, text)`` or raise ``FTPReply``. Transfer commands consume the data
    channel: it is closed when the transfer ends, whatever the outcome.
    """

    faults = NO_FAULTS
    delimiter = b"\n"  # and a trailing CR is stripped: tolerant of bare-LF clients
    MAX_LENGTH = 8192
    _encoding = "utf-8"

    user: str | None = None
    _pending_user: str | None = None
    tls_active = False
    protected = False
    restart = 0
    _current = ""
    _fault = None
    _rename_from: list[str] | None = None
    _mlst_facts = _MLST_FACTS

    # -- connection life -----------------------------------------------------------------------

    def callLater(self, period, func):  # TimeoutMixin: the factory's reactor (a Clock in unit tests)
        return self.factory.reactor.callLater(period, func)

    def connectionMade(self):
        self.state = self.UNAUTH
        self.workingDirectory = []
        self.setTimeout(self.factory.timeOut)
        fault = self.faults.at("connect")
        if fault is not None and not fault.wire:
            if fault.action == "reply":
                self._fault_reply(fault, "connect")
                return
            if fault.action == "silence":
                return
            self._not_applicable(fault, "connect")
        self.respond(220, self.factory.welcomeMessage)

    def connectionLost(self, reason):
        if self.dtpFactory is not None or self.dtpInstance is not None:
            self.cleanupDTP(abort=True)
        self.setTimeout(None)
        self.shell = None
        self._epsvAll = False
        self.transport = None

    def lineLengthExceeded(self, line):
        self.faults.record(ERROR, error="command line too long", size=len(line))
        self.respond(500, "Command line too long.")
        self.transport.loseConnection()

    # -- replies ---------------------------------------------------------------------------------

    def sendLine(self, line):
        if isinstance(line, bytes):
            text = line.decode("utf-8", "replace")
        else:
            text, line = line, line.encode("utf-8", "surrogateescape")
        if self.transport is None:
            return
        if len(text) >= 4 and text[:3].isdigit() and text[3] == " ":
            self.faults.record(REPLY, code=int(text[:3]), text=text[4:])
        self.transport.write(line + b"\r\n")

    def respond(self, code: int, text: str) -> None:
        self.sendLine(f"{code} {text}")

    # -- commands -------------------------------------------------------------------------------------

    def lineReceived(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        self.resetTimeout()
        text = line.decode("utf-8", "surrogateescape")
        cmd, sep, arg = text.partition(" ")
        cmd = cmd.upper()
        fields: dict[str, Any] = {"command": cmd}
        if sep:
            fields["arg"] = "****" if cmd == "PASS" else arg
        if self.user is not None:
            fields["user"] = self.user
        self.faults.record(COMMAND, **fields)
        self._current = cmd
        self.pauseProducing()
        d = defer.maybeDeferred(self.processCommand, cmd, *((arg,) if sep else ()))
        d.addCallbacks(self._succeeded, self._failed, errbackArgs=(cmd,))
        d.addErrback(self._internal_error, cmd)
        d.addBoth(self._resume)

    def _succeeded(self, result: Any) -> None:
        if result is None:
            return
        if isinstance(result, tuple) and result and isinstance(result[0], int):
            self.respond(*result)
        elif isinstance(result, tuple):
            self.reply(*result)
        else:
            self.reply(result)

    def _failed(self, failure: Failure, cmd: str) -> None:
        if failure.check(FTPReply):
            self.respond(failure.value.code, failure.value.text)
            return
        mapped = _shell_reply(failure)
        if mapped is not None:
            self.respond(*mapped)
        elif failure.check(ftp.FTPCmdError):
            self.sendLine(failure.value.response())
        elif failure.check(ftp.PortConnectionError):
            self.respond(425, "Can't open data connection.")
        else:
            self._internal_error(failure, cmd)

    def _internal_error(self, failure: Failure, cmd: str) -> None:
        _log.failure("FTP command {cmd} failed", failure, cmd=cmd)
        self.faults.record(ERROR, error="internal error", command=cmd, detail=failure.getErrorMessage())
        self.respond(451, "Requested action aborted: local error in processing.")

    def _resume(self, _: Any) -> None:
        if self.transport is not None and not self.disconnected:
            self.resumeProducing()

    def processCommand(self, cmd, *params):
        if not cmd:
            return 500, "Syntax error, command unrecognized."
        refused = self._check_state(cmd)
        if refused is not None:
            return refused
        if cmd in NEEDS_ARGUMENT and not (params and params[0].strip()):
            return 501, f"Syntax error: {cmd} needs an argument."
        if cmd in NO_ARGUMENT:
            params = ()
        self._fault = None
        fault = self.faults.at(cmd, **self._attributes(cmd, params))
        if fault is not None and not fault.wire:
            if fault.action == "reply":
                return self._fault_reply(fault, cmd)
            if fault.action == "silence":
                self._abandon(cmd)
                return None
            if cmd in APPLIES_TO.get(fault.action, ()):
                self._fault = fault
            else:
                self._not_applicable(fault, cmd)
        method = getattr(self, "ftp_" + cmd, None)
        if method is None:
            return 502, f"Command '{cmd}' not implemented."
        return method(*params)

    def _check_state(self, cmd: str) -> tuple[int, str] | None:
        if self.state == self.RENAMING and cmd != "RNTO":
            self.state, self._rename_from = self.AUTHED, None  # RNFR not followed by RNTO: forgotten
        if cmd in PUBLIC:
            return None
        if self.state == self.UNAUTH:
            if cmd == "USER":
                return None
            if cmd == "PASS":
                return 503, "Login with USER first."
            return 530, "Please login with USER and PASS."
        if self.state == self.INAUTH:
            if cmd in ("USER", "PASS"):
                return None
            return 503, "Login with PASS first."
        if cmd == "USER":
            return 503, "Already logged in."
        if cmd == "RNTO" and self.state != self.RENAMING:
            return 503, "RNFR required first."
        return None

    def _attributes(self, cmd: str, params: tuple) -> dict[str, Any]:
        arg = params[0] if params else ""
        user = self.user
        if cmd == "USER":
            user = arg
        elif cmd == "PASS":
            user = self._pending_user
        attributes: dict[str, Any] = {"user": user, "tls": self.tls_active,
                                      "type": "binary" if self.binary else "ascii"}
        if cmd in ("RETR", "STOR", "APPE", "LIST", "NLST", "MLSD", "MLST", "SIZE", "MDTM", "DELE",
                   "MKD", "RMD", "RNFR", "RNTO", "CWD"):
            attributes["path"] = self._match_path(self._strip_flags(arg) if cmd in ("LIST", "NLST") else arg)
        if cmd in ("PASV", "EPSV"):
            attributes["mode"] = "passive"
        elif cmd in ("PORT", "EPRT"):
            attributes["mode"] = "active"
        elif cmd in TRANSFERS and self.dtpFactory is not None:
            attributes["mode"] = self.dtpFactory.mode
        return attributes

    def _match_path(self, arg: str) -> str:
        try:
            return "/" + "/".join(ftp.toSegments(list(self.workingDirectory), arg))
        except ftp.InvalidPath:
            return arg

    # -- faults -------------------------------------------------------------------------------------------

    def _fault_reply(self, fault, stage: str) -> None:
        code = int(fault.param("code", 421 if stage == "connect" else 550))
        text = fault.param("message") or FAULT_TEXT.get(code, "Injected fault.")
        self._abandon(stage)
        self.respond(code, text)
        then = fault.param("then")
        if then is None:
            then = "close" if code == 421 else "none"  # 421 means the server closes the control connection
        if then == "close":
            self.transport.loseConnection()
        elif then == "reset":
            self.transport.abortConnection()
        elif then == "stall":
            self.faults.stall()
        if then in ("close", "reset"):
            self.disconnected = True
        return None

    def _abandon(self, cmd: str) -> None:
        """A fault answered ``cmd`` instead of the handler: leave the session as the refusal would."""
        if cmd == "PASS":
            self.state = self.UNAUTH
        elif cmd == "RNTO":
            self.state, self._rename_from = self.AUTHED, None
        elif cmd in TRANSFERS:
            self.restart = 0
            self._drop_data_channel()

    def _not_applicable(self, fault, stage: str) -> None:
        self.faults.record(ERROR, error="fault action does not apply here", action=fault.action, stage=stage)

    def _take_fault(self):
        fault, self._fault = self._fault, None
        return fault

    # -- paths and callbacks ----------------------------------------------------------------------------

    @staticmethod
    def _strip_flags(arg: str) -> str:
        words = arg.split(" ")
        while words and words[0].startswith("-"):
            words.pop(0)
        return " ".join(words)

    def _resolve(self, path: str) -> list[str]:
        try:
            return self.shell.segments(self.workingDirectory, path)
        except ftp.InvalidPath:
            raise FTPReply(550, f"{_show(path)}: Permission denied.") from None

    @staticmethod
    def _display(segments: Sequence[str]) -> str:
        return "/" + "/".join(segments)

    def _violation(self, target: Any, reason: str) -> None:
        path = target if isinstance(target, str) else self._display(target or [])
        self.faults.record(ERROR, error="path escapes root", command=self._current, path=path, reason=reason,
                           user=self.user)

    def _uploaded(self, path: str, size: int) -> None:
        self.faults.record(STORED, path=path, size=size, user=self.user, command=self._current)
        self.factory.uploaded(FTPUpload(path=path, size=size, user=self.user, conn=self.faults.conn,
                                        command=self._current, tls=self.protected))

    # -- login -------------------------------------------------------------------------------------

    def _is_anonymous(self, name: str) -> bool:
        return name.lower() in ("anonymous", "ftp")

    def ftp_USER(self, name):
        if self.factory.require_tls and not self.tls_active:
            self.state = self.UNAUTH
            return 530, "TLS required: send AUTH TLS first."
        self._pending_user = name
        self.state = self.INAUTH
        if self.factory.allowAnonymous and self._is_anonymous(name):
            return 331, "Anonymous login ok, send your email address as password."
        return 331, f"Password required for {name}."

    def ftp_PASS(self, password=""):
        name, self._pending_user = self._pending_user, None
        if self.state != self.INAUTH or name is None:
            self.state = self.UNAUTH
            return 503, "Login with USER first."
        anonymous = self.factory.allowAnonymous and self._is_anonymous(name)
        creds = credentials.Anonymous() if anonymous else credentials.UsernamePassword(name, password)

        def logged_in(result):
            _, avatar, logout = result
            self.shell = avatar
            self.logout = logout
            self.workingDirectory = []
            self.state = self.AUTHED
            self.user = "anonymous" if anonymous else name
            if anonymous:
                return 230, "Anonymous login ok, access restrictions apply."
            return 230, "User logged in, proceed."

        def refused(failure):
            failure.trap(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials)
            self.state = self.UNAUTH
            return 530, "Login incorrect."

        return self.portal.login(creds, self, ftp.IFTPShell).addCallbacks(logged_in, refused)

    # -- TLS ------------------------------------------------------------------------------------------

    def ftp_AUTH(self, mechanism):
        if self.factory.tls_options is None:
            return 502, "Command 'AUTH' not implemented."
        if self.tls_active:
            return 503, "Already using TLS."
        mechanism = mechanism.strip().upper()
        if mechanism not in ("TLS", "TLS-C", "SSL", "TLS-P"):
            return 504, f"AUTH {_show(mechanism)} not supported."
        self.respond(234, f"AUTH {mechanism} successful.")
        self.transport.startTLS(self.factory.tls_options())
        self.tls_active = True
        # RFC 4217: a new security exchange starts a new login.
        self.state, self.user, self.shell = self.UNAUTH, None, None
        return None

    def ftp_PBSZ(self, size):
        if not self.tls_active:
            return 503, "PBSZ not allowed on an insecure control connection."
        return 200, "PBSZ=0"

    def ftp_PROT(self, level):
        if not self.tls_active:
            return 503, "PROT not allowed on an insecure control connection."
        level = level.strip().upper()
        if level in ("P", "C"):
            self.protected = level == "P"
            return 200, f"Protection level set to {level}."
        if level in ("S", "E"):
            return 536, f"PROT {level} unsupported."
        return 504, f"Unknown PROT level {_show(level)}."

    # -- session -------------------------------------------------------------------------------------

    def features(self) -> list[str]:
        features = ["EPRT", "EPSV", "MDTM", "MLST " + "".join(f"{f}*;" for f in _MLST_FACTS), "PASV",
                    "REST STREAM", "SIZE", "TVFS", "UTF8"]
        if self.factory.tls_options is not None:
            features += ["AUTH TLS", "PBSZ", "PROT"]
        return sorted(features)

    def ftp_FEAT(self):
        self.sendLine("211-Features:")
        for feature in self.features():
            self.sendLine(" " + feature)
        return 211, "End"

    def ftp_OPTS(self, option):
        name, _, value = option.strip().partition(" ")
        name = name.upper()
        if name == "UTF8":
            return 200, "Always in UTF8 mode."
        if name == "MLST":
            wanted = [f for f in value.lower().split(";") if f in _MLST_FACTS]
            self._mlst_facts = tuple(wanted)
            return 200, "MLST OPTS " + "".join(f"{f};" for f in wanted)
        return 501, f"Option '{_show(option)}' not understood."

    def ftp_SYST(self):
        return 215, "UNIX Type: L8"

    def ftp_NOOP(self):
        return 200, "NOOP ok."

    def ftp_ABOR(self):
        return 225, "No transfer to abort."

    def ftp_ALLO(self, *args):
        return 202, "ALLO command ignored."

    def ftp_TYPE(self, type_):
        words = type_.upper().split()
        if words in (["A"], ["A", "N"]):
            self.binary = False
            return 200, "Type set to A."
        if words in (["I"], ["L", "8"]):
            self.binary = True
            return 200, "Type set to I."
        if words and words[0] in ("A", "E", "L"):
            return 504, f"Type {_show(type_)} not implemented."
        return 501, f"Unknown type {_show(type_)}."

    def ftp_PWD(self):
        path = self._display(self.workingDirectory).replace('"', '""')
        return 257, f'"{path}" is the current directory.'

    def ftp_CWD(self, path):
        segments = self._resolve(path)

        def changed(_):
            self.workingDirectory = segments
            return 250, "Directory successfully changed."

        return self.shell.access(segments).addCallback(changed)

    def ftp_CDUP(self):
        return self.ftp_CWD("..")

    # -- files ------------------------------------------------------------------------------------------

    def ftp_SIZE(self, path):
        segments = self._resolve(path)

        def got(result):
            size, directory = result
            if directory:
                raise FTPReply(550, f"{_show(path)}: not a regular file.")
            return 213, str(size)

        return self.shell.stat(segments, ("size", "directory")).addCallback(got)

    def ftp_MDTM(self, path):
        segments = self._resolve(path)

        def got(result):
            (modified,) = result
            return 213, time.strftime("%Y%m%d%H%M%S", time.gmtime(modified))

        return self.shell.stat(segments, ("modified",)).addCallback(got)

    def ftp_MKD(self, path):
        segments = self._resolve(path)
        shown = self._display(segments).replace('"', '""')
        return self.shell.makeDirectory(segments).addCallback(lambda _: (257, f'"{shown}" created.'))

    def ftp_RMD(self, path):
        segments = self._resolve(path)
        return self.shell.removeDirectory(segments).addCallback(lambda _: (250, "Directory removed."))

    def ftp_DELE(self, path):
        segments = self._resolve(path)
        return self.shell.removeFile(segments).addCallback(lambda _: (250, "File deleted."))

    def ftp_RNFR(self, path):
        segments = self._resolve(path)

        def exists(_):
            self._rename_from = segments
            self.state = self.RENAMING
            return 350, "Ready for destination name."

        return self.shell.stat(segments, ()).addCallback(exists)

    def ftp_RNTO(self, path):
        source, self._rename_from = self._rename_from, None
        self.state = self.AUTHED
        segments = self._resolve(path)
        return self.shell.rename(source, segments).addCallback(lambda _: (250, "Rename successful."))

    def ftp_REST(self, offset):
        offset = offset.strip()
        if not offset.isdigit():
            return 501, "REST needs a non-negative byte offset."
        self.restart = int(offset)
        return 350, f"Restarting at {self.restart}. Send STOR or RETR to start the transfer."

    def ftp_MLST(self, path=""):
        segments = self._resolve(path)

        def got(result):
            size, directory, modified = result
            fact_line = self._facts(size, directory, modified)
            self.sendLine(f"250-Listing {self._display(segments)}")
            self.sendLine(f" {fact_line} {self._display(segments)}")
            return 250, "End"

        return self.shell.stat(segments, ("size", "directory", "modified")).addCallback(got)

    def _facts(self, size: int, directory: bool, modified: float) -> str:
        writable = getattr(self.shell, "writable", False)
        values = {
            "type": "dir" if directory else "file",
            "size": str(size),
            "modify": time.strftime("%Y%m%d%H%M%S", time.gmtime(modified)),
            "perm": ("cdeflmp" if writable else "el") if directory else ("adfrw" if writable else "r"),
        }
        return "".join(f"{f}={values[f]};" for f in self._mlst_facts)

    # -- data channel -------------------------------------------------------------------------------

    def _wrap_data(self, factory: DataFactory):
        wrapper = getattr(self.faults, "wrapper", None)
        tls = self.factory.tls_options() if self.protected and self.factory.tls_options is not None else None
        if wrapper is None:
            return factory  # a bare protocol (unit tests without the fault wrapper): no faults, no TLS
        return DataFaultingFactory(factory, wrapper.factory, self.faults.conn, tls_options=tls)

    def cleanupDTP(self, abort: bool = False):
        port, self.dtpPort = self.dtpPort, None
        factory, self.dtpFactory = self.dtpFactory, None
        dtp, self.dtpInstance = self.dtpInstance, None
        if port is not None:
            if interfaces.IListeningPort.providedBy(port):
                port.stopListening()
            elif interfaces.IConnector.providedBy(port) and getattr(port, "state", None) != "connected":
                port.disconnect()
        if factory is not None:
            factory.stopFactory()
        if dtp is not None and dtp.isConnected and dtp.transport is not None:
            if abort:
                dtp.transport.abortConnection()
            else:
                dtp.transport.loseConnection()

    def _drop_data_channel(self) -> None:
        if self.dtpFactory is not None or self.dtpInstance is not None or self.dtpPort is not None:
            self.cleanupDTP()

    def _passive_ports(self) -> Iterable[int]:
        ports = self.factory.passive_ports
        if ports is None:
            return [0]
        start = self.factory.next_passive_index()
        return [ports[(start + i) % len(ports)] for i in range(len(ports))]

    def _listen_passive(self, host: str) -> int:
        self._drop_data_channel()
        factory = DataFactory(self, self.factory.reactor, "passive", peer_host=self.transport.getPeer().host)
        wrapped = self._wrap_data(factory)
        for number in self._passive_ports():
            try:
                port = self.factory.reactor.listenTCP(number, wrapped, interface=host)
            except error.CannotListenError:
                continue
            break
        else:
            self.faults.record(ERROR, error="no passive port free", ports=self.factory.passive_ports_text)
            raise FTPReply(425, "Can't open passive connection: no free port.")
        factory.setTimeout(self.dtpTimeout)
        self.dtpFactory, self.dtpPort = factory, port
        return port.getHost().port

    def _wrong_address(self, host: str, port: int, passive_v4: bool) -> tuple[str, int]:
        fault = self._take_fault()
        if fault is None:
            return host, port
        wrong_host = fault.param("host") if passive_v4 else None
        wrong_port = fault.param("port")
        if wrong_port is None:
            wrong_port = port if wrong_host else WRONG_PORT
        return wrong_host or host, int(wrong_port)

    def ftp_PASV(self):
        if self._epsvAll:
            return 503, "PASV not allowed after EPSV ALL."
        host = _plain_host(self.transport.getHost().host)
        if _is_ipv6(host):
            return 502, "PASV available only for IPv4 (use EPSV instead)."
        port = self._listen_passive(self.transport.getHost().host)
        shown_host, shown_port = self._wrong_address(host, port, True)
        return 227, f"Entering Passive Mode ({ftp.encodeHostPort(shown_host, shown_port)})."

    def ftp_EPSV(self, protocol=""):
        protocol = protocol.strip().upper()
        if protocol == "ALL":
            self._epsvAll = True
            return 200, "EPSV ALL ok."
        host = self.transport.getHost().host
        family = "2" if _is_ipv6(host) and _plain_host(host) == host else "1"
        if protocol and protocol != family:
            if protocol in ("1", "2"):
                return 522, f"Network protocol not supported, use ({family})."
            return 501, f"Unknown network protocol {_show(protocol)}."
        port = self._listen_passive(host)
        _, shown_port = self._wrong_address(host, port, False)
        return 229, f"Entering Extended Passive Mode (|||{shown_port}|)."

    def ftp_PORT(self, address):
        if self._epsvAll:
            return 503, "PORT not allowed after EPSV ALL."
        try:
            numbers = [int(n) for n in address.strip().split(",")]
            if len(numbers) != 6 or not all(0 <= n <= 255 for n in numbers):
                raise ValueError(address)
        except ValueError:
            return 501, "Illegal PORT command."
        return self._connect_active("%d.%d.%d.%d" % tuple(numbers[:4]), numbers[4] << 8 | numbers[5])

    def ftp_EPRT(self, address):
        if self._epsvAll:
            return 503, "EPRT not allowed after EPSV ALL."
        try:
            protocol, host, port = ftp.decodeExtendedAddress(address.strip())
            ipaddress.ip_address(host)
        except ValueError:
            return 501, "Illegal EPRT command."
        if protocol not in ("", "1", "2"):
            return 522, "Network protocol not supported, use (1,2)."
        return self._connect_active(host, port)

    def _connect_active(self, host: str, port: int):
        peer = self.transport.getPeer().host
        if _plain_host(host) != _plain_host(peer):
            self.faults.record(ERROR, error="data connection to a foreign address", address=f"{host}:{port}", peer=peer)
            return 501, "Rejected data connection to a foreign address."
        if not 1024 <= port <= 65535:
            self.faults.record(ERROR, error="data connection to a privileged port", address=f"{host}:{port}")
            return 501, "Rejected data connection to a privileged port."
        self._drop_data_channel()
        factory = DataFactory(self, self.factory.reactor, "active")
        wrapped = self._wrap_data(factory)
        local = self.transport.getHost().host
        bind = (local, 0) if _is_ipv6(local) == _is_ipv6(host) else None
        factory.setTimeout(self.dtpTimeout)
        self.dtpFactory = factory
        self.dtpPort = self.factory.reactor.connectTCP(host, port, wrapped, timeout=self.dtpTimeout, bindAddress=bind)

        def connected(_):
            return 200, "PORT command successful."

        def failed(_):
            if self.dtpFactory is factory:
                self._drop_data_channel()
            return 425, "Can't open data connection."

        return factory.wait().addCallbacks(connected, failed)

    def _data_channel(self) -> defer.Deferred:
        factory = self.dtpFactory
        if factory is None:
            return defer.fail(FTPReply(425, "Use PORT, PASV, EPRT or EPSV first."))

        def connected(dtp):
            if dtp is None or not dtp.isConnected:
                raise FTPReply(425, "Data connection closed before the transfer.")
            return dtp

        def failed(_):
            raise FTPReply(425, "Can't open data connection.")

        return factory.wait().addCallbacks(connected, failed)

    def _data_fault(self, dtp: DataProtocol, cmd: str, segments: Sequence[str], command_fault):
        """Ask about the ``data`` stage (wire actions then apply to the data connection); the protocol fault to obey."""
        faults = getattr(dtp, "faults", None)
        fault = None
        if faults is not None:
            fault = faults.at("data", command=cmd, path=self._display(segments), user=self.user,
                              tls=self.protected, mode=self.dtpFactory.mode if self.dtpFactory else None,
                              type="binary" if self.binary else "ascii")
        if command_fault is not None:
            return command_fault
        if fault is None or fault.wire:
            return None
        if fault.action in ("reply", "silence") or cmd in APPLIES_TO.get(fault.action, ()):
            return fault
        self._not_applicable(fault, "data")
        return None

    def _transfer(self, body: Callable[[], defer.Deferred]) -> defer.Deferred:
        self.setTimeout(None)
        d = defer.maybeDeferred(body)

        def done(result):
            self._drop_data_channel()
            if self.transport is not None:
                self.setTimeout(self.factory.timeOut)
            return result

        return d.addBoth(done)

    def _opening(self, what: str) -> None:
        mode = "BINARY" if self.binary else "ASCII"
        self.respond(150, f"Opening {mode} mode data connection for {what}.")

    def _transfer_fault_reply(self, fault, cmd: str):
        """A ``reply``/``silence`` fault at the data stage: answered instead of the transfer."""
        if fault.action == "silence":
            return None
        return self._fault_reply(fault, cmd)

    def _finish(self, fault) -> tuple[int, str] | None:
        if fault is not None and fault.action == "no_completion":
            return None  # the client waits for a 226 that never comes
        return 226, "Transfer complete."

    # -- downloads -------------------------------------------------------------------------------------

    def _send(self, dtp: DataProtocol, fobj: Any, fault, sendfile_ok: bool) -> defer.Deferred:
        if not dtp.isConnected:
            return defer.fail(error.ConnectionLost("data connection closed before the transfer"))
        download = _Download(dtp)
        limit = int(fault.param("bytes", 0)) if fault is not None and fault.action == "short_transfer" else None
        wrapper = dtp.transport
        tcp_transport = wrapper.transport if isinstance(wrapper, FaultingProtocol) else wrapper
        if (sendfile_ok and fault is None and self.binary and not self.protected and self.factory.sendfile
                and hasattr(os, "sendfile")
                and getattr(wrapper, "down", None) is None and getattr(wrapper, "up", None) is None
                and isinstance(tcp_transport, tcp.Connection) and not getattr(tcp_transport, "TLS", False)
                and self._has_fileno(fobj)):
            _SendfileProducer(download, tcp_transport, fobj).start()
        else:
            source = _Limited(fobj, limit) if limit is not None else fobj
            sender = ChunkedFileSender()
            sender.beginFileTransfer(source, download, None if self.binary else _to_crlf()).addErrback(lambda _: None)
        return download.result

    @staticmethod
    def _has_fileno(fobj: Any) -> bool:
        try:
            fobj.fileno()
        except (OSError, ValueError, AttributeError):
            return False
        return True

    def _download(self, cmd: str, prepare: Callable[[], defer.Deferred], fault) -> defer.Deferred:
        """Run a download: ``prepare()`` gives (segments, file object, close, sendfile allowed)."""

        @defer.inlineCallbacks
        def body():
            segments, source, close, sendfile_ok = yield prepare()
            try:
                dtp = yield self._data_channel()
                chosen = self._data_fault(dtp, cmd, segments, fault)
                if chosen is not None and chosen.action in ("reply", "silence"):
                    return self._transfer_fault_reply(chosen, cmd)
                self._opening(self._display(segments) if cmd == "RETR" else "file list")
                try:
                    if isinstance(dtp.transport, DataFaultingProtocol):
                        yield dtp.transport.handshake()
                    yield self._send(dtp, source, chosen, sendfile_ok)
                except Exception:
                    raise FTPReply(426, "Connection closed; transfer aborted.") from None
                return self._finish(chosen)
            finally:
                close()

        return self._transfer(body)

    def ftp_RETR(self, path):
        fault = self._take_fault()
        offset, self.restart = self.restart, 0
        if self.dtpFactory is None:
            return 425, "Use PORT, PASV, EPRT or EPSV first."

        @defer.inlineCallbacks
        def prepare():
            segments = self._resolve(path)
            size, directory = yield self.shell.stat(segments, ("size", "directory"))
            if directory:
                raise FTPReply(550, f"{_show(path)}: Is a directory.")
            if offset > size:
                raise FTPReply(554, f"Invalid REST offset {offset}: the file has {size} bytes.")
            reader = yield self.shell.openForReading(segments, offset=offset)
            return segments, reader.fObj, reader.close, True

        return self._download("RETR", prepare, fault)

    def _listing(self, cmd: str, path: str, render: Callable[[list], bytes]):
        fault = self._take_fault()
        self.restart = 0
        if self.dtpFactory is None:
            return 425, "Use PORT, PASV, EPRT or EPSV first."
        path = self._strip_flags(path)

        @defer.inlineCallbacks
        def prepare():
            segments = self._resolve(path)
            glob = None
            if cmd == "NLST" and ftp._isGlobbingExpression(segments):
                glob = segments.pop()
            if cmd == "MLSD":
                (directory,) = yield self.shell.stat(segments, ("directory",))
                if not directory:
                    raise FTPReply(501, f"{_show(path)}: not a directory.")
            keys = ("size", "directory", "modified") if cmd == "MLSD" else (_STAT_KEYS if cmd == "LIST" else ())
            entries = yield self.shell.list(segments, keys)
            if glob is not None:
                entries = [(name, attrs) for name, attrs in entries if fnmatch.fnmatchcase(name, glob)]
            return segments, io.BytesIO(render(entries)), lambda: None, False

        return self._download(cmd, prepare, fault)

    @staticmethod
    def _name(name: Any) -> bytes:
        return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")

    def _render_list(self, entries: list) -> bytes:
        lines = [_LISTER._formatOneListResponse(self._name(name), *attrs) for name, attrs in entries]
        return b"".join(line + b"\r\n" for line in lines)

    def _render_nlst(self, entries: list) -> bytes:
        return b"".join(self._name(name) + b"\r\n" for name, _ in entries)

    def _render_mlsd(self, entries: list) -> bytes:
        return b"".join(self._facts(*attrs).encode("ascii") + b" " + self._name(name) + b"\r\n"
                        for name, attrs in entries)

    def ftp_LIST(self, path=""):
        return self._listing("LIST", path, self._render_list)

    def ftp_NLST(self, path=""):
        return self._listing("NLST", path, self._render_nlst)

    def ftp_MLSD(self, path=""):
        return self._listing("MLSD", path, self._render_mlsd)

    # -- uploads ---------------------------------------------------------------------------------------

    def ftp_STOR(self, path):
        return self._upload("STOR", path, append=False)

    def ftp_APPE(self, path):
        return self._upload("APPE", path, append=True)

    def _upload(self, cmd: str, path: str, append: bool):
        fault = self._take_fault()
        offset, self.restart = self.restart, 0
        if self.dtpFactory is None:
            return 425, "Use PORT, PASV, EPRT or EPSV first."

        @defer.inlineCallbacks
        def body():
            segments = self._resolve(path)
            upload = yield self.shell.openForWriting(segments, offset=0 if append else offset, append=append)
            try:
                dtp = yield self._data_channel()
                chosen = self._data_fault(dtp, cmd, segments, fault)
                if chosen is not None and chosen.action in ("reply", "silence"):
                    upload.abort()
                    return self._transfer_fault_reply(chosen, cmd)
                self.respond(150, "Ok to send data.")
                consumer = yield upload.receive()
                if not self.binary:
                    consumer = _ASCIIUpload(consumer)
                try:
                    yield dtp.registerConsumer(consumer)
                except Exception:
                    raise FTPReply(426, "Connection closed; transfer aborted.") from None
                yield upload.close()
            finally:
                upload.abort()  # a no-op once closed
            return self._finish(chosen)

        return self._transfer(body)


_LISTER = ftp.DTP()  # only its LIST line formatter is used


# -- the factory and the realm ---------------------------------------------------------------------


@attrs.frozen
class FTPUpload:
    """A completed upload: where it went, its final size, who sent it, on which connection."""

    path: str
    size: int
    user: str | None
    conn: int
    command: str = "STOR"
    tls: bool = False


@implementer(portal.IRealm)
class _ConnectionRealm:
    """Hands each login its own view of the shared tree, with callbacks bound to its connection."""

    def __init__(self, factory: "FTPFactory"):
        self.factory = factory

    def requestAvatar(self, avatarId, mind, *interfaces_):
        if ftp.IFTPShell not in interfaces_:
            raise NotImplementedError("only IFTPShell avatars")
        anonymous = avatarId is checkers.ANONYMOUS
        callbacks = {}
        if isinstance(mind, FTPProtocol):
            callbacks = {"on_upload": mind._uploaded, "on_violation": mind._violation}
        shell = self.factory.shell.with_callbacks(writable=not anonymous, **callbacks)
        return ftp.IFTPShell, shell, lambda: None


class FTPFactory(ftp.FTPFactory):
    """Builds FTPProtocol connections over one shell, with the run's users, TLS and passive ports."""

    protocol = FTPProtocol
    noisy = False
    welcomeMessage = "twisted-testbed FTP server ready."

    def __init__(self, shell, users: dict[str, str] | None = None, anonymous: bool = True,
                 tls_options: Callable[[], Any] | None = None, require_tls: bool = False,
                 passive_ports: str = "", reactor=None, on_upload: Callable[[FTPUpload], Any] | None = None,
                 sendfile: bool = True):
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
        for name, password in (users or {}).items():
            checker.addUser(name, password)
        the_checkers = [checker] + ([checkers.AllowAnonymousAccess()] if anonymous else [])
        super().__init__(portal.Portal(_ConnectionRealm(self), the_checkers))
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.shell = shell
        self.allowAnonymous = anonymous
        self.tls_options = tls_options
        self.require_tls = require_tls
        self.passive_ports_text = passive_ports
        self.passive_ports = parse_port_range(passive_ports)
        self._passive_index = 0
        self.on_upload = on_upload
        self.sendfile = sendfile

    def buildProtocol(self, addr):
        p = self.protocol()
        p.factory = self
        p.portal = self.portal
        p.timeOut = self.timeOut
        return p

    def next_passive_index(self) -> int:
        index = self._passive_index
        self._passive_index += 1
        return index

    def uploaded(self, upload: FTPUpload) -> None:
        if self.on_upload is not None:
            self.on_upload(upload)


# -- the server ----------------------------------------------------------------------------------


class FTPServer(Server):
    """``ftp_server``: ``host``, ``port``, ``root``, ``files``, ``uploads``, ``wait_for(...)``."""

    scheme = "ftp"
    tls_scheme = "ftps"

    def __init__(self, bed, name: str, config):
        super().__init__(bed, name, config)
        if config.require_tls and config.tls != "starttls":
            raise ValueError("servers.ftp.require_tls needs tls = \"starttls\"")
        self.root: str | None = bed.scenario.path(config.root) if config.root else None
        self.uploads: list[FTPUpload] = []
        self.shell = self._make_shell()
        self.factory: FTPFactory | None = None

    def _make_shell(self):
        if self.root is not None:
            return make_shell(root=self.root)
        return make_shell(files=dict(self.config.files))

    @defer.inlineCallbacks
    def start(self):
        config = self.config
        self.factory = FTPFactory(
            self.shell, users=dict(self.bed.scenario.users), anonymous=config.anonymous,
            tls_options=self.tls.options if config.tls == "starttls" else None,
            require_tls=config.require_tls, passive_ports=config.passive_ports, reactor=self.bed.reactor,
            on_upload=self._record_upload)
        yield self.listen(config.listen, self.factory, "ftp")

    def _record_upload(self, upload: FTPUpload) -> None:
        self.uploads.append(upload)

    def reset(self) -> None:
        super().reset()
        self.uploads = []
        if self.root is None:  # the in-memory tree starts over; a real directory is the test's own
            self.shell = self._make_shell()
            if self.factory is not None:
                self.factory.shell = self.shell

    # -- the handle -------------------------------------------------------------------------------

    @property
    def files(self) -> dict[str, int]:
        """Every file served: relative path ("pub/readme.txt") -> size in bytes."""
        return self.bed.call(files_snapshot, self.shell)

    def read(self, path: str) -> bytes:
        """A served file's contents, by its relative path."""
        if self.root is not None:
            with open(os.path.join(self.root, *path.strip("/").split("/")), "rb") as f:
                return f.read()
        return self.bed.call(self.shell.read_bytes, path)

    def wait_for(self, predicate_or_count: Any = 1, timeout: float = 5.0):
        """The uploads once ``count`` have completed, or those matching ``predicate``."""
        return self.wait_for_items(lambda: list(self.uploads), predicate_or_count, timeout, "upload")


SERVER = FTPServer
