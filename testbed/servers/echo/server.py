"""The echo server: each TCP line and each UDP datagram sent back; the worked example of a protocol.

Hand-written because Twisted ships echo only as an example, not a module. The
TCP side shows the whole seam: its factory hands each connection its seam,
the protocol asks the ``line`` stage and lets the seam carry out ``reply``
(``ERR message``) and ``silence``; the fault wrapper does every wire action.
"""

from __future__ import annotations

from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.basic import LineReceiver

from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.faults.udp import FaultingDatagramProtocol
from testbed.journal import COMMAND
from testbed.servers.base import Server
from testbed.servers.udp import listen_tcp_and_udp


class EchoDatagram(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


class EchoLine(LineReceiver):
    """Sends each line back; a ``line`` fault answers ``ERR message`` or nothing instead."""

    seam = NO_SEAM
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self.seam.record(COMMAND, command="line", text=text)
        fault = self.seam.at("line", text=text)
        if self.seam.carry_out(fault, "line", lambda _code, message: self.sendLine(f"ERR {message}".encode())):
            return
        self.sendLine(line)


class EchoFactory(SeamFactory, Factory):
    protocol = EchoLine


class EchoServer(Server):
    """``testbed["echo"]``: ``host``, ``port`` (TCP and UDP share it), ``faults``, ``journal``, ``wait_for``."""

    scheme = "echo"

    def __init__(self, context):
        super().__init__(context)
        self.udp: FaultingDatagramProtocol | None = None

    def start(self):
        context = self.context
        self.udp = FaultingDatagramProtocol(EchoDatagram(), self.name, context.faults, context.journal, context.reactor)
        return listen_tcp_and_udp(self, self.config.listen, EchoFactory(), self.udp, "echo")

    def reset(self) -> None:
        super().reset()
        if self.udp is not None:
            self.udp.reset()

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the lines received over TCP (journal ``command`` events, with their ``text``)."""
        return (lambda: self.context.journal.query(COMMAND, server=self.name)), "line"
