"""The HTTP server's lean paths answer exactly as the general ones: byte for byte as stock twisted.web,
routes in declaration order, transport attributes through the fault wrapper."""

import re
import urllib.request
from types import SimpleNamespace

import pytest

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from testbed.faults.wire import FORWARDED
from testbed.harness import Testbed
from testbed.servers.http.routing import Routing
from testbed.servers.http import server as http_module
from testbed.servers.http.spec import Route
from testbed.testing import connect

BODY = b"Hello, world!"

#: path -> (status, headers, body): the testbed's routes, and what the stock resource below answers.
ROUTES = {
    b"/hello": (200, {}, BODY),
    b"/typed": (201, {"Content-Type": "application/json", "X-Trace": "abc"}, b'{"id": 1}'),
    b"/empty": (200, {}, b""),
    b"/nothing": (204, {}, b""),
    b"/same": (304, {}, b""),
    b"/stale": (304, {}, b"old"),  # a body where none may go: Twisted drops it, and sends no Content-Type
}

REQUESTS = [
    *(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path for path in ROUTES),
    b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    b"GET /hello HTTP/1.0\r\n\r\n",
    b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"DELETE * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
]


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        status, headers, body = ROUTES[request.path]
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


def _answer(site, request: bytes) -> bytes:
    connection = connect(site, "http")
    connection.send(request)
    answer = connection.sent()
    connection.drop()
    # The Date header is the one part that may differ: the two answers can straddle a second.
    return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: (now)\r\n", answer)


def _testbed_site():
    routes = [{"path": path.decode(), "status": status, "headers": headers, "body": body.decode()}
              for path, (status, headers, body) in ROUTES.items()]
    scenario = {"servers": {"http": {"tls_listen": "", "routes": routes}}}
    bed = Testbed(scenario, reactor=Clock())
    http = bed.server("http")
    site = http_module.QuietSite(http_module.TestbedResource(http), reactor=Clock())
    site.http = http
    return site, http


def test_a_route_answers_byte_for_byte_as_stock_twisted_web():
    site, _ = _testbed_site()
    stock = server.Site(Hello(), reactor=Clock())
    stock.log = lambda request: None
    for request in REQUESTS:
        ours, theirs = _answer(site, request), _answer(stock, request)
        assert ours == theirs, request
    assert b"\r\nServer: " + server.version + b"\r\n" in _answer(site, REQUESTS[0])


def test_the_date_header_is_an_http_date_of_now():
    site, _ = _testbed_site()
    connection = connect(site, "http")
    connection.send(REQUESTS[0])
    date = re.search(rb"\r\nDate: ([^\r]+)\r\n", connection.sent()).group(1)
    assert re.fullmatch(rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", date)


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    (root / "a b.txt").write_bytes(b"spaced\n")
    return root


@pytest.fixture
def testbed_scenario(static_root):
    return {"servers": {"http": {"static": str(static_root), "routes": [{"path": "/hello", "body": BODY.decode()}]}}}


def test_a_percent_encoded_path_reaches_the_static_file(http_server):
    with urllib.request.urlopen(http_server.url + "/a%20b.txt", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"spaced\n")
    with urllib.request.urlopen(http_server.url + "/hello", timeout=10) as response:
        assert (response.status, response.read()) == (200, BODY)


def _request(method, path, query=""):
    return SimpleNamespace(method=method, path=path, raw_query=query, query={}, headers={}, body=b"")


def _routing(*routes):
    return Routing([Route(**route) for route in routes], decode=lambda raw: raw)


def test_a_glob_declared_before_an_exact_route_still_wins():
    routing = _routing({"path": "/api/*", "body": "glob"}, {"path": "/api/users", "body": "exact"})
    response, _ = routing.answer(_request("GET", "/api/users"))
    assert response[2] == b"glob"
    assert [state.hits for state in routing.scenario] == [1, 0]


def test_exact_routes_answer_by_method_and_path_in_declaration_order():
    routing = _routing({"path": "/a", "body": "first"}, {"path": "/a", "body": "second"},
                       {"path": "/a", "method": "POST", "body": "posted"}, {"path": "/*", "body": "fallback"},
                       {"path": "/b", "body": "after the glob"})
    assert routing.answer(_request("GET", "/a"))[0][2] == b"first"
    assert routing.answer(_request("POST", "/a"))[0][2] == b"posted"
    assert routing.answer(_request("GET", "/b"))[0][2] == b"fallback"
    assert routing.answer(_request("PUT", "/b")) == (None, None)
    assert [state.hits for state in routing.scenario] == [1, 0, 1, 1, 0]


def test_a_route_with_a_criterion_beyond_method_and_path_is_still_checked():
    routing = _routing({"path": "/search", "query": {"q": "tw*"}, "body": "found"})
    assert routing.answer(_request("GET", "/search")) == (None, None)
    found = SimpleNamespace(method="GET", path="/search", raw_query="q=twisted", query={"q": ["twisted"]},
                            headers={}, body=b"")
    assert routing.answer(found)[0][2] == b"found"


def test_the_fault_wrapper_hands_on_the_transports_attributes():
    class Transport(StringTransport):
        negotiatedProtocol = b"http/1.1"

        def getTcpNoDelay(self):
            return True

    wrapper = connect(server.Site(Hello()), "http").wrapper
    transport = Transport()
    wrapper.transport = transport
    assert wrapper.negotiatedProtocol == b"http/1.1"
    assert wrapper.getTcpNoDelay() is True
    assert getattr(wrapper, "getPeerCertificate", None) is None  # absent below: absent here, as getattr expects
    assert {"setTcpNoDelay", "getPeerCertificate", "negotiatedProtocol"} <= set(FORWARDED)
