"""Listening on UDP from an endpoint string: Twisted has no UDP endpoints, so read the TCP form.

``tcp:PORT:interface=HOST`` gives the port and interface, as twisted.names' tap pairs UDP with TCP;
``listen_tcp_and_udp`` binds both on one port number.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError

from testbed.servers.base import Listener, Server


def udp_address(endpoint: str) -> tuple[str, int]:
    """(interface, port) from a TCP endpoint string."""
    parsed = serverFromString(None, endpoint)
    return getattr(parsed, "_interface", "127.0.0.1") or "0.0.0.0", getattr(parsed, "_port", 0)


#: Bytes of datagrams a UDP port reads per reactor event (Twisted's ``Port.maxThroughput``, 256 KiB by default).
#: 256 KiB is thousands of DNS queries in one go: under a query flood every TCP client waited for each batch,
#: and HTTP fell to 80 requests a second beside dnsperf (``bench/soak.py``). 4 KiB is a hundred queries or so.
UDP_READ_BUDGET = 4096


def listen_udp(server: Server, endpoint: str, protocol, label: str, port: int | None = None) -> Listener:
    """Listen on UDP at the endpoint's interface and port (or ``port`` when given)."""
    interface, number = udp_address(endpoint)
    try:
        udp_port = server.context.reactor.listenUDP(number if port is None else port, protocol, interface=interface)
    except CannotListenError as e:
        raise server.listen_error(endpoint, e) from None
    udp_port.maxThroughput = UDP_READ_BUDGET
    listener = Listener(label, udp_port, False, "udp")
    server.listeners.append(listener)
    return listener


@defer.inlineCallbacks
def listen_tcp_and_udp(server: Server, endpoint: str, tcp_factory, udp_protocol, name: str):
    """TCP on ``endpoint`` and UDP on the same interface and port number (labels NAME/tcp and NAME/udp).

    With port 0 the TCP port is chosen first; when some UDP socket already
    holds that number, both are tried again on another (a few times).
    """
    _, wanted = udp_address(endpoint)
    attempts = 1 if wanted else 8
    for attempt in range(attempts):
        listener = yield server.listen(endpoint, tcp_factory, f"{name}/tcp")
        try:
            listen_udp(server, endpoint, udp_protocol, f"{name}/udp", port=listener.number)
        except CannotListenError:
            server.listeners.remove(listener)
            yield listener.port.stopListening()
            if attempt == attempts - 1:
                raise
        else:
            return
