"""Every tcp: listener the scenario builds gets a listen backlog of 1,024 unless its endpoint names one (issue 9, item 10).

Twisted's default of 50 dropped parallel connections whose handshakes had completed.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from testbed.harness import Testbed
from testbed.servers.base import LISTEN_BACKLOG, with_backlog


def test_the_default_backlog_is_added_only_to_tcp_endpoints_without_one():
    assert LISTEN_BACKLOG >= 1024
    assert with_backlog("tcp:0:interface=127.0.0.1") == f"tcp:0:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp6:port=0:interface=\\:\\:1") == f"tcp6:port=0:interface=\\:\\:1:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:0:backlog=77") == "tcp:0:backlog=77"
    assert with_backlog("TCP:0") == f"TCP:0:backlog={LISTEN_BACKLOG}"
    assert with_backlog("unix:/tmp/x.sock") == "unix:/tmp/x.sock"
    assert with_backlog("ssl:0:privateKey=k.pem") == "ssl:0:privateKey=k.pem"


def test_every_listener_of_a_scenario_listens_with_the_backlog():
    reactor = MemoryReactorClock()
    bed = Testbed({"servers": {"smtp": {"listen": "tcp:0:interface=127.0.0.1:backlog=77"},
                                "dns": {"enabled": False}}}, reactor=reactor)
    failures = []
    bed.start().addErrback(failures.append)
    assert failures == []
    backlogs = [backlog for _, _, backlog, _ in reactor.tcpServers]
    assert len(backlogs) >= 8  # HTTP, HTTPS, SMTP, SMTPS, POP3, POP3S, IMAP, IMAPS, FTP
    assert sorted(set(backlogs)) == [77, LISTEN_BACKLOG]
    assert backlogs.count(77) == 1
