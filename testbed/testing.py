"""Helpers for testing protocols and clients without sockets: a faultable connection over StringTransport.

``connect(factory, "smtp", rules=[...])`` builds the same wrapper stack the
harness listens with, on a ``StringTransport`` and a ``Clock``, so a unit test
can drive a protocol byte by byte and advance time by hand.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from testbed import registry
from testbed.config import rule_from_kwargs
from testbed.faults.engine import FaultEngine
from testbed.faults.rules import FaultRule
from testbed.faults.seam import SeamFactory
from testbed.faults.wire import FaultingFactory, FaultingProtocol
from testbed.journal import Journal

__all__ = ["Connection", "connect", "engine", "rules", "SeamFactory"]


@attrs.define
class Connection:
    """One faultable connection to a protocol, over a StringTransport."""

    wrapper: FaultingProtocol
    transport: StringTransport
    clock: Clock
    journal: Journal
    engine: FaultEngine
    factory: FaultingFactory

    @property
    def protocol(self):
        return self.wrapper.wrappedProtocol

    def send(self, data: bytes) -> None:
        """Bytes from the client."""
        self.wrapper.dataReceived(data)

    def sent(self) -> bytes:
        """Bytes the server wrote so far, and forget them."""
        value = self.transport.value()
        self.transport.clear()
        return value

    def pump(self, limit: int = 100000) -> None:
        """Run a registered producer (a RETR, a file download) until it unregisters itself."""
        for _ in range(limit):
            producer = self.transport.producer
            if producer is None:
                return
            producer.resumeProducing()
        raise AssertionError(f"the producer was still registered after {limit} rounds")

    def drop(self, reason=None) -> None:
        """The client went away: deliver connectionLost."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.wrapper.connectionLost(reason or Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        """The server closed the connection (FIN or RST)."""
        return bool(self.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        """The server reset the connection (StringTransport marks abortConnection as disconnected)."""
        return bool(getattr(self.transport, "disconnected", False))


def rules(*specs: Mapping[str, Any]) -> list[FaultRule]:
    """Fault rules from dicts with the keys of a ``[[faults]]`` entry."""
    return [rule_from_kwargs(f"rules[{i}]", **spec) for i, spec in enumerate(specs)]


def engine(seed: int = 0, journal: Journal | None = None, rules: Iterable[FaultRule] = ()) -> FaultEngine:
    """A fault engine whose ``add(**rule)`` validates against every protocol under its own name."""
    return FaultEngine(seed, Journal() if journal is None else journal, list(rules),
                       build_rule=lambda **rule: rule_from_kwargs("faults.add()", **rule))


_new_engine = engine  # ``connect`` takes an ``engine`` argument of the same name


def connect(factory, server: str, rules: Iterable[FaultRule] = (), seed: int = 0, clock: Clock | None = None,
            journal: Journal | None = None, engine: FaultEngine | None = None, tls: bool = False,
            peer=("127.0.0.1", 40000), protocol: str | None = None) -> Connection:
    """Connect a new client to ``factory`` through the fault wrapper, on a StringTransport.

    ``server`` names the instance (its rules and journal entries); ``protocol``
    (default: the same name) gives the reply wording of its ``reply`` faults.
    A ``SeamFactory`` hands each protocol its connection's seam.
    """
    clock = clock or Clock()
    journal = Journal(clock=clock.seconds) if journal is None else journal
    engine = _new_engine(seed, journal, rules) if engine is None else engine
    spec = registry.protocols().get(protocol or server)
    wrapping = FaultingFactory(factory, server, engine, journal, clock, tls=tls,
                               replies=spec.replies if spec is not None else None)
    # A StringTransport buffers without limit and never pauses a producer: nothing to watch, and the
    # transport's producer slot stays free for the protocol's own (``pump`` drives it).
    wrapping.watch_backlog = False
    addr = IPv4Address("TCP", *peer)
    wrapper = wrapping.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 2525))
    wrapper.makeConnection(transport)
    return Connection(wrapper, transport, clock, journal, engine, wrapping)
