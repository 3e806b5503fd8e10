"""A UDP echo server: the smallest datagram server, here to prove datagram faults end to end.

Hand-written because Twisted ships its echo only as a TCP/UDP example, not a module.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from testbed.faults.udp import FaultingDatagramProtocol
from testbed.servers.base import Server
from testbed.servers.udp import listen_udp


class Echo(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


class EchoServer(Server):
    """``echo``: a UDP port that sends every datagram back."""

    scheme = "udp"

    def __init__(self, context):
        super().__init__(context)
        self.wrapper: FaultingDatagramProtocol | None = None

    def start(self):
        self.wrapper = FaultingDatagramProtocol(Echo(), self.name, self.context.faults, self.context.journal, self.context.reactor)
        listen_udp(self, self.config.listen, self.wrapper, "udp")
        return defer.succeed(None)

    def reset(self) -> None:
        super().reset()
        if self.wrapper is not None:
            self.wrapper.reset()
