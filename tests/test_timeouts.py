"""Connections that would linger are closed on the reactor's clock (issue 9, item 9).

A TLS handshake that never finishes (implicit TLS or after STARTTLS) and an idle DNS-over-TCP connection.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from testbed import testing
from testbed.faults.wire import TLS_HANDSHAKE_TIMEOUT, FaultingFactory
from testbed.journal import ERROR, Journal
from testbed.mail.store import MailStore
from testbed.servers.dns.records import ZoneSet
from testbed.servers.dns.server import TCP_IDLE_TIMEOUT, DNSFactory
from testbed.servers.smtp.server import build_factory
from testbed.servers.smtp.spec import SMTPConfig
from testbed.tls import ServerTLS

#: The first bytes of a TLS 1.2 ClientHello record whose announced length is never reached.
TRUNCATED_CLIENT_HELLO = bytes.fromhex("160301020001")


def implicit_tls_smtp(clock, journal):
    tls = ServerTLS()
    smtp = build_factory(SMTPConfig(tls="implicit"), MailStore(), tls, reactor=clock)
    engine = testing.engine(0, journal)
    wrapped = FaultingFactory(smtp, "smtp", engine, journal, clock, tls=True)
    outer = TLSMemoryBIOFactory(tls.options(), False, wrapped, clock=clock)
    protocol = outer.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_truncated_client_hello_is_dropped_after_the_handshake_timeout():
    clock = Clock()
    journal = Journal(clock=clock.seconds)
    protocol, transport = implicit_tls_smtp(clock, journal)
    protocol.dataReceived(TRUNCATED_CLIENT_HELLO)
    clock.advance(TLS_HANDSHAKE_TIMEOUT - 1)
    assert not transport.disconnecting and not transport.disconnected
    clock.advance(1)
    assert transport.disconnecting or transport.disconnected
    [entry] = journal.query(ERROR, server="smtp")
    assert entry["error"] == "TLS handshake timed out"


class _Handshake:
    def __init__(self):
        self.finished = None

    def get_peer_finished(self):
        return self.finished


class _StartTLSTransport(StringTransport):
    """A transport whose STARTTLS handshake finishes when the test says so."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.handshake = _Handshake()
        self.started = False

    def startTLS(self, options, normal=True):
        self.started = True

    def getHandle(self):
        return self.handshake


def test_a_starttls_handshake_that_never_finishes_is_dropped_and_one_that_does_is_kept():
    for finished in (None, b"finished"):
        clock = Clock()
        conn = testing.connect(build_factory(SMTPConfig(tls="starttls"), MailStore(), ServerTLS(), reactor=clock),
                               "smtp", clock=clock)
        transport = _StartTLSTransport(peerAddress=conn.transport.getPeer())
        conn.wrapper.transport = transport
        conn.send(b"EHLO client.test\r\nSTARTTLS\r\n")
        assert transport.started
        transport.handshake.finished = finished
        clock.advance(TLS_HANDSHAKE_TIMEOUT)
        timed_out = conn.journal.query(ERROR, error="TLS handshake timed out")
        assert bool(timed_out) == (finished is None)
        assert bool(transport.disconnecting or transport.disconnected) == (finished is None)


def test_an_idle_dns_tcp_connection_is_closed_and_a_busy_one_is_not():
    clock = Clock()
    journal = Journal(clock=clock.seconds)
    factory = DNSFactory(ZoneSet({}), engine=testing.engine(0, journal), journal=journal, clock=clock)
    busy = testing.connect(factory, "dns", clock=clock, journal=journal)
    idle = testing.connect(factory, "dns", clock=clock, journal=journal)
    for _ in range(3):
        clock.advance(TCP_IDLE_TIMEOUT - 1)
        busy.send(b"\x00")  # a byte of a length prefix: the client is still talking
    assert idle.closed and not busy.closed
    assert journal.query(ERROR, server="dns", conn=idle.wrapper.conn, error="idle timeout")
    clock.advance(TCP_IDLE_TIMEOUT)
    assert busy.closed
