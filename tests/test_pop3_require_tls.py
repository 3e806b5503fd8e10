"""POP3 ``require_tls``, like SMTP, IMAP and FTP: no credentials in the clear, USER and SASL hidden until STLS."""

from __future__ import annotations

import base64

import pytest

from testbed.config import from_dict
from testbed.schema import ScenarioError

from test_pop3 import ALICE, bed, store  # noqa: F401  (fixtures)

REFUSAL = b"-ERR [AUTH] TLS required: send STLS first\r\n"


def test_credentials_are_refused_before_stls_and_accepted_after(bed):
    client = bed.connect(tls="starttls", require_tls=True)
    capa = client("CAPA")
    assert b"\r\nSTLS\r\n" in capa and b"\r\nUSER\r\n" not in capa and b"SASL" not in capa
    assert client(f"USER {ALICE}") == REFUSAL
    assert client("PASS secret") == REFUSAL
    assert client(f"APOP {ALICE} 0123456789abcdef0123456789abcdef") == REFUSAL
    plain = base64.b64encode(f"\0{ALICE}\0secret".encode()).decode()
    assert client(f"AUTH PLAIN {plain}") == REFUSAL
    assert bed.journal.query("reply", server="pop3", status="-ERR")
    client.conn.transport.startTLS = lambda options, normal=True: None
    assert client("STLS") == b"+OK Begin TLS negotiation\r\n"
    assert b"\r\nUSER\r\n" in client("CAPA")
    client.login()


def test_implicit_tls_meets_require_tls(bed):
    client = bed.connect(implicit=True, tls="implicit", require_tls=True)
    client.login()


def test_require_tls_without_any_tls_is_a_scenario_error():
    with pytest.raises(ScenarioError, match=r"servers\.pop3\.require_tls: expected tls = .starttls."):
        from_dict({"servers": {"pop3": {"tls": "none", "tls_listen": "", "require_tls": True}}})
