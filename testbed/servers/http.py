"""The HTTP and HTTPS server, on ``twisted.web``: canned routes, a jailed static directory, request faults.

Every request is recorded (``server.requests``) and journaled; at the
``request`` stage the fault engine may answer with an error reply, a broken
response (malformed status line, bad chunk, short body, nothing at all) or a
wire action scoped to the response.
"""

from __future__ import annotations

import fnmatch
import json as jsonlib
import os
import warnings
from typing import Any, Mapping
from urllib.parse import parse_qs

import attrs
from twisted.internet import defer
from twisted.web import resource, server

with warnings.catch_warnings():
    # twisted.web.static builds deprecated error pages at import; we never serve them.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"twisted\.web\.resource\._Unsafe")
    from twisted.web import static

from testbed.config import HTTPConfig, Route
from testbed.faults.wire import NO_FAULTS
from testbed.journal import COMMAND, ERROR, REPLY, STORED
from testbed.servers.base import Server


@attrs.frozen
class HTTPRequest:
    """A request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    tls: bool
    conn: int
    uri: str

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class RouteState:
    """A route and how many times it answered (for ``responses`` sequences)."""

    def __init__(self, route: Route):
        self.route = route
        self.hits = 0

    def matches(self, request: HTTPRequest) -> bool:
        route = self.route
        if route.method != "*" and route.method.upper() != request.method:
            return False
        if not fnmatch.fnmatchcase(request.path, route.path):
            return False
        for key, pattern in route.query.items():
            if not any(fnmatch.fnmatchcase(v, pattern) for v in request.query.get(key, [])):
                return False
        for name, pattern in route.match_headers.items():
            value = request.headers.get(name.lower())
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        if route.body_contains and route.body_contains.encode() not in request.body:
            return False
        return True

    def next_response(self) -> Mapping[str, Any]:
        route = self.route
        self.hits += 1
        if route.responses:
            return route.responses[min(self.hits, len(route.responses)) - 1]
        return {"status": route.status, "headers": route.headers, "body": route.body, "json": route.json}


def _body_of(response: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    if response.get("json") is not None:
        headers.setdefault("Content-Type", "application/json")
        return jsonlib.dumps(response["json"]).encode("utf-8"), headers
    body = response.get("body") or b""
    return (body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)), headers


class TestbedResource(resource.Resource):
    """The one resource: records the request, asks about faults, then answers from routes or the static root."""

    isLeaf = True

    def __init__(self, http: "HTTPServer"):
        super().__init__()
        self.http = http

    def render(self, request: server.Request):
        http = self.http
        transport = request.channel.transport
        faults = getattr(transport, "faults", NO_FAULTS)
        conn = faults.conn
        request.content.seek(0)
        body = request.content.read()
        raw_path, _, raw_query = request.uri.partition(b"?")
        path = request.path.decode("utf-8", "replace")
        headers = {k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        record = HTTPRequest(
            method=request.method.decode("ascii", "replace"),
            path=path,
            query=parse_qs(raw_query.decode("utf-8", "replace"), keep_blank_values=True),
            headers=headers,
            body=body,
            tls=request.isSecure(),
            conn=conn,
            uri=request.uri.decode("utf-8", "replace"),
        )
        http.requests.append(record)
        journal = http.bed.journal
        journal.record(COMMAND, "http", conn, command="request", method=record.method, path=path,
                       query=raw_query.decode("utf-8", "replace"), size=len(body))
        fault = faults.at("request", method=record.method, path=path, query=record.query, headers=headers,
                          host=headers.get("host", ""), tls=record.tls)
        if fault is not None and not fault.wire:
            return self.broken(request, fault, conn)
        for state in http.routes():
            if state.matches(record):
                response = state.next_response()
                body_bytes, response_headers = _body_of(response)
                return self.respond(request, int(response.get("status", 200)), response_headers, body_bytes, conn)
        if http.static_root is not None:
            return self.static(request, conn)
        return self.respond(request, 404, {"Content-Type": "text/plain"}, b"no route\n", conn)

    def respond(self, request, status: int, headers: Mapping[str, str], body: bytes, conn: int) -> bytes:
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        self.http.bed.journal.record(REPLY, "http", conn, status=status, size=len(body))
        return body

    # -- protocol faults ----------------------------------------------------------

    def broken(self, request, fault, conn: int):
        action = fault.action
        journal = self.http.bed.journal
        if action == "reply":
            response = {"status": fault.param("status", 500), "headers": fault.param("headers", {}),
                        "body": fault.param("body", ""), "json": fault.param("json")}
            body, headers = _body_of(response)
            return self.respond(request, int(response["status"]), headers, body, conn)
        transport = request.channel.transport
        if action == "malformed":
            transport.write(b"HTTP/1.1 OK-ISH\r\nContent-Length: 0\r\n\r\n")
        elif action == "bad_chunk":
            transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                            b"5\r\nhello\r\nZZ; not-a-size\r\nbroken\r\n")
        elif action == "short_body":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                            b"only 22 of 100 bytes\r\n")
        journal.record(REPLY, "http", conn, status=None, broken=action)
        transport.loseConnection()
        return server.NOT_DONE_YET

    # -- static files -----------------------------------------------------------------

    def static(self, request, conn: int):
        http = self.http
        segments = request.postpath
        reason = None
        names = []
        for i, segment in enumerate(segments):
            if segment == b"" and i == len(segments) - 1:
                break
            if segment in (b"", b".", b".."):
                reason = f"path segment {segment!r}"
            elif b"/" in segment or b"\\" in segment or b"\x00" in segment:
                reason = f"separator or NUL inside segment {segment!r}"
            if reason:
                break
            names.append(segment.decode("utf-8", "surrogateescape"))
        target = os.path.join(http.static_root, *names)
        if reason is None:
            real = os.path.realpath(target)
            if real != http.static_real and not real.startswith(http.static_real + os.sep):
                reason = "resolves outside the static root"
            elif os.path.isdir(real):
                target = os.path.join(real, "index.html")
                real = os.path.realpath(target)
                if not real.startswith(http.static_real + os.sep):
                    reason = "index resolves outside the static root"
        if reason is not None:
            http.bed.journal.record(ERROR, "http", conn, error="path escapes root", path=request.path.decode("utf-8", "replace"),
                                    reason=reason)
            return self.respond(request, 404, {"Content-Type": "text/plain"}, b"not found\n", conn)
        if not os.path.isfile(target):
            return self.respond(request, 404, {"Content-Type": "text/plain"}, b"not found\n", conn)
        http.bed.journal.record(REPLY, "http", conn, status=200, file=os.path.relpath(target, http.static_root))
        return static.File(target).render(request)


class QuietSite(server.Site):
    """A Site without the per-request access log line (it cost a third of the throughput)."""

    noisy = False

    def log(self, request):
        pass


class HTTPServer(Server):
    """``http_server``: ``url``, ``https_url``, ``requests``, ``route(...)``, ``wait_for(...)``."""

    scheme = "http"
    tls_scheme = "https"
    alpn = (b"http/1.1",)

    def __init__(self, bed, name: str, config: HTTPConfig):
        super().__init__(bed, name, config)
        self.requests: list[HTTPRequest] = []
        self._scenario_routes = [RouteState(r) for r in config.routes]
        self._runtime_routes: list[RouteState] = []
        self.static_root = bed.scenario.path(config.static) if config.static else None
        self.static_real = os.path.realpath(self.static_root) if self.static_root else None

    @defer.inlineCallbacks
    def start(self):
        site = QuietSite(TestbedResource(self), reactor=self.bed.reactor)
        config = self.config
        if config.listen:
            yield self.listen(config.listen, site, "http", tls=config.tls == "implicit")
        if config.tls_listen:
            yield self.listen(config.tls_listen, site, "https", tls=True)

    def reset(self) -> None:
        super().reset()
        self.requests = []
        self._runtime_routes = []
        for state in self._scenario_routes:
            state.hits = 0

    def routes(self) -> list[RouteState]:
        """Runtime routes (newest first), then the scenario's in order."""
        return self._runtime_routes[::-1] + self._scenario_routes

    # -- the handle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        listener = self._listener(False) or self.listeners[0]
        return listener.url()

    @property
    def https_url(self) -> str | None:
        listener = self._listener(True)
        return listener.url() if listener else None

    def route(self, path: str, method: str = "GET", status: int = 200, headers: Mapping[str, str] | None = None,
              body: bytes | str = b"", json: Any = None, responses: list[Mapping[str, Any]] | None = None,
              query: Mapping[str, str] | None = None, match_headers: Mapping[str, str] | None = None,
              body_contains: str = "") -> Route:
        """Answer ``method path`` (a glob) with this response from now on (until the next test)."""
        if isinstance(body, bytes):
            body = body.decode("utf-8", "surrogateescape")
        route = Route(path=path, method=method, status=status, headers=dict(headers or {}), body=body, json=json,
                      responses=list(responses or []), query=dict(query or {}),
                      match_headers=dict(match_headers or {}), body_contains=body_contains)
        self.bed.call(self._add_route, route)
        return route

    def _add_route(self, route: Route) -> None:
        self._runtime_routes.append(RouteState(route))
        self.bed.journal.record(STORED, "http", None, route=f"{route.method} {route.path}")

    def wait_for(self, predicate_or_count: Any = 1, timeout: float = 5.0):
        """The requests once ``count`` have arrived, or those matching ``predicate``."""
        return self.wait_for_items(lambda: list(self.requests), predicate_or_count, timeout, "request")


SERVER = HTTPServer
