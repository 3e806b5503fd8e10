"""Regression tests for the FTP defects the fuzz and crash campaign found (issue 9).

Path resolution stays linear and bounded, plaintext pipelined after AUTH TLS is dropped, bad REST offsets get 501.
"""

from __future__ import annotations

import os

from testbed.journal import ERROR
from testbed.servers.ftp import fs as ftp_fs
from testbed.servers.ftp.fs import MAX_SEGMENTS, JailedShell

from test_ftp import Session, TLSStringTransport
from test_ftp_fs import result_of


def test_jailed_path_resolution_is_linear_in_the_segments(tmp_path, monkeypatch):
    root = tmp_path / "root"
    deep = root.joinpath(*["a"] * 100)
    deep.mkdir(parents=True)
    shell = JailedShell(str(root))
    calls = []
    real_lstat = os.lstat

    def counting_lstat(path, *args, **kwargs):
        calls.append(path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting_lstat)
    result_of(shell.access(["a"] * 100))
    # One look per segment (realpath on every prefix made it 100 * 101 / 2 = 5,050).
    assert len(calls) <= 2 * 100


def test_a_4000_segment_cwd_gets_the_error_reply_and_a_journal_entry():
    s = Session()
    s.login()
    path = "/".join(["a"] * 4000)
    assert s.cmd(f"CWD {path}") == f"550 Path too deep: more than {MAX_SEGMENTS} segments.\r\n".encode()
    assert s.events(ERROR, error="path too deep")[0]["segments"] == 4000
    assert s.cmd("PWD") == b'257 "/" is the current directory.\r\n'


def test_shells_refuse_too_many_segments_given_as_a_list(tmp_path):
    shell = JailedShell(str(tmp_path))
    refused = []
    shell = shell.with_callbacks(on_violation=lambda target, reason: refused.append(reason))
    d = shell.access(["a"] * (MAX_SEGMENTS + 1))
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ftp_fs.ftp.PermissionDeniedError)
    assert refused == ["too-many-segments"]


def test_commands_pipelined_with_auth_tls_are_dropped_and_journaled():
    s = Session(tls=True)
    s.conn.transport.startTLS = lambda options, normal=True: None
    s.conn.send(b"AUTH TLS\r\nUSER anonymous\r\n")
    assert s.conn.sent() == b"234 AUTH TLS successful.\r\n"
    dropped = s.events(ERROR, error="command pipelined after AUTH TLS dropped")
    assert dropped and dropped[0]["size"] == len(b"USER anonymous\r\n")
    # What comes after the handshake is read as usual.
    assert s.cmd("USER anonymous").startswith(b"331 ")


def test_rest_with_an_offset_beyond_any_file_gets_501():
    s = Session()
    s.login()
    assert s.cmd("REST 99999999999999999999") == b"501 REST offset too large.\r\n"
    assert s.cmd("REST 9223372036854775808") == b"501 REST offset too large.\r\n"
    assert s.cmd("REST 12") == b"350 Restarting at 12. Send STOR or RETR to start the transfer.\r\n"
