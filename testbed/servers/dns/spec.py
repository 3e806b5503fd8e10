"""The DNS protocol's declaration: its config (zones, records), fault stages and actions, listener.

Pure data for the registry; the server itself is ``testbed.servers.dns.server``.
"""

from __future__ import annotations

import os
import typing

import attrs

from testbed.faults.rules import FaultSurface
from testbed.registry import EPHEMERAL, ListenerSpec, ProtocolSpec


@attrs.frozen
class DNSConfig:
    enabled: bool = True
    #: A TCP endpoint string; UDP listens on the same interface and port number.
    listen: str = EPHEMERAL
    zone_files: typing.List[str] = attrs.Factory(list)
    records: typing.Dict[str, typing.Dict[str, typing.Any]] = attrs.Factory(dict)
    ttl: int = 300


def _check(config: DNSConfig, check) -> None:
    for i, zone in enumerate(config.zone_files):
        if not os.path.isfile(check.path(zone)):
            check.fail(f"zone_files[{i}]", "an existing zone file", zone)


_QUERY_ONLY = ("reply", "wrong_id", "wrong_question", "wrong_name", "nodata", "ttl", "garbage",
               "tcp_length_only", "tcp_partial")

SPEC = ProtocolSpec(
    name="dns",
    summary="DNS over UDP and TCP on twisted.names: records and zone files, query faults",
    config=DNSConfig,
    faults=FaultSurface(
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
        default="query",
        match={"name", "type", "transport"},
        where={action: {"query"} for action in _QUERY_ONLY},
        notes={"connect": "a TCP connection is accepted (wire actions; truncate there is the wire one)",
               "datagram": "a UDP datagram (datagram actions)",
               "query": "a parsed query, before its reply (reply malformations; drop/delay/duplicate/corrupt "
                        "on the encoded reply; other wire actions scoped to a TCP reply)"},
    ),
    listeners=(ListenerSpec("listen", "dns", "dns", option="dns", daemon_port=1053, transport="udp+tcp"),),
    server="testbed.servers.dns.server:DNSServer",
    fixture="dns_server",
    check=_check,
    daemon_defaults={"records": {
        "www.example.test": {"A": "127.0.0.1", "AAAA": "::1"},
        "mail.example.test": {"A": "127.0.0.1"},
        "example.test": {"MX": "10 mail.example.test", "TXT": "v=spf1 -all"},
    }},
)
