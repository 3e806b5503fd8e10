"""Datagram faults end to end on the UDP echo server, with a real socket over loopback."""

import socket

import pytest

SCENARIO = {"seed": 5, "servers": {"echo": {"enabled": True}, "http": {"enabled": False}}}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


@pytest.fixture
def echo(testbed):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((testbed["echo"].host, testbed["echo"].port))
    yield sock
    sock.close()


def replies(sock, count, timeout=0.3):
    """What comes back within the timeout (a short timeout proves the absence of replies)."""
    got = []
    sock.settimeout(timeout)
    try:
        while len(got) < count:
            got.append(sock.recv(2048))
    except socket.timeout:
        pass
    return got


def test_without_faults_datagrams_come_back(echo, testbed):
    echo.send(b"ping")
    assert echo.recv(100) == b"ping"
    directions = [e["direction"] for e in testbed.journal.query("data", server="echo")]
    assert directions == ["up", "down"]


@pytest.mark.fault(server="echo", action="drop", times=1)
def test_drop(echo, testbed):
    echo.send(b"one")
    assert replies(echo, 1) == []
    echo.send(b"two")
    assert echo.recv(100) == b"two"


@pytest.mark.fault(server="echo", action="duplicate", copies=2)
def test_duplicate(echo):
    echo.send(b"dup")
    assert replies(echo, 3, timeout=2) == [b"dup"] * 3


@pytest.mark.fault(server="echo", action="truncate", bytes=3)
def test_truncate(echo):
    echo.send(b"truncated")
    assert echo.recv(100) == b"tru"


@pytest.mark.fault(server="echo", action="corrupt", rate=0.2)
def test_corrupt(echo):
    echo.send(b"x" * 100)
    reply = echo.recv(200)
    assert len(reply) == 100 and reply != b"x" * 100


@pytest.mark.fault(server="echo", action="delay", seconds=0.3)
def test_delay(echo, testbed):
    echo.send(b"late")
    assert echo.recv(100) == b"late"
    up, down = testbed.journal.query("data", server="echo")
    assert down["t"] - up["t"] >= 0.3


@pytest.mark.fault(server="echo", action="drop", direction="up")
def test_drop_upstream_never_reaches_the_server(echo, testbed):
    echo.send(b"gone")
    assert replies(echo, 1) == []
    assert [e["direction"] for e in testbed.journal.query("data", server="echo")] == ["up"]


def test_the_datagram_wrapper_hands_on_the_ports_methods():
    from twisted.internet.protocol import DatagramProtocol

    from testbed.faults.udp import FaultingDatagramProtocol
    from testbed.journal import Journal
    from testbed.testing import engine

    class Port:
        def getHost(self):
            return ("127.0.0.1", 5353)

    wrapper = FaultingDatagramProtocol(DatagramProtocol(), "dns", engine(), Journal(), clock=None)
    wrapper.transport = Port()
    assert wrapper.getHost() == ("127.0.0.1", 5353)
    assert getattr(wrapper, "joinGroup", None) is None  # the port has none: absent here too, as getattr expects


def test_a_flood_of_datagrams_is_read_in_batches_so_tcp_clients_get_their_turn():
    """One reactor event reads about UDP_READ_BUDGET bytes of datagrams; the rest wait for the next event."""
    from twisted.internet.selectreactor import SelectReactor

    from testbed.harness import Testbed
    from testbed.servers.udp import UDP_READ_BUDGET

    reactor = SelectReactor()  # never run: the test drives the port's reads by hand
    bed = Testbed(SCENARIO, reactor=reactor)
    bed.start()
    try:
        port = next(listener.port for listener in bed["echo"].listeners if listener.scheme == "udp")
        datagram = b"x" * 64
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.connect((bed["echo"].host, bed["echo"].port))
            for _ in range(300):
                client.send(datagram)
            port.doRead()
            first = len(replies(client, 300, timeout=0.2))
            port.doRead()
            second = len(replies(client, 300, timeout=0.2))
        assert first == UDP_READ_BUDGET // len(datagram)
        assert second == first  # the rest waited in the socket for the next event
    finally:
        bed.stop()
