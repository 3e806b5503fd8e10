"""The echo protocol's declaration: the smallest server, the worked example of adding a protocol.

Pure data for the registry; the server itself is ``testbed.servers.echo.server``.
"""

from __future__ import annotations

import attrs

from testbed.faults.rules import THEN, FaultSurface, ReplyStyle
from testbed.registry import EPHEMERAL, ListenerSpec, ProtocolSpec


@attrs.frozen
class EchoConfig:
    """An echo server over TCP (lines) and UDP (datagrams) on one port number: off unless turned on."""

    enabled: bool = False
    listen: str = EPHEMERAL


SPEC = ProtocolSpec(
    name="echo",
    summary="Echo over TCP (each line back) and UDP (each datagram back), on one port number",
    config=EchoConfig,
    faults=FaultSurface(
        stages={"connect", "line", "datagram"},
        actions={"reply": {"message": str, "then": THEN}, "silence": {}},
        transport="both",
        default="datagram",
        match={"text", "direction"},
        where={"reply": {"line"}, "silence": {"line"}},
        notes={"connect": "a TCP connection is accepted", "line": "a TCP line arrives, before its echo",
               "datagram": "a datagram arrives (direction up) or its echo leaves (down)"},
    ),
    replies=ReplyStyle(code_key=None, default_text="injected fault"),
    listeners=(ListenerSpec("listen", "echo", "echo", transport="udp+tcp"),),
    server="testbed.servers.echo.server:EchoServer",
)
