"""Regression tests for the SMTP defects the fuzz campaign found (issue 9): framing of over-long lines, bad SIZE values."""

from __future__ import annotations

import pytest

from test_smtp import Session

CHUNK = 64 * 1024


@pytest.mark.parametrize("size", [1024 * 1024, 8 * 1024 * 1024 + 17])
def test_one_over_long_line_gets_one_reply_however_it_is_read(size):
    s = Session()
    s.ehlo()
    line = b"NOOP " + b"x" * size
    replies = b""
    for start in range(0, len(line), CHUNK):
        replies += s.send(line[start:start + CHUNK])
    replies += s.send(b"\r\nNOOP\r\n")
    assert replies == b"500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n"
    assert len(s.events("error")) == 1


def test_an_over_long_line_then_pipelined_commands_pair_up():
    s = Session()
    s.ehlo()
    s.send(b"x" * (3 * CHUNK))
    assert s.send(b"y" * CHUNK + b"\r\nMAIL FROM:<a@b.test>\r\nRSET\r\n") == (
        b"250 2.1.0 Sender OK\r\n250 2.0.0 Ok\r\n")


@pytest.mark.parametrize("value", [b"-1", b"", b"1_0", b"0x10", b"123456789012345678901", b"\xd9\xa1"])
def test_a_malformed_size_parameter_is_a_syntax_error(value):
    s = Session()
    s.ehlo()
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=" + value) == b"501 5.5.4 Syntax: SIZE=<1 to 20 digits>\r\n"
    assert s.cmd(b"MAIL FROM:<a@b.test> SIZE=10") == b"250 2.1.0 Sender OK\r\n"
