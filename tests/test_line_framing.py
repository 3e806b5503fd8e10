"""One over-long command line gets one reply in every line protocol, however many reads carry it (issue 9, item 3).

The server refuses the line and closes; what the client keeps sending meanwhile is not read as more lines.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from testbed import testing
from testbed.journal import ERROR
from testbed.mail.store import MailStore
from testbed.servers.ftp.fs import MemoryShell
from testbed.servers.ftp.server import FTPFactory
from testbed.servers.imap.server import IMAPFactory
from testbed.servers.imap.spec import IMAPConfig
from testbed.servers.pop3 import server as pop3
from testbed.servers.pop3.spec import POP3Config

CHUNK = 64 * 1024


class NoTLS:
    def options(self, kind: str = "valid"):
        return None


FACTORIES = {
    "pop3": (lambda store: pop3.build_factory(POP3Config(), store, NoTLS(), Clock()), b"-ERR line too long\r\n"),
    "imap": (lambda store: IMAPFactory(IMAPConfig(tls="none"), store, ctx=None, clock=Clock()),
             b"* BYE [TOOBIG] Line too long\r\n"),
    "ftp": (lambda store: FTPFactory(MemoryShell({}), users={}, reactor=MemoryReactorClock()),
            b"500 Command line too long.\r\n"),
}


@pytest.mark.parametrize("protocol", sorted(FACTORIES))
def test_a_one_mebibyte_line_read_in_64k_pieces_gets_one_reply(protocol):
    build, refusal = FACTORIES[protocol]
    conn = testing.connect(build(MailStore(users={"a@b.test": "pw"})), protocol)
    conn.sent()
    line = b"NOOP " + b"x" * (1024 * 1024)
    replies = b""
    for start in range(0, len(line), CHUNK):
        conn.send(line[start:start + CHUNK])
        replies += conn.sent()
    conn.send(b"\r\nNOOP\r\n")
    replies += conn.sent()
    assert replies == refusal
    assert conn.closed
    assert len(conn.journal.query(ERROR, server=protocol)) == 1
