"""The POP3 protocol's declaration: its config, fault stages and actions, reply wording, listeners.

Pure data for the registry; the server itself is ``testbed.servers.pop3.server``.
"""

from __future__ import annotations

import attrs

from testbed.faults.rules import THEN, FaultSurface, ReplyStyle
from testbed.registry import ListenerSpec, MailListenersConfig, ProtocolSpec
from testbed.servers.smtp.spec import check_mail_tls


@attrs.frozen
class POP3Config(MailListenersConfig):
    """POP3's listeners, plus ``require_tls``: users and mail come from the scenario's [users] and store."""

    #: Refuse USER, PASS, APOP and AUTH (and leave USER and SASL out of CAPA) until STLS or on the POP3S port.
    require_tls: bool = False


SPEC = ProtocolSpec(
    name="pop3",
    summary="POP3 and POP3S on twisted.mail.pop3: USER/PASS, APOP, SASL PLAIN, STLS, over the shared mail store",
    config=POP3Config,
    faults=FaultSurface(
        stages={"connect", "CAPA", "USER", "PASS", "APOP", "AUTH", "STLS", "STAT", "LIST", "UIDL",
                "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"},
        actions={
            "reply": {"message": str, "then": THEN},
            "silence": {},
            "no_terminator": {},
            "wrong_size": {"delta": int},
            "disconnect": {"bytes": int},
        },
        match={"user", "message", "tls"},
        where={"wrong_size": {"STAT", "LIST", "RETR"}},
        notes={"connect": "before the greeting"},
    ),
    replies=ReplyStyle(code_key=None, default_code="-ERR", default_text="[SYS/TEMP] fault injected by the testbed",
                       closing_stages=frozenset({"connect", "QUIT"})),
    listeners=(
        ListenerSpec("listen", "pop3", "pop3", option="pop3", daemon_port=2110),
        ListenerSpec("tls_listen", "pop3s", "pop3s", tls=True, option="pop3s", daemon_port=2995),
    ),
    server="testbed.servers.pop3.server:POP3Server",
    fixture="pop3_server",
    daemon_defaults={"tls": "starttls"},
    check=check_mail_tls,
)
