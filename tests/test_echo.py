"""The echo server's TCP side, the worked example of the seam: lines back, and line-stage faults."""

import socket

import pytest

from testbed import testing
from testbed.servers.echo.server import EchoFactory

SCENARIO = {"servers": {"echo": {"enabled": True}, "http": {"enabled": False}, "smtp": {"enabled": False},
                        "pop3": {"enabled": False}, "imap": {"enabled": False}, "ftp": {"enabled": False},
                        "dns": {"enabled": False}}}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


def talk(server, *lines, read=1):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"".join(line + b"\n" for line in lines))
        reader = sock.makefile("rb")
        return [reader.readline() for _ in range(read)]


def test_lines_come_back_on_the_port_udp_also_uses(testbed):
    echo = testbed["echo"]
    assert talk(echo, b"hello") == [b"hello\n"]
    assert {l.label for l in echo.listeners} == {"echo/tcp", "echo/udp"}
    assert len({l.number for l in echo.listeners}) == 1
    assert [e["text"] for e in testbed.journal.query("command", server="echo")] == ["hello"]


@pytest.mark.fault(server="echo", on="line", match={"text": "bad*"}, action="reply", message="no thanks")
def test_a_reply_fault_answers_instead_of_the_echo(testbed):
    assert talk(testbed["echo"], b"good", b"bad one", read=2) == [b"good\n", b"ERR no thanks\n"]
    assert [f["attributes"]["text"] for f in testbed.journal.faults("echo")] == ["bad one"]


def test_the_seam_carries_out_reply_then_close_over_a_string_transport():
    c = testing.connect(EchoFactory(), "echo", rules=testing.rules(
        {"server": "echo", "on": "line", "action": "reply", "then": "close"}))
    c.send(b"hi\n")
    assert c.sent() == b"ERR injected fault\n"
    assert c.closed


def test_silence_and_a_wire_action_at_the_line_stage():
    c = testing.connect(EchoFactory(), "echo", rules=testing.rules(
        {"server": "echo", "on": "line", "action": "silence", "times": 1},
        {"server": "echo", "on": "line", "action": "delay", "seconds": 2.0}))
    c.send(b"one\n")
    assert c.sent() == b""
    c.send(b"two\n")
    assert c.sent() == b""
    c.clock.advance(2.0)
    assert c.sent() == b"two\n"
    assert c.journal.query("reply", server="echo")[0]["silenced"] is True
