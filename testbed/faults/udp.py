"""Datagram faults: a wrapper between a UDP port and its DatagramProtocol.

Each client address is a "connection", numbered in first-seen order. At every
received datagram the engine is asked about the ``datagram`` stage; a rule's
``direction`` says whether its action (drop, delay, duplicate, corrupt,
truncate) hits that datagram (up) or the server's next reply to that peer (down).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.protocol import DatagramProtocol

from testbed.faults.engine import Fault, FaultEngine
from testbed.faults.wire import corrupt, forward_to_transport
from testbed.journal import DATA, Journal


def apply_datagram_fault(fault: Fault, data: bytes, deliver: Callable[[bytes], None], clock) -> None:
    """Send ``data`` through ``deliver`` as the UDP action of ``fault`` says."""
    action = fault.action
    if action == "drop":
        return
    if action == "delay":
        delay = float(fault.param("seconds")) + fault.rng.uniform(0, float(fault.param("jitter")))
        clock.callLater(delay, deliver, data)
    elif action == "duplicate":
        for _ in range(1 + int(fault.param("copies"))):
            deliver(data)
    elif action == "corrupt":
        deliver(corrupt(data, float(fault.param("rate")), fault.rng, at_least_one=True))
    elif action == "truncate":
        deliver(data[: int(fault.param("bytes"))])
    else:
        deliver(data)


class _Peer:
    """One client address: its connection number and the payload bytes journaled each way so far."""

    __slots__ = ("conn", "label", "up", "down")

    def __init__(self, conn: int, addr):
        self.conn = conn
        self.label = f"{addr[0]}:{addr[1]}"
        self.up = self.down = 0


class FaultingDatagramProtocol(DatagramProtocol):
    """Journals datagrams both ways and applies datagram faults; the wrapped protocol sees it as its transport.

    Like a TCP connection's, a peer's payloads are journaled up to ``payload_cap``
    bytes each way; past that, datagrams cost no journal event.
    """

    noisy = False

    def __init__(self, wrapped: DatagramProtocol, server: str, engine: FaultEngine, journal: Journal, clock):
        self.wrapped = wrapped
        self.server = server
        self.engine = engine
        self.journal = journal
        self.clock = clock
        self.peers: dict[Any, _Peer] = {}
        self._pending_down: dict[Any, Fault] = {}

    def _peer(self, addr) -> _Peer:
        peer = self.peers.get(addr)
        if peer is None:
            peer = self.peers[addr] = _Peer(self.engine.next_connection(self.server), addr)
            limit = self.journal.max_events
            if limit and len(self.peers) > limit:
                self._forget_oldest(limit)
        return peer

    def connection_number(self, addr) -> int:
        return self._peer(addr).conn

    def _forget_oldest(self, limit: int) -> None:
        """Bound the peer table like every record list: a tenth of the oldest peers go (amortised O(1)).

        A forgotten peer that comes back is numbered as a new connection.
        """
        keep = limit - limit // 10
        self.peers = dict(list(self.peers.items())[-keep:])
        self._pending_down = {a: f for a, f in self._pending_down.items() if a in self.peers}

    def reset(self) -> None:
        self.peers.clear()
        self._pending_down.clear()

    # -- the port's side ----------------------------------------------------

    def startProtocol(self):
        self.wrapped.makeConnection(self)

    def stopProtocol(self):
        self.wrapped.doStop()

    def datagramReceived(self, data, addr):
        peer = self._peer(addr)
        self._capture(peer, "up", data)
        if not self.engine.wants(self.server, "datagram"):
            self.wrapped.datagramReceived(data, addr)
            return
        fault = self.engine.decide(self.server, "datagram", peer.conn, {"direction": "up"})
        if fault is not None and fault.rule.direction in ("down", "both"):
            self._pending_down[addr] = fault
        if fault is not None and fault.rule.direction in ("up", "both"):
            apply_datagram_fault(fault, data, lambda d: self.wrapped.datagramReceived(d, addr), self.clock)
        else:
            self.wrapped.datagramReceived(data, addr)

    # -- the wrapped protocol's transport --------------------------------------

    def write(self, data, addr=None):
        if self._pending_down:
            fault = self._pending_down.pop(addr, None)
            if fault is not None:
                apply_datagram_fault(fault, data, lambda d: self._send(d, addr), self.clock)
                return
        self._send(data, addr)

    def _send(self, data, addr):
        """Journal a datagram as it leaves (after any fault shaped it) and send it."""
        if self.transport is None:
            return
        self._capture(self._peer(addr), "down", data)
        self.transport.write(data, addr)

    def _capture(self, peer, direction: str, data: bytes) -> None:
        """Journal a datagram's payload, up to ``payload_cap`` per peer and direction (as TCP per connection)."""
        taken = getattr(peer, direction)
        cap = self.journal.payload_cap
        if taken < cap:
            keep = data[: cap - taken]
            setattr(peer, direction, taken + len(keep))
            self.journal.record(DATA, self.server, peer.conn, direction=direction, size=len(data), payload=keep,
                                peer=peer.label)



#: The port's own methods a datagram protocol may call on its transport, each read from the real port when asked.
FORWARDED = ("getHost", "connect", "loseConnection", "stopListening", "getHandle", "fileno", "socket",
             "setBroadcastAllowed", "getBroadcastAllowed", "joinGroup", "leaveGroup", "setTTL", "getTTL",
             "setLoopbackMode", "getLoopbackMode", "setOutgoingInterface", "getOutgoingInterface")

forward_to_transport(FaultingDatagramProtocol, FORWARDED)
