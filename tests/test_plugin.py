"""The pytest face as a user meets it: fixtures, markers, options and failure reports, in a fresh pytest."""


pytest_plugins = ["pytester"]

USER_TESTS = '''
import urllib.error
import urllib.request

import pytest
import pytest_twisted


def test_sync_client(http_server):
    http_server.route("/hello", json={"hi": 1})
    assert urllib.request.urlopen(http_server.url + "/hello", timeout=10).read() == b'{"hi": 1}'
    assert [r.path for r in http_server.requests] == ["/hello"]


@pytest_twisted.inlineCallbacks
def test_in_the_reactor(http_server):
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    http_server.route("/t", body=b"from the reactor")
    response = yield Agent(reactor).request(b"GET", (http_server.url + "/t").encode())
    body = yield readBody(response)
    assert body == b"from the reactor"
    requests = yield http_server.wait_for(1, timeout=5)
    assert requests[0].path == "/t"


@pytest_twisted.ensureDeferred
async def test_async_in_the_reactor(http_server):
    from twisted.internet import reactor
    from twisted.web.client import Agent

    response = await Agent(reactor).request(b"GET", (http_server.url + "/none").encode())
    assert response.code == 404


@pytest.mark.fault(server="http", on="request", action="reply", status=503, times=1)
def test_fault_marker(http_server):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(http_server.url + "/x", timeout=10)
    assert info.value.code == 503
    with pytest.raises(urllib.error.HTTPError) as info:  # times=1: the second answer is the server's own
        urllib.request.urlopen(http_server.url + "/x", timeout=10)
    assert info.value.code == 404


def test_state_is_reset_between_tests(http_server, testbed):
    assert http_server.requests == []
    assert testbed.faults.rules == []
    assert len(testbed.journal) == 0


def test_that_fails(http_server):
    urllib.request.urlopen(http_server.url + "/missing", timeout=10)
'''


def run(pytester, *args):
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def check_outcome(result):
    result.assert_outcomes(passed=5, failed=1)
    # The failing test's report carries the seed and the journal tail.
    result.stdout.fnmatch_lines([
        "*testbed*",
        "seed: 0  (replay with --testbed-seed 0)",
        "journal tail:",
        # The request and its reply are one event.
        '*"kind":"command","server":"http"*"path":"/missing"*"status":404*',
    ])


def test_sync_twisted_and_fault_tests_on_the_default_reactor(pytester):
    check_outcome(run(pytester))


def test_the_same_under_the_asyncio_reactor(pytester):
    check_outcome(run(pytester, "--reactor=asyncio"))


def test_a_conftest_scenario_override_options_and_seed(pytester):
    pytester.makeconftest('''
import pytest

@pytest.fixture
def testbed_scenario():
    return {"seed": 99, "servers": {"http": {"tls_listen": "", "routes": [{"path": "/c", "body": "from conftest"}]}}}
''')
    pytester.makepyfile(test_scenario='''
import urllib.request

def test_override(http_server, testbed):
    assert urllib.request.urlopen(http_server.url + "/c", timeout=10).read() == b"from conftest"
    assert http_server.https_url is None
    assert testbed.seed == 7

def test_same_bed(testbed):
    assert testbed.seed == 7
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--testbed-seed", "7", timeout=120)
    result.assert_outcomes(passed=2)


def test_a_scenario_file_option(pytester):
    pytester.path.joinpath("s.toml").write_text('[servers.http]\ntls_listen = ""\n[[servers.http.routes]]\npath = "/f"\nbody = "from file"\n')
    pytester.makepyfile(test_file='''
import urllib.request

def test_file(http_server):
    assert urllib.request.urlopen(http_server.url + "/f", timeout=10).read() == b"from file"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--testbed-scenario", "s.toml", timeout=120)
    result.assert_outcomes(passed=1)


def test_a_bad_scenario_fails_the_test_with_the_key_named(pytester):
    pytester.makepyfile(test_bad='''
import pytest

@pytest.fixture
def testbed_scenario():
    return {"servers": {"http": {"listen": "nonsense"}}}

def test_bad(http_server):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ScenarioError: testbed_scenario fixture: servers.http.listen: expected a Twisted endpoint string*"])


def test_a_start_that_fails_once_is_retried_and_reported(pytester):
    pytester.makeconftest('''
import pytest
from testbed.servers.http.server import HTTPServer

calls = []
original = HTTPServer.start

def flaky_start(self):
    calls.append(1)
    if len(calls) == 1:
        raise OSError("simulated bind failure")
    return original(self)

HTTPServer.start = flaky_start
''')
    pytester.makepyfile(test_retry='''
import urllib.request

def test_served(http_server):
    http_server.route("/ok", body=b"ok")
    assert urllib.request.urlopen(http_server.url + "/ok", timeout=10).read() == b"ok"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*TestbedStartWarning: the testbed for <scenario> started on the second try*",
                                 "*OSError: simulated bind failure*"])
