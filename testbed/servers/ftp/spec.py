"""The FTP protocol's declaration: its config, fault stages and actions, reply wording, listener.

Pure data for the registry; the server itself is ``testbed.servers.ftp.server``.
"""

from __future__ import annotations

import os
import typing

import attrs

from testbed.faults.rules import THEN, TLS_ABORT, FaultSurface, ReplyStyle
from testbed.registry import CERTIFICATE_KINDS, EPHEMERAL, ListenerSpec, ProtocolSpec
from testbed.schema import choices
from testbed.servers.smtp.spec import check_mail_tls

#: Every command the server implements; each is also a fault stage (with ``connect`` and ``data``).
COMMANDS = frozenset({
    "USER", "PASS", "AUTH", "PBSZ", "PROT", "FEAT", "OPTS", "SYST", "NOOP", "QUIT",
    "PWD", "CWD", "CDUP", "TYPE", "STRU", "MODE", "PASV", "EPSV", "PORT", "EPRT",
    "LIST", "NLST", "MLSD", "MLST", "RETR", "STOR", "APPE", "REST", "SIZE", "MDTM",
    "DELE", "MKD", "RMD", "RNFR", "RNTO", "ABOR", "ALLO",
})
DOWNLOADS = frozenset({"RETR", "LIST", "NLST", "MLSD"})
TRANSFERS = DOWNLOADS | {"STOR", "APPE"}
#: Where each protocol fault action other than ``reply`` and ``silence`` applies
#: (``data`` is asked as a transfer starts on its data connection).
APPLIES_TO = {
    "wrong_address": frozenset({"PASV", "EPSV"}),
    "short_transfer": DOWNLOADS,
    "no_completion": TRANSFERS,
}


@attrs.frozen
class FTPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = choices("starttls", "none")
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = choices(*CERTIFICATE_KINDS)
    #: The TLS versions served, a contiguous range of TLS_VERSIONS (empty: TLS 1.2 and 1.3).
    tls_versions: typing.List[str] = attrs.Factory(list)
    #: A real directory to serve; empty for an in-memory tree built from ``files``.
    root: str = ""
    files: typing.Dict[str, str] = attrs.Factory(dict)
    anonymous: bool = True
    require_tls: bool = False
    #: "LOW-HIGH" for passive data ports; empty for ephemeral ports.
    passive_ports: str = ""


def _check(config: FTPConfig, check) -> None:
    check_mail_tls(config, check)
    if config.passive_ports:
        try:
            low, high = (int(p) for p in config.passive_ports.split("-"))
            valid = 0 < low <= high < 65536
        except ValueError:
            valid = False
        if not valid:
            check.fail("passive_ports", "'LOW-HIGH' with 0 < LOW <= HIGH < 65536", config.passive_ports)
    if config.root and not os.path.isdir(check.path(config.root)):
        check.fail("root", "an existing directory", config.root)


#: The text of a ``reply`` fault that gives no ``message``.
FAULT_TEXTS = {
    421: "Service not available, closing control connection.",
    425: "Can't open data connection.",
    426: "Connection closed; transfer aborted.",
    450: "Requested file action not taken. File unavailable.",
    451: "Requested action aborted: local error in processing.",
    452: "Requested action not taken. Insufficient storage space in system.",
    500: "Syntax error, command unrecognized.",
    501: "Syntax error in parameters or arguments.",
    502: "Command not implemented.",
    503: "Bad sequence of commands.",
    504: "Command not implemented for that parameter.",
    521: "Data connection cannot be opened with this PROT setting.",
    522: "Network protocol not supported.",
    530: "Not logged in.",
    534: "Request denied for policy reasons.",
    536: "Requested PROT level not supported by mechanism.",
    550: "Requested action not taken. File unavailable.",
    552: "Requested file action aborted. Exceeded storage allocation.",
    553: "Requested action not taken. File name not allowed.",
}

SPEC = ProtocolSpec(
    name="ftp",
    summary="FTP with explicit FTPS on twisted.protocols.ftp: a jailed or in-memory tree, faults at every command",
    config=FTPConfig,
    faults=FaultSurface(
        stages={"connect", "data"} | COMMANDS,
        actions={
            "reply": {"code": int, "message": str, "then": THEN},
            "silence": {},
            "wrong_address": {"host": str, "port": int},
            "short_transfer": {"bytes": int},
            "no_completion": {},
            "strip_starttls": {},
            "tls_abort": TLS_ABORT,
        },
        match={"user", "path", "tls", "mode", "type", "command"},
        where={"wrong_address": APPLIES_TO["wrong_address"], "strip_starttls": {"connect", "FEAT"},
               "tls_abort": {"connect", "AUTH"},
               "short_transfer": APPLIES_TO["short_transfer"] | {"data"},
               "no_completion": APPLIES_TO["no_completion"] | {"data"}},
        notes={"connect": "before the greeting",
               "data": "a transfer starts on its data connection (wire actions there hit the data connection)"},
    ),
    replies=ReplyStyle(code_key="code", default_code=550, stage_codes={"connect": 421}, texts=FAULT_TEXTS,
                       closing_codes=frozenset({421})),
    listeners=(ListenerSpec("listen", "ftp", "ftp", option="ftp", daemon_port=2121),),
    server="testbed.servers.ftp.server:FTPServer",
    fixture="ftp_server",
    check=_check,
    daemon_defaults={"tls": "starttls", "anonymous": True,
                     "files": {"pub/readme.txt": "Served by twisted-testbed's in-memory FTP tree.\n", "incoming/": ""}},
)
