"""Bad HTTP input gets the right 4xx at once, byte for byte over raw sockets, journaled, with nothing logged (issue 9, item 7).

Range headers that cannot be read, over-long request lines and headers, broken chunked framing, bare-LF
requests and a second Transfer-Encoding; over plain TCP and over TLS.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from _logs import describe, errors_logged
from test_http import site, testbed_scenario  # noqa: F401  (fixtures)

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"


def exchange(server, data: bytes, tls: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes (10 s at most)."""
    sock = socket.create_connection((server.host, server.tls_port if tls else server.port), timeout=10)
    if tls:
        context = ssl.create_default_context(cafile=server.ca_path)
        sock = context.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            received += chunk
    return received


def errors(server, **match) -> list[dict]:
    """The server's journaled errors with the given fields."""
    return [e for e in server.journal if e["kind"] == "error" and all(e.get(k) == v for k, v in match.items())]


def status_line(response: bytes) -> bytes:
    return response.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("value", [b"bytes=,", b"bytes=\xff-3", b"bytes=-", b"bytes=5-2", b"lines=1-2", b"bytes=1-2,"])
def test_a_range_that_cannot_be_read_gets_416(http_server, value):
    with errors_logged() as logged:
        response = exchange(http_server, b"GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\nRange: " + value
                            + b"\r\n\r\n")
    assert status_line(response) == b"HTTP/1.1 416 Requested Range not satisfiable"
    assert b"\r\nContent-Range: bytes */" in response
    assert [describe(e) for e in logged] == []
    assert errors(http_server, error="bad Range header")


def test_a_good_range_still_gets_206(http_server):
    response = exchange(http_server, b"GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\nRange: bytes=0-3\r\n\r\n")
    assert status_line(response) == b"HTTP/1.1 206 Partial Content"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_an_over_long_request_line_gets_414_and_over_long_headers_431(http_server, tls):
    with errors_logged() as logged:
        line = exchange(http_server, b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", tls)
        header = exchange(http_server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", tls)
        many = exchange(http_server, b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Many: 0123456789\r\n" * 1000 + b"\r\n", tls)
    assert line == b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    expected = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert header == expected
    assert many == expected
    assert [describe(e) for e in logged] == []
    assert [e["status"] for e in errors(http_server, error="bad request")] == [414, 431, 431]


CHUNKED = b"POST /orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("data", [
    CHUNKED + b"ffffffffffffffffffffffff\r\nx\r\n",                     # a chunk size past any body we take
    CHUNKED + b"5\nhello\n0\n\n",                                        # chunk framing with bare LFs
    b"GET / HTTP/1.1\nHost: a\n\n",                                      # a request with bare LFs
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",                          # one bare LF among CRLFs
    b"POST /orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
    b"0\r\n\r\n",                                                        # two Transfer-Encodings: smuggling shape
    b"garbage\r\n\r\nGET / HTTP/1.1\r\n\r\n",                            # a bad request line, then more
], ids=["chunk-size-overflow", "lf-chunks", "lf-request", "one-bare-lf", "two-transfer-encodings", "bad-line"])
def test_broken_framing_gets_400_at_once(http_server, tls, data):
    with errors_logged() as logged:
        response = exchange(http_server, data, tls)
    assert response == BAD_REQUEST
    assert [describe(e) for e in logged] == []
    assert errors(http_server, error="bad request", status=400)
    assert status_line(exchange(http_server, b"GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", tls)
                       ) == b"HTTP/1.1 200 OK"
