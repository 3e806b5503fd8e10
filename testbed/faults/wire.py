"""Wire faults on TCP: a protocol wrapper that journals every connection and shapes its bytes.

It sits directly under the server protocol (above TLS, so it sees plaintext),
numbers the connection, asks the engine about ``connect``, and applies wire
actions (refuse, reset, close, stall, delay, throttle, slice, corrupt,
truncate) to either direction, at accept or from any protocol stage on.
With no action applied, a byte costs one extra method call.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import directlyProvides, implementer, providedBy

from testbed.faults.engine import Fault, FaultEngine
from testbed.faults.rules import FaultRule, ReplyStyle
from testbed.faults.seam import SeamFactory, StageSeam
from testbed.journal import CLOSE, DATA, ERROR, FLOW, OPEN, REPLY, Journal

#: Above this many bytes held by a shaper, the producer feeding it is paused.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

#: Seconds a TLS handshake (implicit TLS, or after STARTTLS) may take before the connection is aborted.
TLS_HANDSHAKE_TIMEOUT = 10.0


def corrupt(data: bytes, rate: float, rng, at_least_one: bool = False) -> bytes:
    """Flip bytes of ``data`` at ``rate``, positions drawn with geometric gaps (no per-byte loop)."""
    if not data or rate <= 0:
        return data
    out = bytearray(data)
    flipped = 0
    if rate >= 1:
        positions = range(len(out))
    else:
        positions = []
        log_q = math.log(1.0 - rate)
        pos = -1
        while True:
            pos += int(math.log(1.0 - rng.random()) / log_q) + 1
            if pos >= len(out):
                break
            positions.append(pos)
    for pos in positions:
        out[pos] ^= rng.randrange(1, 256)
        flipped += 1
    if at_least_one and not flipped:
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    return bytes(out)


class Shaper:
    """One direction of one connection under one wire action.

    ``deliver`` passes bytes on (to the socket, or up to the protocol);
    queued bytes are released by reactor timers, in order.
    """

    def __init__(self, fault: Fault, deliver: Callable[[bytes], None], connection: "FaultingProtocol",
                 direction: str, clock):
        self.fault = fault
        self.action = fault.action
        self.deliver = deliver
        self.connection = connection
        self.direction = direction
        self.clock = clock
        self.limit = int(fault.param("bytes", 0) or 0)
        self.passed = 0
        #: True once the action swallows everything (stall, truncate).
        self.black_hole = False
        #: A reset/close at connect waits for the first byte either way, so the
        #: client sees its connection reset, not refused (see ``start``).
        self.armed = False
        self.queue: deque[tuple[float, bytes]] = deque()
        #: How much of the head item has gone out (throttle and slice release parts of it).
        self._offset = 0
        self.queued = 0
        self._timer = None
        self._last_due = 0.0
        self._drained: list[Callable[[], None]] = []

    def start(self) -> None:
        if self.action in ("reset", "close", "stall", "truncate") and self.limit == 0:
            if self.action in ("reset", "close") and self.fault.rule.on == "connect":
                self.armed = True  # an RST before the client spoke reads as "connection refused"
            else:
                self._limit_reached()

    def fire(self) -> None:
        """Trip an armed reset/close now."""
        self.armed = False
        self._limit_reached()

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def take_queue(self) -> tuple[list[bytes], list[Callable[[], None]]]:
        """Hand over what is still queued and who waits for it to drain (another action replaces this one)."""
        self.cancel()
        pending = [data for _, data in self.queue]
        if pending and self._offset:
            pending[0] = pending[0][self._offset:]
        self.queue.clear()
        self._offset = 0
        self.queued = 0
        drained, self._drained = self._drained, []
        return pending, drained

    def when_drained(self, callback: Callable[[], None]) -> None:
        if not self.queued:
            callback()
        else:
            self._drained.append(callback)

    # -- bytes in ---------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.black_hole or not data:
            return
        action = self.action
        if action in ("reset", "close", "stall", "truncate"):
            room = self.limit - self.passed
            if len(data) < room:
                self.passed += len(data)
                self.deliver(data)
                return
            self.passed += room
            if room:
                self.deliver(data[:room])
            self._limit_reached()
        elif action == "corrupt":
            self.deliver(corrupt(data, float(self.fault.param("rate")), self.fault.rng))
        elif action == "delay":
            delay = float(self.fault.param("seconds")) + self.fault.rng.uniform(0, float(self.fault.param("jitter")))
            due = max(self.clock.seconds() + delay, self._last_due)
            self._last_due = due
            self._enqueue(due, data)
        else:  # throttle, slice: paced by the pump
            self._enqueue(0.0, data)

    def _enqueue(self, due: float, data: bytes) -> None:
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > HIGH_WATER and self.direction == "down":
            self.connection.shaper_full(True)
        if self._timer is None:
            if self.action == "delay":
                self._timer = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._pump)
            else:
                self._pump()

    def _limit_reached(self) -> None:
        transport = self.connection.transport
        if self.action == "reset":
            self.black_hole = True
            transport.abortConnection()
        elif self.action == "close":
            self.black_hole = True
            self.connection._watch_backlog(False)
            transport.loseConnection()
        else:
            self.black_hole = True
            if self.action == "stall" and self.direction == "up":
                transport.pauseProducing()  # the client's bytes back up in TCP, as on a dead link

    # -- bytes out ---------------------------------------------------------

    def _pump(self) -> None:
        self._timer = None
        if self.action == "delay":
            now = self.clock.seconds()
            while self.queue and self.queue[0][0] <= now:
                self._release(self.queue.popleft()[1])
            if self.queue:
                self._timer = self.clock.callLater(max(0.0, self.queue[0][0] - now), self._pump)
        else:
            if self.action == "throttle":
                rate = int(self.fault.param("bytes_per_second"))
                budget = max(1, rate // 20)  # twenty releases a second keeps the rate smooth
            else:
                budget = max(1, int(self.fault.param("size")))
            sent = 0
            while self.queue and sent < budget:
                data = self.queue[0][1]
                take = budget - sent
                start = self._offset
                if len(data) - start > take:
                    # Copy only what goes out now: re-slicing the rest each time is quadratic.
                    self._offset = start + take
                    data = data[start:start + take]
                else:
                    self.queue.popleft()
                    self._offset = 0
                    data = data[start:] if start else data
                sent += len(data)
                self._release(data)
            if self.queue:
                gap = sent / rate if self.action == "throttle" else float(self.fault.param("interval"))
                self._timer = self.clock.callLater(gap, self._pump)
        if not self.queue:
            drained, self._drained = self._drained, []
            for callback in drained:
                callback()

    def _release(self, data: bytes) -> None:
        self.queued -= len(data)
        if self.connection.lost:
            return
        self.deliver(data)
        if self.direction == "down" and self.queued < LOW_WATER:
            self.connection.shaper_full(False)


#: Why reading from the client is paused (bits): the protocol asked, or the client does not read.
_BY_PROTOCOL = 1
_BY_BACKLOG = 2


@implementer(IPushProducer)
class _Backlog:
    """A connection's own producer on its transport while the protocol has none registered.

    The transport pauses it once more output waits unsent than its buffer
    holds (64 KiB for TCP): a client that sends and never reads then stops
    being read, instead of making the server buffer replies without end.
    """

    __slots__ = ("connection", "consumer")

    def __init__(self, connection: "FaultingProtocol", consumer):
        self.connection = connection
        #: The transport it is registered with (under TLS, the socket below it).
        self.consumer = consumer

    def pauseProducing(self):
        self.connection.backlog(True)

    def resumeProducing(self):
        self.connection.backlog(False)

    def stopProducing(self):
        pass  # the transport is going away: nothing of ours to stop


@implementer(IPushProducer)
class _ProducerGate:
    """Stands between a producer and the socket, so a shaper holding data can pause it too."""

    def __init__(self, producer, streaming: bool):
        self.producer = producer
        self.streaming = streaming
        self.transport_paused = False
        self.shaper_paused = False
        self.waiting = False  # a pull producer asked for more while the shaper was full

    def pauseProducing(self):
        self.transport_paused = True
        if self.streaming:
            self.producer.pauseProducing()

    def resumeProducing(self):
        self.transport_paused = False
        if self.shaper_paused:
            self.waiting = True
            return
        self.producer.resumeProducing()

    def stopProducing(self):
        self.producer.stopProducing()

    def shaper_full(self, full: bool) -> None:
        if full == self.shaper_paused:
            return
        self.shaper_paused = full
        if self.streaming:
            if full and not self.transport_paused:
                self.producer.pauseProducing()
            elif not full and not self.transport_paused:
                self.producer.resumeProducing()
        elif not full and self.waiting:
            self.waiting = False
            self.producer.resumeProducing()


def _stall_fault() -> Fault:
    import random

    return Fault(FaultRule(server="", action="stall", on="connect", wire=True), random.Random(0))


_STALL = _stall_fault()


class FaultingProtocol(Protocol):
    """Journals a connection and applies wire faults to it; the server protocol sees it as its transport.

    It does the job of Twisted's ``policies.ProtocolWrapper`` without subclassing it: that class
    forwards unknown attributes to the transport through ``__getattr__``, and a class with
    ``__getattr__`` gets none of CPython's specialised attribute lookups, so every ``self.x`` here and
    every ``transport.write`` in the protocol above took the slow path (a quarter of this wrapper's
    cost per HTTP request). What a protocol may read from its transport beyond the methods below is
    forwarded by name (``FORWARDED``).
    """

    #: zope's adapter lookup (``ISSLTransport(transport)``) asks for this on every request.
    __conform__ = None
    disconnecting = 0
    lost = False
    refused = False
    down: Shaper | None = None
    up: Shaper | None = None
    _gate: _ProducerGate | None = None
    _backlog: _Backlog | None = None
    _read_paused = 0
    _handshake_timer = None
    #: ``tls_abort``: where to cut the next TLS handshake ("client_hello", "server_hello"), or None.
    _cut_after: str | None = None

    def __init__(self, factory: "FaultingFactory", wrappedProtocol, seam: StageSeam):
        self.factory = factory
        self.wrappedProtocol = wrappedProtocol
        self.conn = seam.conn
        self.server = factory.server
        self.journal: Journal = factory.journal
        self.seam = seam
        seam.bind(self)
        self.bytes_up = self.bytes_down = 0
        self._captured_up = self._captured_down = 0
        self._cap = self.journal.payload_cap
        self._redacting = getattr(self.journal, "redact", True)

    # -- connection life ----------------------------------------------------

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        # twisted.web asks for both per request; each is a getsockname()/getpeername() call.
        self._peer = transport.getPeer()
        self._host = transport.getHost()
        # A reply written in pieces (POP3's +OK, then the message) otherwise waits
        # out the client's delayed ACK under Nagle: 40 ms a RETR.
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass  # not a TCP socket after all
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if not self.refused:
            if self.factory.watch_backlog:
                self._watch_backlog(True)
            self.wrappedProtocol.makeConnection(self)

    def getPeer(self):
        return self._peer

    def getHost(self):
        return self._host

    def logPrefix(self):
        wrapped = self.wrappedProtocol
        prefix = wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else wrapped.__class__.__name__
        return f"{prefix} ({self.__class__.__name__})"

    def stopConsuming(self):
        self.transport.stopConsuming()

    # twisted.web pauses and resumes its transport once a request: these two are _pause_reading and
    # _resume_reading for _BY_PROTOCOL, inlined.
    def pauseProducing(self):
        self.transport.pauseProducing()
        self._read_paused |= _BY_PROTOCOL

    def resumeProducing(self):
        paused = self._read_paused = self._read_paused & ~_BY_PROTOCOL
        if not paused:
            self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.stopProducing()

    def _pause_reading(self, why: int) -> None:
        if not self._read_paused or why == _BY_PROTOCOL:
            self.transport.pauseProducing()
        self._read_paused |= why

    def _resume_reading(self, why: int) -> None:
        if why == _BY_PROTOCOL:
            self._read_paused &= ~why
            if not self._read_paused:
                self.transport.resumeProducing()
        elif self._read_paused & why:
            self._read_paused &= ~why
            if not self._read_paused and not self.lost and not self.disconnecting:
                self.transport.resumeProducing()

    # -- a client that does not read ---------------------------------------------

    def _watch_backlog(self, on: bool) -> None:
        """Register (or drop) our own producer on the transport; a protocol's producer takes its place."""
        if on == (self._backlog is not None):
            return
        if on:
            if self.lost or self.disconnecting:
                return
            consumer = self.transport
            if isinstance(consumer, TLSMemoryBIOProtocol):
                # On the socket itself: TLS pauses its producer while a handshake is pending, and
                # not reading then would stall that handshake.
                consumer = consumer.transport
            self._backlog = _Backlog(self, consumer)
            consumer.registerProducer(self._backlog, True)
        else:
            consumer = self._backlog.consumer
            self._backlog = None
            consumer.unregisterProducer()
            self.backlog(False)

    def backlog(self, full: bool) -> None:
        """The transport's unsent output passed its limit (stop reading the client) or drained (read again)."""
        if full == bool(self._read_paused & _BY_BACKLOG):
            return
        if full:
            self._pause_reading(_BY_BACKLOG)
        else:
            self._resume_reading(_BY_BACKLOG)
            backlog = self._backlog
            if backlog is not None and getattr(backlog.consumer, "disconnecting", False):
                self._watch_backlog(False)  # closed from below (TLS) while paused: let the close finish
        if not self.lost:
            self.journal.record(FLOW, self.server, self.conn, reading=not full, bytes_up=self.bytes_up,
                                bytes_down=self.bytes_down)

    def connectionMade(self):
        peer = self._peer
        self.journal.record(OPEN, self.server, self.conn, peer=f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}",
                            listener=self.factory.label)
        if self.factory.tls:
            self._watch_handshake()
        fault = self.seam.at("connect", tls=self.factory.tls)
        if fault is not None and fault.action == "refuse":
            self.refused = True
            self.transport.loseConnection()

    def _watch_handshake(self) -> None:
        """Abort the connection if its TLS handshake has not finished within TLS_HANDSHAKE_TIMEOUT.

        Twisted's TLS layer waits for the rest of a ClientHello for as long as the connection
        lives, so a truncated one held a connection until the protocol's idle timeout (600 s).
        """
        self._handshake_timer = self.factory.clock.callLater(TLS_HANDSHAKE_TIMEOUT, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        handle = getattr(self.transport, "getHandle", None)
        # The client's Finished message arrived: the handshake is done.
        if self.lost or handle is None or handle().get_peer_finished() is not None:
            return
        self.journal.record(ERROR, self.server, self.conn, error="TLS handshake timed out",
                            seconds=TLS_HANDSHAKE_TIMEOUT)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.lost = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        for shaper in (self.down, self.up):
            if shaper is not None:
                shaper.cancel()
        self.journal.record(CLOSE, self.server, self.conn, bytes_up=self.bytes_up, bytes_down=self.bytes_down,
                            reason=reason.getErrorMessage() if reason is not None else "")
        self.factory.unregisterProtocol(self)
        if not self.refused:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None

    # -- faults ------------------------------------------------------------

    def apply(self, fault: Fault) -> None:
        direction = fault.rule.direction
        if direction in ("down", "both"):
            self.down = self._replace(self.down, Shaper(fault, self.transport.write, self, "down", self.factory.clock))
        if direction in ("up", "both"):
            self.up = self._replace(self.up, Shaper(fault, self._to_protocol, self, "up", self.factory.clock))

    def black_hole(self) -> None:
        """Swallow every byte and the FIN the server sends from now on."""
        if self.refused or self.lost:
            return
        shaper = Shaper(_STALL, self.transport.write, self, "down", self.factory.clock)
        self.down = self._replace(self.down, shaper)

    def _replace(self, old: Shaper | None, new: Shaper) -> Shaper:
        pending, waiting = old.take_queue() if old is not None else ([], [])
        new.start()
        for data in pending:
            new.feed(data)
        for callback in waiting:  # a loseConnection waiting for the old queue now waits for the new one
            new.when_drained(callback)
        return new

    def _to_protocol(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)

    def shaper_full(self, full: bool) -> None:
        if self._gate is not None:
            self._gate.shaper_full(full)

    # -- bytes in, from the client -------------------------------------------

    def dataReceived(self, data):
        if self.down is not None and self.down.armed:
            self.down.fire()
            return
        self.bytes_up += len(data)
        if self._captured_up < self._cap:
            if self.seam.guarded and self._redacting:
                self._guarded(data)
                return
            keep = data[: self._cap - self._captured_up]
            self._captured_up += len(keep)
            self.journal.record(DATA, self.server, self.conn, direction="up", size=len(data), payload=keep)
        if self.disconnecting:
            # The server is closing (TCP stops reading then, TLS may still hand over decrypted bytes):
            # more input would be parsed as new lines, e.g. the rest of a line refused as too long.
            return
        if self.up is None:
            self.wrappedProtocol.dataReceived(data)
        else:
            self.up.feed(data)

    # -- credentials in the payload ---------------------------------------------------

    #: Before login: a line's bytes wait here until the line is complete, so that
    #: a password split across reads is masked whole.
    _carry = b""
    #: [event, cursor] while guarded bytes are delivered: ``redact`` masks in that event from the cursor on.
    _unmasked: list | None = None

    def _guarded(self, data: bytes) -> None:
        """Journal complete lines, deliver, let the protocol ``redact`` them, and only then let sinks see them."""
        room = self._cap - self._captured_up
        text = self._carry + data
        cut = text.rfind(b"\n") + 1
        keep = text[:min(cut, room)]
        self._carry = text[len(keep):room]
        self._captured_up += len(keep)
        journal = self.journal
        journal.hold()
        try:
            self._unmasked = [journal.record(DATA, self.server, self.conn, direction="up", size=len(data),
                                             payload=keep), 0]
            if not self.disconnecting:  # as in dataReceived: a closing connection reads no more lines
                if self.up is None:
                    self.wrappedProtocol.dataReceived(data)
                else:
                    self.up.feed(data)
        finally:
            self._unmasked = None
            journal.release()

    def redact(self, secret: bytes) -> None:
        """Mask ``secret`` in the payload being delivered (the first occurrence from the last one masked)."""
        pending = self._unmasked
        if pending is None:
            return
        event, cursor = pending
        payload = event["payload"]
        at = payload.find(secret, cursor)
        end = at + len(secret)
        if at < 0:
            # Cut by the payload cap (or not where expected): mask everything from the cursor, to be safe.
            at, end = cursor, len(payload)
        event["payload"] = payload[:at] + b"*" * (end - at) + payload[end:]
        event["redacted"] = True
        pending[1] = end

    # -- bytes out, from the protocol (we are its transport) -------------------

    def write(self, data):
        if not data:
            return
        self.bytes_down += len(data)
        if self._captured_down < self._cap:
            keep = data[: self._cap - self._captured_down]
            self._captured_down += len(keep)
            self.journal.record(DATA, self.server, self.conn, direction="down", size=len(data), payload=keep)
        if self.down is None:
            self.transport.write(data)
        else:
            self.down.feed(data)

    def writeSequence(self, data):
        # One join, then one write below: cheaper than counting the pieces here and again in the
        # transport's writeSequence (twisted.web sends a response's head as a dozen pieces).
        self.write(b"".join(data))

    def loseConnection(self):
        self.disconnecting = 1
        self._watch_backlog(False)  # a producer still registered would keep the connection open
        down = self.down
        if down is None:
            self.transport.loseConnection()
        elif down.black_hole and down.action in ("stall", "truncate"):
            pass  # a black hole keeps its FIN too: the client waits, as it would on a dead link
        else:
            down.when_drained(self.transport.loseConnection)

    def abortConnection(self):
        self.transport.abortConnection()

    def startTLS(self, ctx, normal=True):
        """STARTTLS/STLS/AUTH TLS: bytes still held by a shaper (the "go ahead" reply) leave in the clear first."""
        down = self.down
        if down is not None and down.queued:
            down.when_drained(lambda: self._start_tls(ctx, normal))
        else:
            self._start_tls(ctx, normal)

    def _start_tls(self, ctx, normal) -> None:
        self.transport.startTLS(ctx, normal)
        if self._handshake_timer is None:
            self._watch_handshake()
        if self._cut_after is not None:
            # Twisted puts the TLS layer between the TCP connection and us.
            self._cut(getattr(self.transport, "protocol", None))

    def cut_handshake(self, after: str) -> None:
        """``tls_abort``: cut this connection's TLS handshake (now if TLS is already under us, else at STARTTLS)."""
        self._cut_after = after
        self._cut(self.transport)

    def _cut(self, tls) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        if isinstance(tls, TLSMemoryBIOProtocol) and not isinstance(tls.transport, HandshakeCut):
            tls.transport = HandshakeCut(tls.transport, self._cut_after,
                                         lambda sent: self.seam.record(REPLY, command="TLS handshake", cut=True,
                                                                       cut_after=self._cut_after, size=sent))

    def registerProducer(self, producer, streaming):
        self._watch_backlog(False)
        self._gate = _ProducerGate(producer, streaming)
        self.transport.registerProducer(self._gate, streaming)

    def unregisterProducer(self):
        self._gate = None
        self.transport.unregisterProducer()
        if self.factory.watch_backlog:
            self._watch_backlog(True)


#: Transport attributes a protocol may read through the wrapper, each read from the real transport
#: (TCP, TLS or a test's StringTransport) when asked: TCP options, TLS details, the socket.
FORWARDED = ("loseWriteConnection", "getTcpNoDelay", "setTcpNoDelay", "getTcpKeepAlive", "setTcpKeepAlive",
             "getPeerCertificate", "negotiatedProtocol", "handshake", "getHandle", "fileno", "socket", "TLS",
             "disconnected")


def forward_to_transport(cls: type, names: tuple[str, ...]) -> None:
    """Give a wrapper class one property per name, reading that attribute from ``self.transport`` when asked.

    The wrappers name what they forward rather than forward through ``__getattr__``: CPython does not
    specialise attribute lookups on a class with ``__getattr__``, and a wrapper is on every byte's path.
    """
    for name in names:
        setattr(cls, name, property(lambda self, _name=name: getattr(self.transport, _name),
                                    doc=f"The transport's ``{name}``."))


forward_to_transport(FaultingProtocol, FORWARDED)


class HandshakeCut:
    """Stands in for the raw transport under a TLS layer whose handshake a ``tls_abort`` fault cuts.

    "client_hello": the server reads the client's hello and closes without a
    word; "server_hello": only the first record of its answer (the
    ServerHello) goes out, then it closes, mid-flight, whatever the TLS
    version. The close is a plain FIN: no alert, no close_notify.
    """

    def __init__(self, inner, after: str, cut: Callable[[int], None]):
        self.inner = inner
        self.after = after
        self.on_cut = cut
        self.done = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def write(self, data: bytes) -> None:
        if self.done:
            return
        self.done = True
        sent = b""
        if self.after == "server_hello" and len(data) >= 5:
            sent = data[:5 + int.from_bytes(data[3:5], "big")]  # a TLS record: type, version, length, body
            self.inner.write(sent)
        self.on_cut(len(sent))
        self.inner.loseConnection()


class FaultingFactory(WrappingFactory):
    """Wraps a server factory so that every connection is numbered, journaled and faultable.

    A ``SeamFactory`` gets each connection's seam in ``buildProtocol(addr, seam)``.
    """

    protocol = FaultingProtocol
    noisy = False
    #: Stop reading a client that does not read its replies (see ``_Backlog``); secondary channels do not.
    watch_backlog = True

    def __init__(self, wrappedFactory, server: str, engine: FaultEngine, journal: Journal, clock,
                 label: str = "", tls: bool = False, alpn: tuple[bytes, ...] = (), replies: ReplyStyle | None = None):
        super().__init__(wrappedFactory)
        #: ALPN protocol ids this listener speaks under TLS (see testbed.tls).
        self.alpn = alpn
        self.server = server
        self.engine = engine
        self.journal = journal
        self.clock = clock
        self.label = label or server
        self.tls = tls
        self.replies = replies

    def new_seam(self) -> StageSeam:
        return StageSeam(self.engine, self.server, self.engine.next_connection(self.server), self.journal,
                         self.clock, self.replies, self.tls)

    def build_wrapped(self, addr, seam: StageSeam):
        if isinstance(self.wrappedFactory, SeamFactory):
            return self.wrappedFactory.buildProtocol(addr, seam)
        return self.wrappedFactory.buildProtocol(addr)

    def buildProtocol(self, addr):
        seam = self.new_seam()
        wrapped = self.build_wrapped(addr, seam)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped, seam)

    def abort_all(self) -> int:
        """Abort every open connection (stalled ones would otherwise linger); returns how many."""
        protocols = list(self.protocols)
        for p in protocols:
            p.transport.abortConnection()
        return len(protocols)


class _ChannelJournal:
    """The journal as a secondary channel's wrapper sees it: every event marked with the channel's name."""

    def __init__(self, journal: Journal, channel: str):
        self._journal = journal
        self._channel = channel
        self.payload_cap = journal.payload_cap

    def record(self, kind: str, server: str | None = None, conn: int | None = None, **fields: Any) -> dict:
        fields.setdefault("channel", self._channel)
        return self._journal.record(kind, server, conn, **fields)


class ChannelFactory(FaultingFactory):
    """The faulting factory of a connection's secondary channel (an FTP data connection, an SSH channel).

    Built by ``StageSeam.channel``: its connections carry the parent
    connection's number and seam, so rules and journal entries follow the
    parent; its events are marked ``channel=LABEL``. It asks no ``connect``
    stage of its own (the parent did); the protocol asks its stages.
    """

    def __init__(self, wrappedFactory, parent: StageSeam, label: str):
        super().__init__(wrappedFactory, parent.server, parent.engine, _ChannelJournal(parent.journal, label),
                         parent.clock, label=label, replies=parent.replies)
        self.parent = parent
        # A data channel either only reads (uploads) or only writes through its own producers.
        self.watch_backlog = False
        #: The journal without the channel mark, for events about the parent connection.
        self.parent_journal = parent.journal

    def new_seam(self) -> StageSeam:
        seam = self.parent
        return StageSeam(seam.engine, seam.server, seam.conn, self.journal, seam.clock, seam.replies, self.tls)
