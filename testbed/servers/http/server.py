"""The HTTP and HTTPS server, on ``twisted.web``: canned routes, a jailed static directory, request faults.

Every request is recorded (``server.requests``) and journaled; at the
``request`` stage the fault engine may answer with an error reply, a broken
response (malformed status line, bad chunk, short body, nothing at all) or a
wire action scoped to the response.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json as jsonlib
import os
import re
import time
import warnings
from typing import Any, Mapping, NamedTuple
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.python import failure
from twisted.web import http, resource, server

with warnings.catch_warnings():
    # twisted.web.static builds deprecated error pages at import; we never serve them.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"twisted\.web\.resource\._Unsafe")
    from twisted.web import static

from testbed.servers.http.routing import ANY_JSON, Expectation, RouteState, Routing, describe_request
from testbed.servers.http.routing import response_of as _response_of
from testbed.servers.http.spec import Route
from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.journal import COMMAND, ERROR, STORED, UNEXPECTED, internal
from testbed.servers.base import Server


#: Request bodies up to this size are kept in memory; a larger one is spooled to a temporary file.
BODY_IN_MEMORY = 1024 * 1024


class SpooledBody:
    """A request body above ``BODY_IN_MEMORY``: its length, its sha256 and its bytes in a temporary file.

    The file is the one twisted.web spooled the upload to; it is closed (and
    so gone) on reset or when the request drops out of ``requests``.
    """

    __slots__ = ("file", "size", "_sha256")

    def __init__(self, file, size: int):
        self.file = file
        self.size = size
        self._sha256: str | None = None

    def read(self) -> bytes:
        # pread: no shared file position, so a test thread and the reactor can both read it.
        return os.pread(self.file.fileno(), self.size, 0)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            fd = self.file.fileno()
            for offset in range(0, self.size, 1 << 20):
                digest.update(os.pread(fd, 1 << 20, offset))
            self._sha256 = digest.hexdigest()
        return self._sha256

    def close(self) -> None:
        self.file.close()


def _body_bytes(content) -> bytes:
    return content.read() if isinstance(content, SpooledBody) else content


class HTTPRequest(NamedTuple):
    """A request as the server received it (built when a test reads ``requests``)."""

    method: str
    path: str
    raw_query: str
    header_items: tuple
    #: The body as bytes, or a ``SpooledBody`` above ``BODY_IN_MEMORY``: read ``body``, ``size``, ``sha256``.
    content: "bytes | SpooledBody"
    tls: bool
    conn: int
    uri: str

    @property
    def body(self) -> bytes:
        """The body (read back from its temporary file when it was spooled)."""
        return _body_bytes(self.content)

    @property
    def size(self) -> int:
        content = self.content
        return content.size if isinstance(content, SpooledBody) else len(content)

    @property
    def sha256(self) -> str:
        content = self.content
        return content.sha256 if isinstance(content, SpooledBody) else hashlib.sha256(content).hexdigest()

    @property
    def spooled(self) -> bool:
        """Whether the body was above ``BODY_IN_MEMORY`` and lives in a temporary file."""
        return isinstance(self.content, SpooledBody)

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

        spooled = self.spooled
        return {"method": self.method, "path": self.path, "query": self.raw_query, "uri": self.uri,
                "headers": [list(item) for item in self.header_items],
                "body": None if spooled else jsonable(self.content), "size": self.size, "sha256": self.sha256,
                "spooled": spooled, "tls": self.tls, "conn": self.conn}

    def __repr__(self) -> str:
        return f"HTTPRequest(method={self.method!r}, path={self.path!r}, query={self.raw_query!r}, conn={self.conn})"

    @classmethod
    def decode(cls, raw: tuple) -> "HTTPRequest":
        """From the raw tuple the server keeps (``RAW_FIELDS``, then the headers flattened), in bytes."""
        method, path, query, body, tls, conn, uri = raw[:_HEADERS_AT]
        return cls(method.decode("ascii", "replace"), path.decode("utf-8", "replace"), query.decode("utf-8", "replace"),
                   tuple(_decoded_headers(raw)),
                   body, tls, conn, uri.decode("utf-8", "replace"))


#: What the server keeps of a request, as one flat tuple: these fields, then name, value, name, value... of
#: its headers (repeated ones joined with ", "). One exact tuple of bytes and numbers: the garbage collector
#: stops tracking it at its first look, and one tracked allocation a request (not one per header) is what
#: sets how often the young generation is collected under load.
RAW_FIELDS = ("method", "path", "query", "body", "tls", "conn", "uri")
_HEADERS_AT = len(RAW_FIELDS)
_BODY, _TLS = RAW_FIELDS.index("body"), RAW_FIELDS.index("tls")


def _decoded_headers(raw: tuple):
    """(name in lower case, value) text pairs of a raw request's flattened headers."""
    headers = iter(raw[_HEADERS_AT:])
    return ((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in zip(headers, headers))


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
            self._headers = dict(_decoded_headers(self.raw))
        return self._headers

    @property
    def body(self) -> bytes:
        return _body_bytes(self.raw[_BODY])

    @property
    def tls(self) -> bool:
        return self.raw[_TLS]


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


NOT_FOUND = (404, [(b"Content-Type", b"text/plain")], b"not found\n")
METHOD_NOT_ALLOWED = (405, [(b"Content-Type", b"text/plain")], b"method not allowed\n")

#: The largest chunk a chunked request body may announce (4 GiB); a bigger size is answered 400.
MAX_CHUNK_SIZE = 2**32
#: RFC 9110's reason phrases (Twisted's table lacks 431 and says "Request-URI Too Long").
_REFUSALS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}
_BARE_LF = re.compile(rb"(?<!\r)\n")
_RANGE_SPEC = re.compile(rb"\s*([0-9]{0,19})-([0-9]{0,19})\s*")


def _readable_range(value: bytes) -> bool:
    """A ``bytes=`` Range whose every spec is ``first-[last]`` (first <= last) or ``-suffix`` (RFC 9110 14.1.1)."""
    unit, _, specs = value.partition(b"=")
    if unit.strip().lower() != b"bytes":
        return False
    for spec in specs.split(b","):
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return False
        first, last = match.groups()
        if not first and not last:
            return False
        if first and last and int(first) > int(last):
            return False
    return True


_COMMA = b", "
_chain = itertools.chain.from_iterable


# Bound once: twisted.web.http is a deprecation proxy, and every attribute read through it costs a call.
_TwistedChunkedDecoder = http._ChunkedTransferDecoder
_MalformedChunkedDataError = http._MalformedChunkedDataError
_choose_decoder = http.HTTPChannel._maybeChooseTransferDecoder
_channel_data_received = http.HTTPChannel.dataReceived
_content_file = http._getContentFile


class _StrictChunkedDecoder(_TwistedChunkedDecoder):
    """Twisted's chunked decoder, refusing (400) what it would otherwise wait on until the idle timeout.

    Twisted's looks only for CRLF, so LF-only framing ("5\\nhello\\n0\\n\\n") leaves it waiting for more
    bytes, and it takes any chunk size, so "ffffffffffffffffffffffff" waits for a body no client sends.
    """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        lf = self._buffer.find(b"\n")
        if lf == 0 or (lf > 0 and self._buffer[lf - 1] != 0x0D):
            raise _MalformedChunkedDataError("chunk size line ends with a bare LF")
        done = super()._dataReceived_CHUNK_LENGTH()
        if done and self.length > MAX_CHUNK_SIZE:
            raise _MalformedChunkedDataError(f"chunk size {self.length} over {MAX_CHUNK_SIZE}")
        return done

    def _dataReceived_CRLF(self) -> bool:
        if self._buffer[:1] == b"\n":
            raise _MalformedChunkedDataError("chunk ends with a bare LF")
        return super()._dataReceived_CRLF()


class TestbedChannel(http.HTTPChannel):
    """Twisted's HTTPChannel answering bad framing at once, with the right status, journaled.

    Twisted's closes an over-long request line or header line (LineReceiver's MAX_LENGTH) without a word
    (here 414 or 431), answers too many or too large headers with 400 (here 431), waits for a CRLF that a
    bare-LF request never sends (here 400), and accepts a second Transfer-Encoding after "chunked", the
    request-smuggling shape RFC 9112 6.1 says to reject (here 400).
    """

    seam = NO_SEAM

    def _refuse(self, status: int, reason: str) -> None:
        self.seam.record(ERROR, error="bad request", status=status, reason=reason)
        if status == 400:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # Twisted's own bytes
        else:
            self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                 % (status, _REFUSALS[status]))
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self):
        # Twisted counts before it calls this: an excess here is what it refused.
        if self._receivedHeaderSize > self.totalHeadersSize:
            self._refuse(431, "headers over %d bytes" % self.totalHeadersSize)
        elif self._receivedHeaderCount > self.maxHeaders:
            self._refuse(431, "more than %d headers" % self.maxHeaders)
        else:
            self._refuse(400, "malformed request")

    def _first_line(self) -> bool:
        return bool(self._HTTPChannel__first_line)

    def dataReceived(self, data):
        # Two C-level counts on the hot path; the precise look only when some LF lacks its CR.
        if (self.line_mode and not self._handlingRequest and data.count(b"\n") != data.count(b"\r\n")
                and self._bare_lf_in_head(data)):
            self.resetTimeout()
            self._refuse(400, "bare LF in the request head")
            return
        _channel_data_received(self, data)

    def _bare_lf_in_head(self, data: bytes) -> bool:
        """A LF without its CR before the end of the request head (what follows it is a body)."""
        head = self._buffer + data
        lf = _BARE_LF.search(head)
        if lf is None:
            return False
        end = head.find(b"\r\n\r\n")
        return end < 0 or lf.start() < end

    def lineLengthExceeded(self, line):
        self._refuse(414 if self._first_line() else 431, "line over %d bytes" % self.MAX_LENGTH)

    def _maybeChooseTransferDecoder(self, header, data):
        # Called for every header: the common ones (neither length header) answer True here, as Twisted's
        # own would, without a second call.
        if header != b"Transfer-Encoding":
            return True if header != b"Content-Length" else _choose_decoder(self, header, data)
        # Twisted stores a header after this check passes: one already stored is a second Transfer-Encoding.
        if self.requests[-1].requestHeaders.hasHeader(b"Transfer-Encoding"):
            return self._failChooseTransferDecoder()
        ok = _choose_decoder(self, header, data)
        if type(self._transferDecoder) is _TwistedChunkedDecoder:
            self._transferDecoder.__class__ = _StrictChunkedDecoder
        return ok


class TestbedResource(resource.Resource):
    """The one resource: records the request, asks about faults, then answers from routes or the static root."""

    isLeaf = True

    def __init__(self, http: "HTTPServer"):
        super().__init__()
        self.http = http

    def render(self, request: server.Request):
        http = self.http
        seam = request.channel.seam
        conn = seam.conn
        content = request.content
        if type(content) is io.BytesIO:  # twisted.web keeps bodies under 100 kB (and none) in memory
            body = content.getvalue()
            size = len(body)
        elif (size := content.seek(0, 2)) <= BODY_IN_MEMORY:
            content.seek(0)
            body = content.read()
        else:
            # twisted.web spooled it to a temporary file already: keep that file, not the bytes.
            body = SpooledBody(content, size)
            request.content = io.BytesIO()  # so that twisted.web closes this one, not ours
        uri = request.uri
        raw_query = uri.partition(b"?")[2]
        method = request.method
        path = request.path
        # Stored raw (``RAW_FIELDS``): decoding waits until a test reads ``requests``. The headers come from
        # twisted.web's Headers dict (its documented ``_rawHeaders``), flattened in C.
        headers = request.requestHeaders._rawHeaders
        raw = (method, path, raw_query, body, seam.tls, conn, uri,
               *_chain(zip(headers.keys(), map(_COMMA.join, headers.values()))))
        http._requests.append(raw)
        record = RawRequest(raw)
        # Journaled once, when answered, with the reply folded in (``journal``).
        request.testbed_request = (record, size)
        if seam.wants("request"):
            headers = record.headers
            fault = seam.at("request", method=record.method, path=record.path, query=record.query,
                            headers=headers, host=headers.get("host", ""), tls=record.tls)
            if fault is not None and not fault.wire:
                if fault.action != "short_body":
                    return self.broken(request, fault, conn)
                cut_after(request, fault.param("bytes"))
        response, why = http.routing.answer(record)
        if why is not None:
            http.context.journal.record(UNEXPECTED, http.name, conn, request=describe_request(record), why=why)
        if response is not None:
            return self.respond(request, *response, conn)
        if http.static_root is not None:
            return self.static(request, conn)
        return self.unmatched(request, record, conn)

    def unmatched(self, request, record, conn: int) -> bytes:
        """A 404 whose body names the closest routes and expectations and what differed; also journaled.

        ``GET /`` on a server with an ``index`` page (the daemon's) gets that page instead.
        """
        http = self.http
        if self._asks_for_index(request):
            return self.respond(request, 200, [(b"Content-Type", b"text/html; charset=utf-8")], http.index, conn)
        why = http.routing.near_miss(record)
        http.routing.problem(why)
        http.context.journal.record(UNEXPECTED, http.name, conn, request=describe_request(record), why=why)
        return self.respond(request, 404, [(b"Content-Type", b"text/plain; charset=utf-8")],
                            why.encode("utf-8", "replace") + b"\n", conn)

    def _asks_for_index(self, request) -> bool:
        """``GET /`` (or HEAD) on a server with an ``index`` page, which nothing else answered."""
        return self.http.index is not None and request.path == b"/" and request.method in (b"GET", b"HEAD")

    def journal(self, request, conn: int, **reply: Any) -> None:
        """The request's one event: method, path, query and body size, with its reply (status, size...) folded in."""
        record, size = request.testbed_request
        http = self.http
        http._journal.record(COMMAND, http.name, conn, command="request", method=record.method, path=record.path,
                            query=record.raw_query, size=size, **reply)

    def respond(self, request, status: int, headers: list[tuple[bytes, bytes]], body: bytes, conn: int) -> bytes:
        request.setResponseCode(status)
        set_header = request.responseHeaders.setRawHeaders
        for name, value in headers:
            set_header(name, [value])
        if request.testbed_cut is None:
            # The common reply, journaled here in one call: the same event ``journal`` records.
            record, size = request.testbed_request
            http = self.http
            http._journal.record(COMMAND, http.name, conn, command="request", method=record.method,
                                path=record.path, query=record.raw_query, size=size, status=status,
                                reply_size=len(body))
        else:
            self.journal(request, conn, status=status, reply_size=len(body), **_cut_fields(request))
        return body

    # -- protocol faults ----------------------------------------------------------

    def broken(self, request, fault, conn: int):
        action = fault.action
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
        self.journal(request, conn, status=None, broken=action)
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
            if self._asks_for_index(request):
                return self.respond(request, 200, [(b"Content-Type", b"text/html; charset=utf-8")], http.index, conn)
            return self.respond(request, *NOT_FOUND, conn)
        ranges = request.getHeader(b"range")
        if ranges is not None and not _readable_range(ranges):
            # twisted.web.static answers an empty or non-UTF-8 Range with a 500 and a logged traceback.
            http.context.journal.record(ERROR, http.name, conn, error="bad Range header",
                                        range=ranges.decode("latin-1")[:200])
            size = os.path.getsize(target)
            return self.respond(request, 416, [(b"Content-Range", b"bytes */%d" % size)], b"", conn)
        file = os.path.relpath(target, http.static_root)
        try:
            body = static.File(target).render(request)
        except resource.UnsupportedMethod as e:
            # Answered here: twisted.web's own 405 page is a deprecated, unescaped one.
            request.setHeader(b"Allow", b", ".join(e.allowedMethods))
            return self.respond(request, *METHOD_NOT_ALLOWED, conn)
        # File.render has chosen the status by now: 200, 206, 304, 416...
        self.journal(request, conn, status=request.code, file=file, **_cut_fields(request))
        return body


def cut_after(request, limit: int | None) -> None:
    """``short_body``: send this request's real response, but close the connection after ``limit`` body bytes.

    The headers still promise the whole body (its Content-Length, or a
    range's), so a client sees the connection end early. Without ``limit``,
    half the promised length goes out.
    """
    write = request.write
    state = {"left": limit}

    def cutting_write(data: bytes) -> None:
        left = state["left"]
        if left is None:
            promised = request.responseHeaders.getRawHeaders(b"content-length")
            left = int(promised[0]) // 2 if promised else len(data) // 2
        if left < 0:
            return
        if len(data) < left:
            state["left"] = left - len(data)
            write(data)
            return
        state["left"] = -1
        write(data[:left])
        request.channel.transport.loseConnection()

    request.write = cutting_write
    request.testbed_cut = limit if limit is not None else "half"


_SERVER_HEADER = [server.version]
#: Statuses twisted.web sends without a default Content-Type.
_NO_CONTENT_TYPE = (http.NOT_MODIFIED, http.NO_CONTENT)
_http_request_write = http.Request.write
_unquote = server.unquote
#: (second, its HTTP date): the Date header, formatted once a second.
_date_cache = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache = (now, http.datetimeToString(now))
    return _date_cache[1]


def _cut_fields(request) -> dict:
    """What a reply's journal entry adds when ``short_body`` cuts it."""
    cut = request.testbed_cut
    return {} if cut is None else {"broken": "short_body", "cut_after": cut}


class TestbedRequest(server.Request):
    """A request whose unhandled exception (in a ``respond_with`` handler, say) is journaled as a server error.

    ``process`` is twisted.web's ``Request.process`` for a site of one leaf resource, with the per-request
    work that buys nothing here left out: the Date header is formatted once a second (Twisted formats it on
    every request), the Server and Date values, ours and known clean, go into the headers without Headers'
    sanitising pass, and there is no resource tree to walk (``Site.getResourceFor`` and its copy of
    ``prepath``) nor an encoder to ask ``TestbedResource`` for. ``tests/test_http_fastpath.py`` checks that
    the response bytes equal stock twisted.web's.
    """

    #: What ``short_body`` cut this response after (bytes, or "half"), else None.
    testbed_cut = None

    def process(self):
        path = self.path
        if path == b"*":  # OPTIONS * and friends: Twisted's own answer
            return super().process()
        self.site = site = self.channel.site
        # Headers keeps canonical names in ``_rawHeaders`` (its documented ivar): these two are canonical.
        headers = self.responseHeaders._rawHeaders
        headers[b"Server"] = _SERVER_HEADER
        headers[b"Date"] = [_http_date()]
        self.prepath = []
        self.sitepath = []
        segments = path[1:].split(b"/")
        self.postpath = list(map(_unquote, segments)) if b"%" in path else segments
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(failure.Failure())

    def render(self, resrc):
        """``server.Request.render`` for ``TestbedResource``, which always answers bytes or NOT_DONE_YET and
        never raises UnsupportedMethod: the Content-Length goes straight into the headers.

        HEAD keeps Twisted's own handling (a body rendered for HEAD is eaten, its length kept).
        """
        if self.method == b"HEAD":
            return super().render(resrc)
        body = resrc.render(self)
        if body is server.NOT_DONE_YET:
            return
        self.responseHeaders._rawHeaders[b"Content-Length"] = [b"%d" % len(body)]
        self.write(body)
        self.finish()

    def write(self, data):
        """``server.Request.write``, its default Content-Type decided on the headers dict directly on the first write."""
        if self.startedWriting or self._inFakeHead or self._encoder is not None:
            return super().write(data)
        headers = self.responseHeaders._rawHeaders
        if (b"Content-Type" not in headers and self.code not in _NO_CONTENT_TYPE
                and self.defaultContentType is not None):
            length = headers.get(b"Content-Length")
            if not (length and length[0] == b"0"):
                headers[b"Content-Type"] = [self.defaultContentType]
        _http_request_write(self, data)

    def processingFailed(self, reason):
        channel = self.channel
        site = channel.site
        site.http.context.journal.record(ERROR, site.http.name, channel.seam.conn, error="internal error",
                                         detail=reason.getErrorMessage(), path=self.path.decode("utf-8", "replace"),
                                         **internal(reason))
        return super().processingFailed(reason)


class QuietSite(SeamFactory, server.Site):
    """A Site without the per-request access log line (it cost a third of the throughput), on TestbedChannel.

    Only HTTP/1.1 is offered (ALPN), so the channel is served without Twisted's HTTP/2-negotiating wrapper.
    """

    noisy = False
    protocol = TestbedChannel
    requestFactory = TestbedRequest

    def buildProtocol(self, addr, seam=NO_SEAM):
        protocol = server.Site.buildProtocol(self, addr)
        # Site hands out a _GenericHTTPChannelProtocol around the HTTPChannel that requests see.
        getattr(protocol, "_channel", protocol).seam = seam
        return protocol

    def log(self, request):
        pass

    def getContentFile(self, length):
        """Where a request body goes: twisted.web's own choice (memory under 100 kB, else a temporary file).

        ``server.Request.gotLength`` asks the site for this optional hook on every request; a site
        without it costs an AttributeError raised and caught each time.
        """
        return _content_file(length)


class HTTPServer(Server):
    """``http_server``: ``url``, ``https_url``, ``requests``, ``route(...)``, ``expect(...)``, ``verify()``, ``wait_for(...)``."""

    scheme = "http"
    tls_scheme = "https"
    alpn = (b"http/1.1",)

    def __init__(self, context):
        super().__init__(context)
        self._requests = context.journal.records()
        #: Bound once: every request journals through it.
        self._journal = context.journal
        config = self.config
        self.routing = Routing(config.routes, HTTPRequest.decode, limit=context.journal.max_events or 1000)
        self.static_root = self.context.path(config.static) if config.static else None
        self.static_real = os.path.realpath(self.static_root) if self.static_root else None
        #: What ``GET /`` answers when no route or static file does (the daemon lists its servers), or None.
        self.index: bytes | None = None

    @defer.inlineCallbacks
    def start(self):
        site = QuietSite(TestbedResource(self), reactor=self.context.reactor)
        site.http = self
        config = self.config
        if config.listen:
            yield self.listen(config.listen, site, "http", tls=config.tls == "implicit")
        if config.tls_listen:
            yield self.listen(config.tls_listen, site, "https", tls=True)

    def reset(self) -> None:
        super().reset()
        for raw in self._requests:
            if isinstance(raw[_BODY], SpooledBody):
                raw[_BODY].close()
        self._requests = self.context.journal.records()
        self.routing.reset()

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

    @property
    def routes(self) -> list[RouteState]:
        """The scenario's routes, then those added with ``route()``, each with its ``hits``."""
        return [*self.routing.scenario, *self.routing.runtime]

    @property
    def route_states(self) -> list[RouteState]:
        """Every route with its hits, in the order a request tries them: the newest added at runtime first,
        then the scenario's (the first ``len(route_states) - len(config.routes)`` are runtime routes)."""
        return self.routing.runtime[::-1] + self.routing.scenario

    def clear_routes(self) -> int:
        """Remove the routes added at runtime (the scenario's stay); how many went."""
        return self.context.call(self._clear_routes)

    def _clear_routes(self) -> int:
        removed, self.routing.runtime = len(self.routing.runtime), []
        return removed

    @property
    def expectations(self) -> list[Expectation]:
        """The expectations declared in this test, each with its ``hits`` and ``met``."""
        return list(self.routing.expectations)

    def route(self, path: str, method: str = "GET", status: int = 200, headers: Mapping[str, str] | None = None,
              body: bytes | str = b"", json: Any = None, responses: list[Mapping[str, Any]] | None = None,
              query: Mapping[str, str] | None = None, match_headers: Mapping[str, str] | None = None,
              body_contains: str = "", exhausted: str = "repeat") -> RouteState:
        """Answer ``method path`` (a glob) with this response from now on (until the next test).

        Returns the route's state: ``hits`` counts the requests it answered. With
        ``responses``, ``exhausted`` says what follows the last one: "repeat" it,
        or treat further requests as "unexpected" (a near-miss 404 that fails ``verify``).
        """
        if exhausted not in ("repeat", "unexpected"):
            raise ValueError(f"route(exhausted=...): 'repeat' or 'unexpected', not {exhausted!r}")
        if isinstance(body, bytes):
            body = body.decode("utf-8", "surrogateescape")
        route = Route(path=path, method=method, status=status, headers=dict(headers or {}), body=body, json=json,
                      responses=list(responses or []), query=dict(query or {}),
                      match_headers=dict(match_headers or {}), body_contains=body_contains, exhausted=exhausted)
        state = RouteState(route, f"route {route.method.upper()} {route.path}")
        self.context.call(self._add, self.routing.runtime, state)
        return state

    def expect(self, method: str = "GET", path: str = "*", *, query: Mapping[str, str] | str | None = None,
               headers: Mapping[str, str] | None = None, json: Any = ANY_JSON, body_contains: str | bytes = "",
               times: int | None = None, ordered: bool = False) -> Expectation:
        """Expect a request (``times`` of them, or at least one); answer it with ``.respond(...)`` and friends.

        ``path`` and the ``query``/``headers`` values are globs (``query`` may
        also be the exact query string); ``json`` must equal the parsed body.
        An ``ordered`` expectation must not match before every ordered one
        declared earlier is met. Expectations come before routes; ``verify()``
        (which the pytest plugin calls after the test) names the unmet ones.
        """
        expectation = Expectation(len(self.routing.expectations) + 1, method, path, query=query, headers=headers,
                                  json=json, body_contains=body_contains, times=times, ordered=ordered)
        self.context.call(self._add, self.routing.expectations, expectation)
        return expectation

    def _add(self, handlers: list, handler) -> None:
        handlers.append(handler)
        self.context.journal.record(STORED, self.name, None, **{handler.kind: handler.label})

    def clear_expectations(self) -> None:
        """Forget this test's expectations and the unexpected requests so far (after asserting ``verify`` fails, say)."""
        def clear():
            self.routing.expectations = []
            self.routing.problems = []

        self.context.call(clear)

    def verify(self) -> None:
        """Raise AssertionError naming every unmet expectation and every request that matched none."""
        failures = self.context.call(self.routing.failures)
        if failures:
            raise AssertionError(f"{self.name}: {len(failures)} problem(s) with the expected requests:\n"
                                 + "\n".join("  " + line.replace("\n", "\n    ") for line in failures))

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the requests (``HTTPRequest``)."""
        return (lambda: self.requests), "request"
