"""The UDP echo protocol's declaration: the smallest datagram server, the worked example of adding a protocol.

Pure data for the registry; the server itself is ``testbed.servers.echo.server``.
"""

from __future__ import annotations

import attrs

from testbed.faults.rules import FaultSurface
from testbed.registry import EPHEMERAL, ListenerSpec, ProtocolSpec


@attrs.frozen
class EchoConfig:
    """A UDP echo server: off unless a scenario turns it on."""

    enabled: bool = False
    listen: str = EPHEMERAL


SPEC = ProtocolSpec(
    name="echo",
    summary="UDP echo: every datagram is sent back (proves datagram faults end to end)",
    config=EchoConfig,
    faults=FaultSurface(stages={"datagram"}, transport="udp",
                        notes={"datagram": "a datagram arrives (direction up) or its echo leaves (down)"}),
    listeners=(ListenerSpec("listen", "udp", "udp", transport="udp"),),
    server="testbed.servers.echo.server:EchoServer",
)
