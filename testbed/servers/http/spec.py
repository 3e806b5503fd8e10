"""The HTTP protocol's declaration: its config (routes, static root), fault stages and actions, listeners.

Pure data for the registry; the server itself is ``testbed.servers.http.server``.
"""

from __future__ import annotations

import os
import typing

import attrs

from testbed.faults.rules import TLS_ABORT, FaultSurface
from testbed.registry import CERTIFICATE_KINDS, EPHEMERAL, ListenerSpec, ProtocolSpec
from testbed.schema import choices


@attrs.frozen
class Route:
    """A canned HTTP response: the first route whose method, path glob and matches fit answers."""

    path: str
    method: str = "GET"
    status: int = 200
    headers: typing.Dict[str, str] = attrs.Factory(dict)
    body: str = ""
    json: typing.Any = None
    query: typing.Dict[str, str] = attrs.Factory(dict)
    match_headers: typing.Dict[str, str] = attrs.Factory(dict)
    body_contains: str = ""
    #: A sequence of responses served in turn, each a table with status,
    #: headers, body or json...
    responses: typing.List[typing.Dict[str, typing.Any]] = attrs.Factory(list)
    #: ...and what follows the last: "repeat" it, or treat further requests as
    #: "unexpected" (a near-miss 404, and ``verify()`` names them).
    exhausted: str = choices("repeat", "unexpected")


@attrs.frozen
class HTTPConfig:
    enabled: bool = True
    listen: str = EPHEMERAL
    tls: str = choices("none", "implicit")
    #: A second, implicit-TLS listener (HTTPS); empty for none.
    tls_listen: str = EPHEMERAL
    #: The chain served under TLS: a valid one, or a deliberately bad one.
    certificate: str = choices(*CERTIFICATE_KINDS)
    #: The TLS versions served, a contiguous range of TLS_VERSIONS (empty: TLS 1.2 and 1.3).
    tls_versions: typing.List[str] = attrs.Factory(list)
    static: str = ""
    routes: typing.List[Route] = attrs.Factory(list)


def _check(config: HTTPConfig, check) -> None:
    for i, route in enumerate(config.routes):
        if route.json is not None and route.body:
            check.fail(f"routes[{i}]", "either body or json, not both")
        if route.exhausted != "repeat" and not route.responses:
            check.fail(f"routes[{i}].exhausted", "a route with responses (a single response never runs out)",
                       route.exhausted)
    if config.static and not os.path.isdir(check.path(config.static)):
        check.fail("static", "an existing directory", config.static)


_REQUEST_ACTIONS = ("reply", "malformed", "bad_chunk", "short_body", "empty")

SPEC = ProtocolSpec(
    name="http",
    summary="HTTP and HTTPS on twisted.web: canned routes, a jailed static directory, request faults",
    config=HTTPConfig,
    faults=FaultSurface(
        stages={"connect", "request"},
        actions={
            "reply": {"status": int, "headers": dict, "body": str, "json": object},
            "malformed": {},
            "bad_chunk": {},
            "short_body": {"bytes": int},
            "empty": {},
            "tls_abort": TLS_ABORT,
        },
        match={"method", "path", "query", "headers", "host", "tls"},
        where={**{action: {"request"} for action in _REQUEST_ACTIONS}, "tls_abort": {"connect"}},
        notes={"connect": "a connection is accepted", "request": "a request's head and body have arrived"},
    ),
    listeners=(
        ListenerSpec("listen", "http", "http", option="http", daemon_port=8080),
        ListenerSpec("tls_listen", "https", "https", tls=True, option="https", daemon_port=8443),
    ),
    server="testbed.servers.http.server:HTTPServer",
    fixture="http_server",
    check=_check,
)
