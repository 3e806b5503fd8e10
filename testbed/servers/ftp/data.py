"""FTP's data channel: passive and active data connections, faulted as a channel of their control connection.

``DataChannel`` is the part of the protocol interpreter that opens, wraps and
closes data connections (PASV, EPSV, PORT, EPRT); the data connection's fault
wrapper comes from the control connection's seam (``StageSeam.channel``), so
rules aimed at a control connection reach its transfers, and under PROT P the
TLS layer sits beneath the wrapper.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence

from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import connectionDone
from twisted.protocols import ftp
from twisted.python.failure import Failure
from zope.interface import implementer

from testbed.faults.seam import NO_SEAM, SeamFactory, StageSeam
from testbed.faults.wire import ChannelFactory, FaultingProtocol
from testbed.journal import ERROR, OPEN
from testbed.servers.ftp.reply import FTPReply, show
from testbed.servers.ftp.spec import APPLIES_TO

#: Where a ``wrong_address`` fault sends the client when it names no port (nothing listens there).
WRONG_PORT = 1


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


# -- data connections ----------------------------------------------------------------------------


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


class DataFaultingFactory(ChannelFactory):
    """The control connection's seam's channel for one DataFactory: TLS beneath when PROT P, foreign peers refused."""

    protocol = DataFaultingProtocol

    def __init__(self, data_factory: "DataFactory", parent, label: str = "data", tls_options=None):
        super().__init__(data_factory, parent, label)
        self.conn = parent.conn
        self.mode = data_factory.mode
        self.tls_options = tls_options

    def buildProtocol(self, addr):
        data_factory = self.wrappedFactory
        expected = data_factory.peer_host
        if expected is not None and _plain_host(getattr(addr, "host", "")) != _plain_host(expected):
            self.parent_journal.record(ERROR, self.server, self.conn, error="data connection from a foreign address",
                                       peer=getattr(addr, "host", ""), expected=expected)
            return None
        return super().buildProtocol(addr)


class DataProtocol(ftp.DTP):
    """Twisted's DTP, telling the transfer in progress when the connection goes, and failing uploads cut short."""

    #: The transfer in progress (server.py's ``_Download``), told when the connection goes.
    transfer: Any = None
    seam = NO_SEAM

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


class DataFactory(SeamFactory, ftp.DTPFactory):
    """Twisted's DTPFactory with any number of waiters for the connection, and a mode (passive or active)."""

    noisy = False

    def __init__(self, pi: Any, reactor, mode: str, peer_host: str | None = None):
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

    def buildProtocol(self, addr, seam: StageSeam = NO_SEAM):
        if self._state is not self._IN_PROGRESS:
            return None
        self._state = self._FINISHED
        self.cancelTimeout()
        p = DataProtocol()
        p.seam = seam
        p.factory = self
        p.pi = self.pi
        self.pi.dtpInstance = p
        self.instance = p
        return p


class DataChannel:
    """Mixin for the FTP protocol interpreter: its data connections and the ``data`` fault stage."""

    # -- data channel -------------------------------------------------------------------------------

    def _wrap_data(self, factory: DataFactory):
        """The data connection's factory, faulted as a channel of this control connection (and in TLS after PROT P)."""
        tls = self.factory.tls_options() if self.protected and self.factory.tls_options is not None else None
        # Without the fault wrapper (unit tests over a bare transport): no faults, no TLS.
        return self.seam.channel(DataFaultingFactory, factory, tls_options=tls) or factory

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
            self.seam.record(ERROR, error="no passive port free", ports=self.factory.passive_ports_text)
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
            return 501, f"Unknown network protocol {show(protocol)}."
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
            self.seam.record(ERROR, error="data connection to a foreign address", address=f"{host}:{port}", peer=peer)
            return 501, "Rejected data connection to a foreign address."
        if not 1024 <= port <= 65535:
            self.seam.record(ERROR, error="data connection to a privileged port", address=f"{host}:{port}")
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
        fault = dtp.seam.at("data", command=cmd, path=self._display(segments), user=self.user,
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
