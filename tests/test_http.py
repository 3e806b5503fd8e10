"""The HTTP server with real clients over loopback: urllib, http.client, ssl and curl."""

import http.client
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from _clients import CURL

from testbed.servers.base import WaitTimeout

SITE = pathlib.Path(__file__).parent.parent / "fixtures" / "site"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A copy of the fixture site with a symlink that points out of it."""
    root = tmp_path_factory.mktemp("http") / "site"
    shutil.copytree(SITE, root)
    outside = root.parent / "secret.txt"
    outside.write_text("outside the root\n")
    os.symlink(outside, root / "escape.txt")
    os.symlink(root.parent, root / "up")
    return root


@pytest.fixture
def testbed_scenario(site):
    return {
        "seed": 11,
        "servers": {"http": {"static": str(site), "routes": [
            {"path": "/api/users/*", "json": {"users": []}},
            {"path": "/api/status", "responses": [{"status": 503}, {"status": 503}, {"status": 200, "body": "up"}]},
            {"path": "/search", "query": {"q": "twisted*"}, "body": "found"},
            {"path": "/secure", "match_headers": {"Authorization": "Bearer *"}, "body": "welcome"},
            {"path": "/orders", "method": "POST", "body_contains": "\"item\"", "status": 201, "json": {"id": 1}},
        ]}},
    }


def get(url, **kwargs):
    try:
        with urllib.request.urlopen(url, timeout=10, **kwargs) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def curl(*args, timeout=10):
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)


def test_a_scenario_route_answers_json(http_server):
    status, body, headers = get(http_server.url + "/api/users/42")
    assert status == 200 and json.loads(body) == {"users": []}
    assert headers["Content-Type"] == "application/json"


def test_a_responses_list_answers_in_turn_and_repeats_the_last(http_server):
    assert [get(http_server.url + "/api/status")[0] for _ in range(4)] == [503, 503, 200, 200]


def test_routes_match_on_query_headers_and_body(http_server):
    assert get(http_server.url + "/search?q=twisted-testbed")[1] == b"found"
    assert get(http_server.url + "/search?q=other")[0] == 404
    request = urllib.request.Request(http_server.url + "/secure", headers={"Authorization": "Bearer x"})
    assert get(request)[1] == b"welcome"
    assert get(http_server.url + "/secure")[0] == 404
    order = urllib.request.Request(http_server.url + "/orders", data=b'{"item": 3}', method="POST")
    assert get(order)[0] == 201


def test_runtime_routes_win_and_are_gone_in_the_next_test(http_server):
    http_server.route("/api/users/*", status=500, body=b"overridden")
    assert get(http_server.url + "/api/users/1") [:2] == (500, b"overridden")


def test_runtime_routes_from_the_previous_test_are_gone(http_server):
    assert get(http_server.url + "/api/users/1")[0] == 200


def test_requests_are_recorded_with_method_path_query_headers_and_body(http_server):
    request = urllib.request.Request(http_server.url + "/anything?a=1&a=2&b=", data=b"payload", method="PUT",
                                     headers={"X-Trace": "abc"})
    assert get(request)[0] == 404
    (recorded,) = http_server.wait_for(1)
    assert (recorded.method, recorded.path, recorded.body) == ("PUT", "/anything", b"payload")
    assert recorded.query == {"a": ["1", "2"], "b": [""]}
    assert recorded.headers["x-trace"] == "abc"
    assert not recorded.tls


def test_wait_for_names_what_arrived_instead(http_server):
    get(http_server.url + "/one")
    with pytest.raises(WaitTimeout, match=r"waited 0.2s for 2 request\(s\); got 1: .*path='/one'"):
        http_server.wait_for(2, timeout=0.2)
    assert http_server.wait_for(lambda r: r.path == "/one")[0].path == "/one"


def test_static_files_are_served(http_server):
    status, body, _ = get(http_server.url + "/")
    assert status == 200 and b"twisted-testbed" in body
    assert get(http_server.url + "/docs/guide.txt")[1].startswith(b"A static file")


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/%2E%2E/%2e%2e/secret.txt",
    "/..%2fsecret.txt", "/%2e%2e%5csecret.txt", "//etc/passwd", "/escape.txt", "/up/secret.txt", "/docs%00.txt",
])
def test_no_request_escapes_the_static_root(http_server, testbed, path):
    connection = http.client.HTTPConnection(http_server.host, http_server.port, timeout=10)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status in (400, 404)
    assert b"outside the root" not in body and b"root:" not in body
    assert testbed.journal.query("error", server="http", error="path escapes root")


def test_https_with_the_testbed_ca_verifies(http_server, testbed):
    context = ssl.create_default_context(cafile=testbed.ca_path)
    status, body, _ = get(http_server.https_url + "/api/users/1", context=context)
    assert status == 200
    assert http_server.requests[-1].tls
    for host in ("localhost", "127.0.0.1"):
        url = http_server.https_url.replace("127.0.0.1", host) + "/api/users/1"
        assert get(url, context=context)[0] == 200


def test_https_without_the_ca_is_refused_by_a_verifying_client(http_server):
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(http_server.https_url + "/", context=ssl.create_default_context())


# -- faults --------------------------------------------------------------------------


@pytest.mark.fault(server="http", on="request", match={"path": "/api/*"}, action="reply", status=503,
                   headers={"Retry-After": "1"}, body="try later", times=1)
def test_a_reply_fault_answers_once_then_the_route_does(http_server, testbed):
    status, body, headers = get(http_server.url + "/api/users/1")
    assert (status, body, headers["Retry-After"]) == (503, b"try later", "1")
    assert get(http_server.url + "/api/users/1")[0] == 200
    (fired,) = testbed.journal.faults("http")
    assert fired["action"] == "reply" and fired["rule"] == "runtime:1"


def test_faults_added_at_runtime(http_server):
    http_server.faults.add(on="request", match={"method": "POST"}, action="reply", status=429)
    assert get(urllib.request.Request(http_server.url + "/orders", data=b"{}", method="POST"))[0] == 429
    assert get(http_server.url + "/api/users/1")[0] == 200
    http_server.faults.clear()
    assert get(urllib.request.Request(http_server.url + "/orders", data=b'{"item": 1}', method="POST"))[0] == 201


@pytest.mark.fault(server="http", on="request", action="empty")
def test_empty_closes_without_a_response(http_server):
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        urllib.request.urlopen(http_server.url + "/api/users/1", timeout=10)


@pytest.mark.fault(server="http", on="request", action="malformed")
def test_malformed_is_a_bad_status_line(http_server):
    with pytest.raises(http.client.BadStatusLine):
        urllib.request.urlopen(http_server.url + "/x", timeout=10)


@pytest.mark.fault(server="http", action="reset")
def test_reset_is_a_connection_reset(http_server):
    with pytest.raises(ConnectionResetError):
        urllib.request.urlopen(http_server.url + "/x", timeout=10)


@pytest.mark.fault(server="http", on="request", action="short_body")
def test_short_body_is_an_incomplete_read(http_server):
    with pytest.raises(http.client.IncompleteRead):
        urllib.request.urlopen(http_server.url + "/api/users/1", timeout=10).read()


def test_short_body_cuts_the_routes_own_body_under_its_full_length(http_server, testbed):
    http_server.faults.add(on="request", action="short_body", bytes=5)
    with urllib.request.urlopen(http_server.url + "/api/users/1", timeout=10) as response:
        assert response.headers["Content-Length"] == str(len(b'{"users": []}'))
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    assert cut.value.partial == b'{"use'
    (reply,) = testbed.journal.query("reply", server="http")
    assert (reply["status"], reply["broken"], reply["cut_after"]) == (200, "short_body", 5)


def test_a_static_file_cut_by_short_body_is_resumed_by_curl_into_the_real_file(http_server, site, tmp_path):
    real = (site / "index.html").read_bytes()
    out = tmp_path / "index.html"
    http_server.faults.add(on="request", action="short_body", bytes=10, times=1)
    first = curl("-o", str(out), http_server.url + "/index.html")
    assert first.returncode == 18, first.stderr                   # curl: partial file
    assert out.read_bytes() == real[:10]
    resumed = curl("-C", "-", "-o", str(out), "-w", "%{http_code}", http_server.url + "/index.html")
    assert resumed.returncode == 0 and resumed.stdout == b"206", resumed.stderr
    assert out.read_bytes() == real
    assert http_server.requests[1].headers["range"] == "bytes=10-"


def test_a_range_request_cut_by_short_body_promises_the_ranges_length(http_server, site):
    real = (site / "index.html").read_bytes()
    http_server.faults.add(on="request", action="short_body", bytes=4)
    request = urllib.request.Request(http_server.url + "/index.html", headers={"Range": "bytes=2-21"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206 and response.headers["Content-Length"] == "20"
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    assert cut.value.partial == real[2:6]


def test_the_journal_reply_of_a_static_file_carries_the_status_sent(http_server, testbed):
    url = http_server.url + "/index.html"
    statuses = [get(url)[0],
                get(urllib.request.Request(url, headers={"Range": "bytes=0-3"}))[0],
                get(urllib.request.Request(url, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}))[0],
                get(urllib.request.Request(url, headers={"Range": "bytes=999999-"}))[0],
                get(urllib.request.Request(url, data=b"x", method="POST"))[0]]
    assert statuses == [200, 206, 304, 416, 405]
    assert [e["status"] for e in testbed.journal.query("reply", server="http")] == statuses
    assert "GET" in get(urllib.request.Request(url, data=b"x", method="POST"))[2]["Allow"]


@pytest.mark.parametrize("fault, exit_code", [
    ({"on": "connect", "action": "reset"}, 56),          # Recv failure: Connection reset by peer
    ({"on": "request", "action": "malformed"}, 1),       # Unsupported HTTP version: curl's bad status line
    ({"on": "request", "action": "bad_chunk"}, 56),      # Malformed chunk / receive failure
    ({"on": "request", "action": "short_body"}, 18),     # Partial file
    ({"on": "request", "action": "empty"}, 52),          # Empty reply from server
])
def test_curl_sees_each_broken_response_as_its_own_error(http_server, fault, exit_code):
    http_server.faults.add(**fault)
    result = curl(http_server.url + "/api/users/1")
    assert result.returncode == exit_code, result.stderr


def test_curl_observes_an_injected_delay(http_server):
    http_server.faults.add(on="request", action="delay", seconds=0.5)
    result = curl("-o", "/dev/null", "-w", "%{time_starttransfer}", http_server.url + "/api/users/1")
    assert result.returncode == 0
    assert float(result.stdout) >= 0.5


def test_curl_verifies_https_with_the_ca_file(http_server, testbed):
    result = curl("--cacert", testbed.ca_path, http_server.https_url + "/api/users/1")
    assert result.returncode == 0 and json.loads(result.stdout) == {"users": []}
    assert b"warning" not in result.stderr.lower()
    assert curl(http_server.https_url + "/").returncode == 60  # untrusted without the CA


@pytest.mark.fault(server="http", on="request", action="slice", size=5, interval=0.01)
def test_slice_dribbles_the_response_but_it_arrives_whole(http_server, testbed):
    result = curl(http_server.url + "/api/users/1")
    assert json.loads(result.stdout) == {"users": []}
    conn = http_server.requests[0].conn
    sizes = [e["size"] for e in testbed.journal.query("data", server="http", conn=conn, direction="down")]
    assert sum(sizes) > 5
