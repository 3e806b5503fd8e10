"""The IMAP protocol's declaration: its config, fault stages and actions, reply wording, listeners.

Pure data for the registry; the server itself is ``testbed.servers.imap.server``.
"""

from __future__ import annotations

import typing

import attrs

from testbed.faults.rules import THEN, FaultSurface, ReplyStyle
from testbed.registry import ListenerSpec, MailListenersConfig, ProtocolSpec
from testbed.servers.smtp.spec import MECHANISMS, check_mail_tls


@attrs.frozen
class IMAPConfig(MailListenersConfig):
    #: SASL mechanisms AUTHENTICATE offers (PLAIN, LOGIN, CRAM-MD5); the LOGIN command is always there.
    auth: typing.List[str] = attrs.Factory(lambda: list(MECHANISMS))
    #: Advertise LOGINDISABLED and refuse LOGIN/AUTHENTICATE until STARTTLS (or on the IMAPS port).
    require_tls: bool = False


#: What a ``reply`` fault says when its rule gives no message: by (status, command), then by status.
FAULT_TEXTS = {
    ("NO", "LOGIN"): "[AUTHENTICATIONFAILED] Invalid credentials",
    ("NO", "AUTHENTICATE"): "[AUTHENTICATIONFAILED] Invalid credentials",
    ("NO", "SELECT"): "[NONEXISTENT] No such mailbox",
    ("NO", "EXAMINE"): "[NONEXISTENT] No such mailbox",
    ("NO", "STATUS"): "[NONEXISTENT] No such mailbox",
    ("NO", "APPEND"): "[OVERQUOTA] Quota exceeded",
    ("NO", "COPY"): "[OVERQUOTA] Quota exceeded",
    ("NO", "STARTTLS"): "TLS not available",
    "NO": "[UNAVAILABLE] Command failed (injected fault)",
    "BAD": "Command rejected (injected fault)",
    "BYE": "[UNAVAILABLE] Server shutting down (injected fault)",
}

SPEC = ProtocolSpec(
    name="imap",
    summary="IMAP4rev1 and IMAPS on twisted.mail.imap4: LOGIN, AUTHENTICATE, IDLE, over the shared mail store",
    config=IMAPConfig,
    faults=FaultSurface(
        # A UID command is its verb ("FETCH") with the attribute uid = true.
        stages={"connect", "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "LOGIN", "AUTHENTICATE",
                "NAMESPACE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "CHECK", "CLOSE",
                "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY"},
        actions={
            "reply": {"status": ("NO", "BAD", "BYE"), "message": str, "then": THEN},
            "preauth": {"user": str},
            "silence": {},
            "bye_mid_fetch": {"bytes": int, "message": str},
            "short_literal": {"missing": int},
            "idle_no_ack": {},
            "uidvalidity_change": {},
        },
        match={"user", "mailbox", "message", "tls", "uid", "mechanism"},
        where={"preauth": {"connect"}, "idle_no_ack": {"IDLE"}, "uidvalidity_change": {"SELECT", "EXAMINE"}},
        notes={"connect": "before the greeting (a reply there is untagged)"},
    ),
    replies=ReplyStyle(code_key="status", default_code="NO", stage_codes={"connect": "BYE"}, texts=FAULT_TEXTS,
                       default_text="[UNAVAILABLE] Command failed (injected fault)",
                       closing_codes=frozenset({"BYE"})),
    listeners=(
        ListenerSpec("listen", "imap", "imap", option="imap", daemon_port=2143),
        ListenerSpec("tls_listen", "imaps", "imaps", tls=True, option="imaps", daemon_port=2993),
    ),
    server="testbed.servers.imap.server:IMAPServer",
    fixture="imap_server",
    check=check_mail_tls,
    daemon_defaults={"tls": "starttls"},
)
