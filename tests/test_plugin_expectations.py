"""What a test author meets, in a fresh pytest: expectations verified after the test, near misses in the
report, server errors failing the test, servers started on demand, and fault marker errors."""


pytest_plugins = ["pytester"]

EXPECTATIONS = '''
import json
import urllib.error
import urllib.request

import pytest


def call(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_met_expectations_pass(http_server):
    created = http_server.expect("POST", "/api/items", json={"name": "pen"},
                                 headers={"Content-Type": "application/json"}).respond(status=201, json={"id": 7})
    retried = http_server.expect("GET", "/api/status", times=2).respond_sequence([{"status": 503}, {"body": "up"}])
    http_server.expect("GET", "/api/echo").respond_with(lambda request: {"json": {"q": request.query["q"][0]}})
    assert call(http_server.url + "/api/items", json.dumps({"name": "pen"}).encode(),
                {"Content-Type": "application/json"}) == (201, b'{"id": 7}')
    assert call(http_server.url + "/api/status") == (503, b"")
    assert call(http_server.url + "/api/status") == (200, b"up")
    assert call(http_server.url + "/api/echo?q=hi") == (200, b'{"q": "hi"}')
    assert (created.hits, retried.hits) == (1, 2)


def test_ordered_expectations_in_order_pass(http_server):
    http_server.expect("POST", "/login", ordered=True, times=1).respond(json={"token": "t"})
    http_server.expect("GET", "/data", ordered=True).respond(body="rows")
    assert call(http_server.url + "/login", b"") == (200, b'{"token": "t"}')
    assert call(http_server.url + "/data") == (200, b"rows")


def test_a_one_shot_expectation_asked_twice_fails(http_server):
    http_server.expect("GET", "/token", times=1).respond(body="once")
    assert call(http_server.url + "/token") == (200, b"once")
    call(http_server.url + "/token")


def test_an_unmet_expectation_fails(http_server):
    http_server.expect("GET", "/api/users").respond(json=[])
    http_server.expect("POST", "/api/orders", body_contains="widget")
    call(http_server.url + "/api/users")


def test_an_out_of_order_request_fails(http_server):
    http_server.expect("GET", "/first", ordered=True)
    http_server.expect("GET", "/second", ordered=True)
    status, body = call(http_server.url + "/second")
    assert status == 500
    call(http_server.url + "/first")


def test_a_near_miss_is_in_the_report(http_server):
    http_server.route("/api/users", method="POST", match_headers={"Authorization": "Bearer *"}, status=201)
    status, _ = call(http_server.url + "/api/users")
    assert status == 201


def test_a_server_error_fails_the_test(http_server):
    http_server.expect("GET", "/boom").respond_with(lambda request: 1 / 0)
    status, _ = call(http_server.url + "/boom")
    assert status == 500


@pytest.mark.testbed_allow_errors
def test_a_server_error_provoked_on_purpose_passes(http_server):
    http_server.expect("GET", "/boom").respond_with(lambda request: 1 / 0)
    status, _ = call(http_server.url + "/boom")
    assert status == 500
'''


def test_expectations_near_misses_and_server_errors_as_a_user_meets_them(pytester):
    pytester.makepyfile(test_api=EXPECTATIONS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rf", timeout=120)
    result.assert_outcomes(passed=3, failed=5)
    out = result.stdout.str()
    # One-shot: the second request matched nothing, and the failure says why, naming the expectation.
    result.stdout.fnmatch_lines([
        "*test_a_one_shot_expectation_asked_twice_fails*",
        "*http: 1 problem(s) with the expected requests:*",
        "*unexpected: no route or expectation matches GET /token*",
        "*expectation #1 GET /token (times=1): already answered its 1 request(s)*",
    ])
    # Unmet: the failure names the expectation that never matched, not the one that did.
    result.stdout.fnmatch_lines(["*unmet: expectation #2 POST /api/orders with body containing 'widget': "
                                 "0 of at least 1 request(s) arrived*"])
    assert "unmet: expectation #1 GET /api/users" not in out
    # Out of order: both expectations named.
    result.stdout.fnmatch_lines(["*unexpected: GET /second matched expectation #2 GET /second [[]ordered[]] out of "
                                 "order: expectation #1 GET /first [[]ordered[]] is declared before it and is not "
                                 "met yet*"])
    # A near miss: the test's own assertion fails, and the report's testbed section says what differed.
    result.stdout.fnmatch_lines([
        "*- testbed -*",
        "seed: 0 *",
        "http: no route or expectation matches GET /api/users",
        "closest:",
        "  route POST /api/users: method GET is not POST; header authorization is missing (wanted 'Bearer *')",
    ])
    # A server error: the test fails with the traceback, and the marked twin passes.
    result.stdout.fnmatch_lines([
        "*1 error(s) inside the testbed's servers during this test (mark the test "
        "@pytest.mark.testbed_allow_errors if it provokes them on purpose):*",
        "*ZeroDivisionError: division by zero*",
    ])
    result.stdout.fnmatch_lines(["FAILED test_api.py::test_a_server_error_fails_the_test - *"])
    assert "test_a_server_error_provoked_on_purpose_passes FAILED" not in out


def test_a_test_using_only_http_server_starts_only_http(pytester):
    pytester.makeconftest('''
def pytest_sessionfinish(session):
    from testbed import pytest_plugin

    for bed in pytest_plugin._state["beds"].values():
        print("\\nstarted:", ",".join(bed.started))
''')
    pytester.makepyfile(test_one='''
import urllib.request

def test_http_only(http_server):
    http_server.route("/x", body="x")
    assert urllib.request.urlopen(http_server.url + "/x", timeout=10).read() == b"x"
''', test_two='''
import smtplib

def test_then_smtp(smtp_server):
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.sendmail("bob@example.test", ["alice@example.test"], "Subject: hi\\r\\n\\r\\nhi\\r\\n")
    assert len(smtp_server.wait_for(1)) == 1
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "test_one.py", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["started: http"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "test_one.py", "test_two.py", timeout=120)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["started: http,smtp"])


def test_fault_marker_errors_name_the_marker_the_test_and_what_is_missing(pytester):
    pytester.makepyfile(test_marked='''
import pytest

@pytest.mark.fault(server="http", action="reply", status=503)
def test_no_stage(http_server):
    pass

@pytest.mark.fault(on="request", status=503)
def test_no_server_no_action(http_server):
    pass

@pytest.mark.fault(server="gopher", action="reset")
def test_unknown_server(http_server):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*@pytest.mark.fault on test_marked.py::test_no_stage: fault.on: expected a value (missing; 'reply' has no "
        "default stage): a stage where a http 'reply' fault applies: request",
        "*@pytest.mark.fault on test_marked.py::test_no_server_no_action: fault.server: expected a value (server and "
        "action are required; missing: server, action)",
        "*@pytest.mark.fault on test_marked.py::test_unknown_server: fault.server: expected one of dns, ftp, http, "
        "imap, pop3, smtp, got 'gopher'",
    ])
    out = result.stdout.str()
    assert "faults.add()" not in out and "got 'connect'" not in out and "echo" not in out
