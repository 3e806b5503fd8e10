"""The FTP server with explicit FTPS, on twisted.protocols.ftp: a jailed or in-memory tree, faults at every command.

Subclasses Twisted's FTP, FTPFactory, DTP and DTPFactory and adds what they lack: REST and APPE,
MLSD/MLST, AUTH TLS/PBSZ/PROT (TLS on data connections too), bare NLST, a working ASCII mode, passive
ports bound to the control connection's address, fault-wrapped data connections, sendfile downloads.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import time
from typing import Any, Callable, Sequence

import attrs
from twisted.cred import checkers, credentials, error as cred_error, portal
from twisted.internet import defer, error, interfaces, tcp
from twisted.logger import Logger
from twisted.protocols import ftp
from twisted.python.failure import Failure
from zope.interface import implementer

from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.faults.wire import FaultingProtocol
from testbed.journal import COMMAND, ERROR, REPLY, STORED, internal
from testbed.mail.credentials import MailChecker, login_user
from testbed.mail.store import MailStore
from testbed.servers.base import Server
from testbed.servers.ftp.data import DataChannel, DataFaultingProtocol, DataProtocol
from testbed.servers.ftp.reply import FTPReply, show as _show
from testbed.servers.ftp.spec import APPLIES_TO, TRANSFERS
from testbed.servers.ftp.spec import COMMANDS, FAULT_TEXTS as FAULT_TEXT  # noqa: F401  (tests and docs read them here)
from testbed.servers.ftp.fs import MAX_SEGMENTS, ChunkedFileSender, PathTooDeep, files_snapshot, make_shell

_log = Logger()

#: Allowed before login.
PUBLIC = frozenset({"FEAT", "QUIT", "AUTH", "PBSZ", "PROT", "OPTS", "SYST", "NOOP"})
#: Commands that take a mandatory argument.
NEEDS_ARGUMENT = frozenset({
    "USER", "AUTH", "PBSZ", "PROT", "OPTS", "CWD", "TYPE", "STRU", "MODE", "PORT", "EPRT",
    "RETR", "STOR", "APPE", "REST", "SIZE", "MDTM", "DELE", "MKD", "RMD", "RNFR", "RNTO",
})
#: Commands that take no argument: one given is ignored.
NO_ARGUMENT = frozenset({"FEAT", "SYST", "NOOP", "QUIT", "PWD", "CDUP", "PASV", "ABOR"})
_STAT_KEYS = ("size", "directory", "permissions", "hardlinks", "modified", "owner", "group")
_MLST_FACTS = ("type", "size", "modify", "perm")
_SENDFILE_STEP = 4 * 1024 * 1024
_SENDFILE_BUDGET = 16 * 1024 * 1024
#: The largest REST offset a 64-bit file offset can address; the digit count is checked before int().
_MAX_OFFSET = 2**63 - 1
_MAX_OFFSET_DIGITS = len(str(_MAX_OFFSET))
_LONE_LF = re.compile(rb"(?<!\r)\n")


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


class FTPProtocol(DataChannel, ftp.FTP):
    """Twisted's FTP server protocol with the testbed's commands, faults and journal.

    Every command is journaled (PASS hidden), then the fault engine is asked at the command's stage;
    handlers return ``(code, text)`` or raise ``FTPReply``. Transfer commands consume the data
    channel: it is closed when the transfer ends, whatever the outcome.
    """

    seam = NO_SEAM
    delimiter = b"\n"  # and a trailing CR is stripped: tolerant of bare-LF clients
    MAX_LENGTH = 8192
    _encoding = "utf-8"

    user: str | None = None
    _pending_user: str | None = None
    tls_active = False
    #: A ``strip_starttls`` fault fired: this connection neither offers nor accepts AUTH TLS.
    tls_stripped = False
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
        self.seam.guard(True)  # PASS may come at any time (USER starts a new login)
        fault = self.seam.at("connect")
        if fault is not None and fault.action == "strip_starttls":
            self.tls_stripped, fault = True, None
        if self._fault_handled(fault, "connect"):
            return
        if fault is not None and not fault.wire:
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
        self.seam.record(ERROR, error="command line too long", size=len(line))
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
            self.seam.record(REPLY, code=int(text[:3]), text=text[4:])
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
            if cmd == "PASS":
                self.seam.redact(line.partition(b" ")[2])
        if self.user is not None:
            fields["user"] = self.user
        self.seam.record(COMMAND, **fields)
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
        self.seam.record(ERROR, error="internal error", command=cmd, detail=failure.getErrorMessage(),
                         **internal(failure))
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
        fault = self.seam.at(cmd, **self._attributes(cmd, params))
        if self._fault_handled(fault, cmd):
            return None
        if fault is not None and fault.action == "strip_starttls":
            self.tls_stripped = True  # the downgrade: AUTH TLS neither offered nor accepted from now on
        elif fault is not None and not fault.wire:
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

    def _fault_handled(self, fault, stage: str) -> bool:
        """A ``reply`` or ``silence`` fault instead of the command (or transfer), carried out through the seam."""
        if fault is None or fault.wire or fault.action not in ("reply", "silence"):
            return False
        self._abandon(stage)

        def stop_answering():
            if fault.action == "reply":  # its ``then`` closed, reset or stalled the control connection
                self.disconnected = True

        return self.seam.carry_out(fault, stage, lambda code, text: self.respond(int(code), text),
                                   silence=stop_answering)

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
        self.seam.record(ERROR, error="fault action does not apply here", action=fault.action, stage=stage)

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
        except PathTooDeep:
            self.seam.record(ERROR, error="path too deep", command=self._current, segments=path.count("/") + 1,
                             user=self.user)
            raise FTPReply(550, f"Path too deep: more than {MAX_SEGMENTS} segments.") from None
        except ftp.InvalidPath:
            raise FTPReply(550, f"{_show(path)}: Permission denied.") from None

    @staticmethod
    def _display(segments: Sequence[str]) -> str:
        return "/" + "/".join(segments)

    def _violation(self, target: Any, reason: str) -> None:
        path = target if isinstance(target, str) else self._display(target or [])
        self.seam.record(ERROR, error="path escapes root", command=self._current, path=path, reason=reason,
                           user=self.user)

    def _uploaded(self, path: str, size: int) -> None:
        self.seam.record(STORED, path=path, size=size, user=self.user, command=self._current)
        self.factory.uploaded(FTPUpload(path=path, size=size, user=self.user, conn=self.seam.conn,
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
            self.user = "anonymous" if anonymous else login_user(name)  # the name the checker accepted
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
        if self.factory.tls_options is None or self.tls_stripped:
            return 502, "Command 'AUTH' not implemented."
        if self.tls_active:
            return 503, "Already using TLS."
        mechanism = mechanism.strip().upper()
        if mechanism not in ("TLS", "TLS-C", "SSL", "TLS-P"):
            return 504, f"AUTH {_show(mechanism)} not supported."
        self.respond(234, f"AUTH {mechanism} successful.")
        self.transport.startTLS(self.factory.tls_options())
        self.tls_active = True
        # RFC 4217 / CVE-2011-0411: plaintext read with AUTH but not yet run would be run inside TLS.
        if self._buffer:
            self.seam.record(ERROR, error="command pipelined after AUTH TLS dropped", size=len(self._buffer))
            self._buffer = b""
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
        if self.factory.tls_options is not None and not self.tls_stripped:
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
        if not (offset.isascii() and offset.isdigit()):
            return 501, "REST needs a non-negative byte offset."
        if len(offset) > _MAX_OFFSET_DIGITS or int(offset) > _MAX_OFFSET:
            return 501, "REST offset too large."
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
                if self._fault_handled(chosen, cmd):
                    return None
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
                    self._fault_handled(chosen, cmd)
                    return None
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field."""
        return attrs.asdict(self)


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


class FTPFactory(SeamFactory, ftp.FTPFactory):
    """Builds FTPProtocol connections over one shell, with the run's mail users, TLS and passive ports.

    ``users`` is the run's `MailStore` (FTP users are mail users) or, standing alone, a mapping
    of address to password that gets an in-memory store of its own.
    """

    protocol = FTPProtocol
    noisy = False
    welcomeMessage = "twisted-testbed FTP server ready."

    def __init__(self, shell, users: MailStore | dict[str, str] | None = None, anonymous: bool = True,
                 tls_options: Callable[[], Any] | None = None, require_tls: bool = False,
                 passive_ports: str = "", reactor=None, on_upload: Callable[[FTPUpload], Any] | None = None,
                 sendfile: bool = True):
        store = users if isinstance(users, MailStore) else MailStore(users=users or {})
        the_checkers = [MailChecker(store)] + ([checkers.AllowAnonymousAccess()] if anonymous else [])
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

    def buildProtocol(self, addr, seam=NO_SEAM):
        p = self.protocol()
        p.seam = seam
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

    def __init__(self, context):
        super().__init__(context)
        config = self.config
        if config.require_tls and config.tls != "starttls":
            raise ValueError("servers.ftp.require_tls needs tls = \"starttls\"")
        self.root: str | None = self.context.path(config.root) if config.root else None
        self.uploads = self.context.journal.records()
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
            self.shell, users=self.context.mail(), anonymous=config.anonymous,
            tls_options=self.tls.options if config.tls == "starttls" else None,
            require_tls=config.require_tls, passive_ports=config.passive_ports, reactor=self.context.reactor,
            on_upload=self._record_upload)
        yield self.listen(config.listen, self.factory, "ftp")

    def _record_upload(self, upload: FTPUpload) -> None:
        self.uploads.append(upload)

    def reset(self) -> None:
        super().reset()
        self.uploads = self.context.journal.records()
        if self.root is None:  # the in-memory tree starts over; a real directory is the test's own
            self.shell = self._make_shell()
            if self.factory is not None:
                self.factory.shell = self.shell

    # -- the handle -------------------------------------------------------------------------------

    @property
    def files(self) -> dict[str, int]:
        """Every file served: relative path ("pub/readme.txt") -> size in bytes."""
        return self.context.call(files_snapshot, self.shell)

    def read(self, path: str) -> bytes:
        """A served file's contents, by its relative path."""
        if self.root is not None:
            with open(os.path.join(self.root, *path.strip("/").split("/")), "rb") as f:
                return f.read()
        return self.context.call(self.shell.read_bytes, path)

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the completed uploads (``FTPUpload``)."""
        return (lambda: list(self.uploads)), "upload"
