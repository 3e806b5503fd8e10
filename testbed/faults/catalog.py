"""What faults exist: each protocol's stages and actions, with their parameter types.

Pure data, imported by scenario validation, so it must never import a server.
A parameter type is a Python type, a tuple of allowed values, or ``object``.
"""

from __future__ import annotations

#: Wire actions work on any TCP server, at ``connect`` or scoped to a stage.
WIRE_ACTIONS: dict[str, dict[str, object]] = {
    "refuse": {},
    "reset": {"bytes": int},
    "close": {"bytes": int},
    "stall": {"bytes": int},
    "delay": {"seconds": float, "jitter": float},
    "throttle": {"bytes_per_second": int},
    "slice": {"size": int, "interval": float},
    "corrupt": {"rate": float},
    "truncate": {"bytes": int},
}

#: Datagram actions, for UDP servers (DNS, and the UDP echo server).
UDP_ACTIONS: dict[str, dict[str, object]] = {
    "drop": {},
    "delay": {"seconds": float, "jitter": float},
    "duplicate": {"copies": int},
    "corrupt": {"rate": float},
    "truncate": {"bytes": int},
}

#: What a wire action parameter defaults to when a rule leaves it out.
WIRE_DEFAULTS: dict[str, object] = {
    "bytes": 0,
    "seconds": 0.0,
    "jitter": 0.0,
    "bytes_per_second": 1024,
    "size": 1,
    "interval": 0.01,
    "rate": 0.01,
    "copies": 1,
}

_THEN = ("none", "close", "reset", "stall")
_SMTP_REPLY = {"code": int, "message": str, "then": _THEN}


class Protocol:
    """A protocol's fault surface: where (stages) and what (actions with parameters)."""

    def __init__(self, stages, actions, transport="tcp", match=(), where=None):
        self.stages = frozenset(stages)
        self.actions = dict(actions)
        self.transport = transport
        #: Attribute names a rule's ``match`` may use (empty: anything).
        self.match = frozenset(match)
        #: Protocol actions that only make sense at some stages: action -> those stages.
        #: Anything not listed applies at every stage.
        self.where = {action: frozenset(stages) for action, stages in (where or {}).items()}

    def all_actions(self) -> dict[str, dict[str, object]]:
        merged = {}
        if self.transport in ("tcp", "both"):
            merged.update(WIRE_ACTIONS)
        if self.transport in ("udp", "both"):
            merged.update(UDP_ACTIONS)
        merged.update(self.actions)
        return merged


PROTOCOLS: dict[str, Protocol] = {
    "http": Protocol(
        stages={"connect", "request"},
        actions={
            "reply": {"status": int, "headers": dict, "body": str, "json": object},
            "malformed": {},
            "bad_chunk": {},
            "short_body": {},
            "empty": {},
        },
        match={"method", "path", "query", "headers", "host", "tls"},
        where={action: {"request"} for action in ("reply", "malformed", "bad_chunk", "short_body", "empty")},
    ),
    "smtp": Protocol(
        stages={"connect", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
                "message", "RSET", "NOOP", "VRFY", "QUIT"},
        actions={"reply": _SMTP_REPLY, "silence": {}},
        match={"mail_from", "rcpt", "user", "mechanism", "helo", "size", "tls"},
    ),
    "pop3": Protocol(
        stages={"connect", "CAPA", "USER", "PASS", "APOP", "AUTH", "STLS", "STAT", "LIST", "UIDL",
                "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"},
        actions={
            "reply": {"message": str, "then": _THEN},
            "silence": {},
            "no_terminator": {},
            "wrong_size": {"delta": int},
            "disconnect": {"bytes": int},
        },
        match={"user", "message", "tls"},
        where={"wrong_size": {"STAT", "LIST", "RETR"}},
    ),
    "imap": Protocol(
        # A UID command is its verb ("FETCH") with the attribute uid = true.
        stages={"connect", "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "LOGIN", "AUTHENTICATE",
                "NAMESPACE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "CHECK", "CLOSE",
                "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY"},
        actions={
            "reply": {"status": ("NO", "BAD", "BYE"), "message": str, "then": _THEN},
            "preauth": {"user": str},
            "silence": {},
            "bye_mid_fetch": {"bytes": int, "message": str},
            "short_literal": {"missing": int},
            "idle_no_ack": {},
            "uidvalidity_change": {},
        },
        match={"user", "mailbox", "message", "tls", "uid", "mechanism"},
        where={"preauth": {"connect"}, "idle_no_ack": {"IDLE"}, "uidvalidity_change": {"SELECT", "EXAMINE"}},
    ),
    # FTP: "connect", every command the server implements, and "data" (asked when a transfer
    # starts on its data connection; wire actions there hit the data connection). reply: instead
    # of the command (421 closes unless "then" says otherwise); silence: no reply at all;
    # wrong_address: PASV/EPSV advertise host/port; short_transfer: RETR/LIST/NLST/MLSD send
    # "bytes" then 226; no_completion: a transfer's 150 and data but never its 226.
    "ftp": Protocol(
        stages={"connect", "data", "USER", "PASS", "AUTH", "PBSZ", "PROT", "FEAT", "OPTS", "SYST",
                "NOOP", "QUIT", "PWD", "CWD", "CDUP", "TYPE", "STRU", "MODE", "PASV", "EPSV", "PORT",
                "EPRT", "LIST", "NLST", "MLSD", "MLST", "RETR", "STOR", "APPE", "REST", "SIZE", "MDTM",
                "DELE", "MKD", "RMD", "RNFR", "RNTO", "ABOR", "ALLO"},
        actions={
            "reply": {"code": int, "message": str, "then": _THEN},
            "silence": {},
            "wrong_address": {"host": str, "port": int},
            "short_transfer": {"bytes": int},
            "no_completion": {},
        },
        match={"user", "path", "tls", "mode", "type", "command"},
        # Mirrors testbed.servers.ftp.APPLIES_TO; "data" is asked as a transfer starts.
        where={"wrong_address": {"PASV", "EPSV"},
               "short_transfer": {"RETR", "LIST", "NLST", "MLSD", "data"},
               "no_completion": {"RETR", "LIST", "NLST", "MLSD", "STOR", "APPE", "data"}},
    ),
    "dns": Protocol(
        # connect: wire actions on the TCP listener ("truncate" there is the wire one, after ``bytes``);
        # datagram: datagram actions on UDP; query: everything below, plus drop/delay/duplicate/corrupt
        # on the encoded reply (either transport) and the other wire actions scoped to a TCP reply.
        stages={"connect", "query", "datagram"},
        actions={
            "reply": {"rcode": ("SERVFAIL", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "NOERROR")},
            "truncate": {"bytes": int},
            "wrong_id": {},
            "wrong_question": {"qname": str},  # not "name": that key names the rule
            "wrong_name": {"owner": str},
            "nodata": {},
            "ttl": {"ttl": int},
            "garbage": {"bytes": int},
            "tcp_length_only": {},
            "tcp_partial": {"bytes": int},
        },
        transport="both",
        match={"name", "type", "transport"},
        where={action: {"query"} for action in ("reply", "wrong_id", "wrong_question", "wrong_name", "nodata",
                                                  "ttl", "garbage", "tcp_length_only", "tcp_partial")},
    ),
    "echo": Protocol(stages={"datagram"}, actions={}, transport="udp"),
}

#: Rule keys that are not action parameters.
RULE_KEYS = ("server", "on", "match", "after", "times", "probability", "connection",
             "direction", "action", "name")


def default_stage(protocol: Protocol) -> str:
    return {"udp": "datagram", "both": "query"}.get(protocol.transport, "connect")
