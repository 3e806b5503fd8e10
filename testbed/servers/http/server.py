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
import re
import warnings
from typing import Any, Mapping, NamedTuple
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.web import resource, server

with warnings.catch_warnings():
    # twisted.web.static builds deprecated error pages at import; we never serve them.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"twisted\.web\.resource\._Unsafe")
    from twisted.web import static

from testbed.servers.http.spec import Route
from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.journal import COMMAND, ERROR, REPLY, STORED, bounded
from testbed.servers.base import Server


class HTTPRequest(NamedTuple):
    """A request as the server received it (built when a test reads ``requests``)."""

    method: str
    path: str
    raw_query: str
    header_items: tuple
    body: bytes
    tls: bool
    conn: int
    uri: str

    @property
    def headers(self) -> dict[str, str]:
        """Header names in lower case; repeated headers joined with ", "."""
        return dict(self.header_items)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True) if self.raw_query else {}

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: method, path, query, headers, the body as text (base64 when not UTF-8), TLS, connection."""
        from testbed.journal import jsonable

        return {"method": self.method, "path": self.path, "query": self.raw_query, "uri": self.uri,
                "headers": [list(item) for item in self.header_items], "body": jsonable(self.body),
                "size": len(self.body), "tls": self.tls, "conn": self.conn}

    def __repr__(self) -> str:
        return f"HTTPRequest(method={self.method!r}, path={self.path!r}, query={self.raw_query!r}, conn={self.conn})"

    @classmethod
    def decode(cls, raw: tuple) -> "HTTPRequest":
        """From the raw tuple the server keeps: (method, path, query, headers, body, tls, conn, uri) in bytes."""
        method, path, query, headers, body, tls, conn, uri = raw
        return cls(method.decode("ascii", "replace"), path.decode("utf-8", "replace"), query.decode("utf-8", "replace"),
                   tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers),
                   body, tls, conn, uri.decode("utf-8", "replace"))


class RawRequest:
    """The decoded view route matching and faults need, decoding each part once and only if asked."""

    __slots__ = ("raw", "method", "path", "_headers", "_query")

    def __init__(self, raw: tuple):
        self.raw = raw
        self.method = _METHODS.get(raw[0]) or raw[0].decode("ascii", "replace")
        self.path = raw[1].decode("utf-8", "replace")
        self._headers = self._query = None

    @property
    def raw_query(self) -> str:
        return self.raw[2].decode("utf-8", "replace") if self.raw[2] else ""

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.raw_query, keep_blank_values=True) if self.raw[2] else {}
        return self._query

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw[3]}
        return self._headers

    @property
    def body(self) -> bytes:
        return self.raw[4]

    @property
    def tls(self) -> bool:
        return self.raw[5]


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


def _matcher(pattern: str):
    """A test for one glob: plain equality when it has no wildcard, else a regex compiled once."""
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).match


class RouteState:
    """A route, its compiled matchers and its canned response, and how many times it answered."""

    def __init__(self, route: Route):
        self.route = route
        self.hits = 0
        self.method = route.method.upper()
        self.path = _matcher(route.path)
        self.query = [(key, _matcher(pattern)) for key, pattern in route.query.items()]
        self.headers = [(name.lower(), _matcher(pattern)) for name, pattern in route.match_headers.items()]
        self.body_contains = route.body_contains.encode() if route.body_contains else b""
        self.fixed = None if route.responses else _response_of(
            {"status": route.status, "headers": route.headers, "body": route.body, "json": route.json})

    def matches(self, request: HTTPRequest) -> bool:
        if self.method != "*" and self.method != request.method:
            return False
        if not self.path(request.path):
            return False
        if self.query:
            query = request.query
            if not all(any(match(v) for v in query.get(key, [])) for key, match in self.query):
                return False
        if self.headers:
            headers = request.headers
            for name, match in self.headers:
                value = headers.get(name)
                if value is None or not match(value):
                    return False
        if self.body_contains and self.body_contains not in request.body:
            return False
        return True

    def next_response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.hits += 1
        if self.fixed is not None:
            return self.fixed
        responses = self.route.responses
        return _response_of(responses[min(self.hits, len(responses)) - 1])


def _response_of(response: Mapping[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, encoded headers, body bytes) from a route or fault response table."""
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    if response.get("json") is not None:
        headers.setdefault("Content-Type", "application/json")
        body = jsonlib.dumps(response["json"]).encode("utf-8")
    else:
        body = response.get("body") or b""
        body = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return int(response.get("status", 200)), encoded, body


NO_ROUTE = (404, [(b"Content-Type", b"text/plain")], b"no route\n")
NOT_FOUND = (404, [(b"Content-Type", b"text/plain")], b"not found\n")


class TestbedResource(resource.Resource):
    """The one resource: records the request, asks about faults, then answers from routes or the static root."""

    isLeaf = True

    def __init__(self, http: "HTTPServer"):
        super().__init__()
        self.http = http

    def render(self, request: server.Request):
        http = self.http
        seam = request.channel.seam
        transport = request.channel.transport
        conn = seam.conn
        content = request.content
        content.seek(0)
        body = content.read()
        uri = request.uri
        raw_query = uri.partition(b"?")[2]
        method = request.method
        path = request.path
        # Stored raw, as an exact tuple of bytes: decoding waits until a test
        # reads ``requests``, and the garbage collector stops tracking exact
        # tuples (not NamedTuples): a few hundred thousand tracked records made
        # full collections pause the server for 20-110 ms.
        raw = (method, path, raw_query,
               tuple([(k, b", ".join(v)) for k, v in request.requestHeaders.getAllRawHeaders()]),
               body, getattr(transport.factory, "tls", False), conn, uri)
        requests = http._requests
        requests.append(raw)
        if http.limit and len(requests) > http.limit:
            bounded(requests, http.limit)
        record = RawRequest(raw)
        seam.record(COMMAND, command="request", method=record.method, path=record.path, query=record.raw_query,
                    size=len(body))
        if seam.wants("request"):
            headers = record.headers
            fault = seam.at("request", method=record.method, path=record.path, query=record.query,
                            headers=headers, host=headers.get("host", ""), tls=record.tls)
            if fault is not None and not fault.wire:
                return self.broken(request, fault, conn)
        for state in http._runtime_routes[::-1] if http._runtime_routes else ():
            if state.matches(record):
                return self.respond(request, *state.next_response(), conn)
        for state in http._scenario_routes:
            if state.matches(record):
                return self.respond(request, *state.next_response(), conn)
        if http.static_root is not None:
            return self.static(request, conn)
        return self.respond(request, *NO_ROUTE, conn)

    def respond(self, request, status: int, headers: list[tuple[bytes, bytes]], body: bytes, conn: int) -> bytes:
        request.setResponseCode(status)
        set_header = request.responseHeaders.setRawHeaders
        for name, value in headers:
            set_header(name, [value])
        self.http.context.journal.record(REPLY, self.http.name, conn, status=status, size=len(body))
        return body

    # -- protocol faults ----------------------------------------------------------

    def broken(self, request, fault, conn: int):
        action = fault.action
        journal = self.http.context.journal
        if action == "reply":
            response = {"status": fault.param("status", 500), "headers": fault.param("headers", {}),
                        "body": fault.param("body", ""), "json": fault.param("json")}
            return self.respond(request, *_response_of(response), conn)
        transport = request.channel.transport
        if action == "malformed":
            transport.write(b"HTTP/1.1 OK-ISH\r\nContent-Length: 0\r\n\r\n")
        elif action == "bad_chunk":
            transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                            b"5\r\nhello\r\nZZ; not-a-size\r\nbroken\r\n")
        elif action == "short_body":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                            b"only 22 of 100 bytes\r\n")
        journal.record(REPLY, self.http.name, conn, status=None, broken=action)
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
            http.context.journal.record(ERROR, http.name, conn, error="path escapes root", path=request.path.decode("utf-8", "replace"),
                                    reason=reason)
            return self.respond(request, *NOT_FOUND, conn)
        if not os.path.isfile(target):
            return self.respond(request, *NOT_FOUND, conn)
        http.context.journal.record(REPLY, http.name, conn, status=200, file=os.path.relpath(target, http.static_root))
        return static.File(target).render(request)


class QuietSite(SeamFactory, server.Site):
    """A Site without the per-request access log line (it cost a third of the throughput)."""

    noisy = False

    def buildProtocol(self, addr, seam=NO_SEAM):
        protocol = server.Site.buildProtocol(self, addr)
        # Site hands out a _GenericHTTPChannelProtocol around the HTTPChannel that requests see.
        getattr(protocol, "_channel", protocol).seam = seam
        return protocol

    def log(self, request):
        pass


class HTTPServer(Server):
    """``http_server``: ``url``, ``https_url``, ``requests``, ``route(...)``, ``wait_for(...)``."""

    scheme = "http"
    tls_scheme = "https"
    alpn = (b"http/1.1",)

    def __init__(self, context):
        super().__init__(context)
        self._requests: list[tuple] = []
        config = self.config
        self._scenario_routes = [RouteState(r) for r in config.routes]
        self._runtime_routes: list[RouteState] = []
        self.static_root = self.context.path(config.static) if config.static else None
        self.static_real = os.path.realpath(self.static_root) if self.static_root else None
        self.limit = context.journal.max_events

    @defer.inlineCallbacks
    def start(self):
        site = QuietSite(TestbedResource(self), reactor=self.context.reactor)
        config = self.config
        if config.listen:
            yield self.listen(config.listen, site, "http", tls=config.tls == "implicit")
        if config.tls_listen:
            yield self.listen(config.tls_listen, site, "https", tls=True)

    def reset(self) -> None:
        super().reset()
        self._requests = []
        self._runtime_routes = []
        for state in self._scenario_routes:
            state.hits = 0

    # -- the handle ------------------------------------------------------------------

    @property
    def requests(self) -> list[HTTPRequest]:
        """Every request since the test began, oldest first."""
        return [HTTPRequest.decode(r) for r in list(self._requests)]

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
        self.context.call(self._add_route, route)
        return route

    def _add_route(self, route: Route) -> None:
        self._runtime_routes.append(RouteState(route))
        self.context.journal.record(STORED, self.name, None, route=f"{route.method} {route.path}")

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the requests (``HTTPRequest``)."""
        return (lambda: self.requests), "request"
