"""HTTP expectations, near-miss 404s, route hits and used-up response sequences, with urllib over loopback."""

import json
import urllib.error
import urllib.request

import pytest

from testbed.config import ScenarioError, from_dict


@pytest.fixture
def testbed_scenario():
    return {"servers": {"http": {"tls_listen": "", "routes": [
        {"path": "/api/status", "responses": [{"status": 503}, {"status": 200, "body": "up"}],
         "exhausted": "unexpected"},
        {"path": "/api/users", "query": {"page": "[0-9]*"}, "json": []},
    ]}}}


def call(url, data=None, headers=None, method=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_near_miss_names_the_closest_handlers_and_each_difference(http_server):
    http_server.route("/api/orders", method="POST", match_headers={"X-Key": "k-*"}, body_contains="widget")
    http_server.expect("PUT", "/api/orders", json={"id": 1})
    status, body = call(http_server.url + "/api/orders", data=b'{"id": 2}', method="PUT")
    assert status == 404
    text = body.decode()
    assert text.splitlines()[:2] == ["no route or expectation matches PUT /api/orders", "closest:"]
    assert '  expectation #1 PUT /api/orders with json {"id": 1}: JSON body {"id": 2} is not {"id": 1}' in text
    assert ("  route POST /api/orders: method PUT is not POST; header x-key is missing (wanted 'k-*'); "
            "body does not contain 'widget'") in text
    # Routes whose path differs come after the ones whose path matched.
    assert text.index("route POST /api/orders") < text.index("scenario route #1")
    status, body = call(http_server.url + "/api/users?page=x")
    assert "query page='x' does not match '[0-9]*'" in body.decode()
    (event,) = [e for e in http_server.journal if e["kind"] == "unexpected" and e["request"] == "GET /api/users?page=x"]
    assert "closest:" in event["why"]
    http_server.clear_expectations()  # this test asserts on misses on purpose


def test_verify_names_unmet_expectations_and_requests_that_matched_none(http_server):
    http_server.expect("GET", "/a", times=2)
    http_server.expect("DELETE", "/b")
    assert call(http_server.url + "/a")[0] == 200
    assert call(http_server.url + "/c")[0] == 404
    with pytest.raises(AssertionError) as info:
        http_server.verify()
    message = str(info.value)
    assert "unmet: expectation #1 GET /a (times=2): 1 of 2 request(s) arrived" in message
    assert "unmet: expectation #2 DELETE /b: 0 of at least 1 request(s) arrived" in message
    assert "unexpected: no route or expectation matches GET /c" in message
    http_server.clear_expectations()
    http_server.verify()


def test_expectations_come_before_routes_and_sequences_repeat_their_last(http_server):
    route = http_server.route("/x", body="route")
    expectation = http_server.expect("GET", "/x", query={"v": "2"}).respond_sequence([{"body": "one"}, {"body": "two"}])
    assert [call(http_server.url + "/x?v=2")[1] for _ in range(3)] == [b"one", b"two", b"two"]
    assert call(http_server.url + "/x")[1] == b"route"
    assert (expectation.hits, route.hits) == (3, 1)
    assert [e.met for e in http_server.expectations] == [True]


def test_routes_count_hits_and_a_used_up_sequence_can_be_unexpected(http_server):
    status_route = http_server.routes[0]
    assert [call(http_server.url + "/api/status")[0] for _ in range(2)] == [503, 200]
    status, body = call(http_server.url + "/api/status")
    assert status == 404
    assert b"scenario route #1 GET /api/status: its 2 response(s) are used up (exhausted = 'unexpected')" in body
    assert status_route.hits == 2
    with pytest.raises(AssertionError, match="unexpected: no route or expectation matches GET /api/status"):
        http_server.verify()


def test_hits_start_again_in_the_next_test(http_server):
    assert [r.hits for r in http_server.routes] == [0, 0]
    assert call(http_server.url + "/api/status")[0] == 503


def test_a_runtime_route_can_end_unexpected_too(http_server):
    route = http_server.route("/once", responses=[{"json": {"n": 1}}], exhausted="unexpected")
    assert call(http_server.url + "/once") == (200, json.dumps({"n": 1}).encode())
    assert call(http_server.url + "/once")[0] == 404
    assert route.hits == 1
    with pytest.raises(ValueError, match="'repeat' or 'unexpected'"):
        http_server.route("/x", exhausted="never")


def test_exhausted_is_validated_in_the_scenario():
    with pytest.raises(ScenarioError, match=r"servers\.http\.routes\[0\]\.exhausted: expected one of 'repeat', "
                                            r"'unexpected', got 'stop'"):
        from_dict({"servers": {"http": {"routes": [{"path": "/", "responses": [{}], "exhausted": "stop"}]}}})
    with pytest.raises(ScenarioError, match=r"routes\[0\]\.exhausted: expected a route with responses"):
        from_dict({"servers": {"http": {"routes": [{"path": "/", "exhausted": "unexpected"}]}}})


def test_an_ordered_expectation_met_lets_the_next_one_through(http_server):
    http_server.expect("POST", "/step1", ordered=True, times=1).respond(status=201)
    http_server.expect("POST", "/step2", ordered=True).respond(status=202)
    assert call(http_server.url + "/step2", b"")[0] == 500
    assert call(http_server.url + "/step1", b"")[0] == 201
    assert call(http_server.url + "/step2", b"")[0] == 202
    with pytest.raises(AssertionError, match=r"POST /step2 matched expectation #2 POST /step2 \[ordered\] out of "
                                             r"order: expectation #1 POST /step1 \(times=1\) \[ordered\]"):
        http_server.verify()
    http_server.clear_expectations()


def test_bad_expectation_arguments_are_refused(http_server):
    with pytest.raises(ValueError, match="times=...\\): a whole number from 1"):
        http_server.expect("GET", "/", times=0)
