"""The SMTP protocol's declaration: its config, fault stages and actions, reply wording, listeners.

Pure data for the registry; the server itself is ``testbed.servers.smtp.server``.
"""

from __future__ import annotations

import typing

import attrs

from testbed.faults.rules import THEN, TLS_ABORT, FaultSurface, ReplyStyle
from testbed.registry import ListenerSpec, MailListenersConfig, ProtocolSpec

#: SASL mechanisms the SMTP and IMAP servers can offer.
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


@attrs.frozen
class SMTPConfig(MailListenersConfig):
    hostname: str = "testbed.test"
    auth: typing.List[str] = attrs.Factory(lambda: list(MECHANISMS))
    require_tls: bool = False
    require_auth: bool = False
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 100


def check_mail_tls(config, check) -> None:
    """Mechanisms we implement, and a ``require_tls`` some client can meet (SMTP, POP3, IMAP, FTP)."""
    for mech in getattr(config, "auth", ()):
        if mech.upper() not in MECHANISMS:
            check.fail("auth", "mechanisms among " + ", ".join(MECHANISMS), mech)
    if config.enabled and config.require_tls and config.tls == "none" and not getattr(config, "tls_listen", ""):
        check.fail("require_tls", "tls = 'starttls' or a tls_listen port with it (no client could ever get in)", True)


#: What a fault reply says when its rule gives a code but no message.
FAULT_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox unavailable, try again later",
    451: "4.3.0 Requested action aborted: local error in processing",
    452: "4.3.1 Insufficient system storage",
    454: "4.7.0 Temporary failure, try again later",
    500: "5.5.2 Syntax error, command unrecognized",
    501: "5.5.4 Syntax error in parameters or arguments",
    502: "5.5.1 Command not implemented",
    503: "5.5.1 Bad sequence of commands",
    530: "5.7.0 Authentication required",
    534: "5.7.9 Authentication mechanism is too weak",
    535: "5.7.8 Authentication credentials invalid",
    538: "5.7.11 Encryption required for requested authentication mechanism",
    550: "5.1.1 Requested action not taken: mailbox unavailable",
    551: "5.1.6 User not local",
    552: "5.3.4 Message size exceeds fixed maximum message size",
    553: "5.1.3 Requested action not taken: mailbox name not allowed",
    554: "5.3.0 Transaction failed",
}

SPEC = ProtocolSpec(
    name="smtp",
    summary="SMTP and SMTPS on twisted.mail: STARTTLS, AUTH, size limits, delivery to the shared mail store",
    config=SMTPConfig,
    faults=FaultSurface(
        stages={"connect", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
                "message", "RSET", "NOOP", "VRFY", "QUIT"},
        actions={"reply": {"code": int, "message": str, "then": THEN}, "silence": {}, "strip_starttls": {},
                 "tls_abort": TLS_ABORT},
        match={"mail_from", "rcpt", "user", "mechanism", "helo", "size", "tls"},
        where={"strip_starttls": {"connect", "EHLO"}, "tls_abort": {"connect", "STARTTLS"}},
        notes={"connect": "before the greeting", "DATA": "before the 354 (a wire action acts after it)",
               "message": "after the final dot, before the message is stored and acknowledged"},
    ),
    replies=ReplyStyle(
        code_key="code", default_code=451,
        stage_codes={"connect": 421, "AUTH": 535, "STARTTLS": 454, "DATA": 554, "message": 451},
        texts=FAULT_TEXTS, default_text="Requested action not taken (testbed fault)",
        closing_codes=frozenset({421}),
    ),
    listeners=(
        ListenerSpec("listen", "smtp", "smtp", option="smtp", daemon_port=2525),
        ListenerSpec("tls_listen", "smtps", "smtps", tls=True, option="smtps", daemon_port=2465),
    ),
    server="testbed.servers.smtp.server:SMTPServer",
    fixture="smtp_server",
    wait_aliases={"to": "rcpt_to", "sender": "mail_from"},
    check=check_mail_tls,
    daemon_defaults={"tls": "starttls"},
)
