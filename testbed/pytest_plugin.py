"""The pytest face: fixtures per server, the ``fault`` marker, scenario options, failure reports.

The reactor (the one ``--reactor`` names) runs in a daemon thread for the
whole session. pytest-twisted then runs its inlineCallbacks/ensureDeferred
tests in that thread, while plain tests run in the main thread and reach the
servers through ``blockingCallFromThread``. Nothing here imports a module that
installs a reactor: that happens in ``pytest_configure``.
"""

from __future__ import annotations

import json
import os

import pytest

_state: dict = {"reactor": None, "thread": None, "beds": {}, "announced": set()}

#: The marker a test carries when it provokes exceptions inside a server on purpose.
ALLOW_ERRORS = "testbed_allow_errors"


def pytest_addoption(parser):
    group = parser.getgroup("testbed", "twisted-testbed fake servers")
    group.addoption("--testbed-scenario", metavar="FILE", default=None,
                    help="TOML scenario for the testbed fixtures (default: every server on ephemeral ports).")
    group.addoption("--testbed-seed", metavar="N", type=int, default=None,
                    help="Seed for every fault decision (default: the scenario's).")
    group.addoption("--testbed-control", action="store_true", default=False,
                    help="Serve the control API (and print its URL) for each testbed, on the scenario's "
                         "[control] listen or a free loopback port.")
    group.addoption("--testbed-url", metavar="URL", default=None,
                    help="Use the testbed daemon whose control API is at URL instead of starting servers; each "
                         "test gets a session of its own (token, if any, from $TESTBED_TOKEN). See docs/remote.md.")


def _install_reactor(name: str) -> None:
    if name == "asyncio":
        from twisted.internet import asyncioreactor

        installer = asyncioreactor.install
    elif name == "default":
        from twisted.internet import default

        installer = default.install
    else:
        return  # a reactor we do not know (qt5...): pytest-twisted installs it
    from twisted.internet.error import ReactorAlreadyInstalledError

    try:
        installer()
    except ReactorAlreadyInstalledError:
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "fault(**rule): add a fault rule (the keys of a [[faults]] entry) for this test")
    config.addinivalue_line("markers", f"{ALLOW_ERRORS}: this test provokes exceptions inside a server on purpose "
                                       "(without it, such an error fails the test)")
    reactor_name = config.getoption("reactor", "default") if config.pluginmanager.hasplugin("twisted") else "default"
    _install_reactor(reactor_name)
    from twisted.internet import reactor

    from testbed import runtime

    if reactor.running:
        return
    try:
        thread = runtime.start_reactor_thread(reactor)
    except RuntimeError as e:
        raise pytest.UsageError(f"testbed: {e}") from None
    _state.update(reactor=reactor, thread=thread)


def pytest_unconfigure(config):
    reactor, thread = _state["reactor"], _state["thread"]
    if reactor is None:
        return
    from twisted.internet.threads import blockingCallFromThread

    for bed in list(_state["beds"].values()):
        try:
            blockingCallFromThread(reactor, bed.stop)
        except Exception:
            pass
    _state["beds"].clear()
    from testbed import runtime

    runtime.stop_reactor_thread(reactor, thread)
    _state.update(reactor=None, thread=None)


def _runs_in_reactor(function) -> bool:
    return getattr(function, "_pytest_twisted_mark", None) is not None


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run plain tests in the main thread: pytest-twisted would run every test in the reactor's."""
    import inspect

    function = pyfuncitem.obj
    if (_runs_in_reactor(function) or not pyfuncitem.config.pluginmanager.hasplugin("twisted")
            or inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    result = function(**args)
    from twisted.internet.defer import Deferred

    if isinstance(result, Deferred) and _state["reactor"] is not None:
        from twisted.internet.threads import blockingCallFromThread

        blockingCallFromThread(_state["reactor"], lambda: result)
    return True


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def testbed_scenario(request):
    """The scenario the testbed fixtures run: a dict, a path, or None for the default.

    Override it in a conftest.py or a test module to change server settings.
    """
    return request.config.getoption("testbed_scenario")


def _scenario_key(scenario, seed) -> str:
    if scenario is None or isinstance(scenario, (str, os.PathLike)):
        return json.dumps(["path", os.fspath(scenario) if scenario else None, seed])
    return json.dumps(["data", scenario, seed], sort_keys=True, default=repr)


def _bed_for(config, scenario):
    """The testbed of this scenario (and seed), built once per session; its servers start on demand."""
    from testbed import config as config_module

    seed = config.getoption("testbed_seed")
    key = _scenario_key(scenario, seed)
    bed = _state["beds"].get(key)
    if bed is None:
        if isinstance(scenario, dict):
            parsed = config_module.from_dict(scenario, source="testbed_scenario fixture", base_dir=str(config.rootpath))
        else:
            parsed = config_module.coerce(scenario)
        bed = _state["beds"][key] = _new_bed(config, parsed, seed)
    return key, bed

def _new_bed(config, scenario, seed):
    """A testbed for ``scenario``, with the control API when ``--testbed-control`` asks for it."""
    from testbed.harness import Testbed

    bed = Testbed(scenario, reactor=_state["reactor"], seed=seed)
    if config.getoption("testbed_control"):
        from testbed import control
        from testbed.registry import EPHEMERAL

        control.attach(bed, scenario.control.listen or EPHEMERAL)
    return bed


def _started(config, scenario, only):
    """The testbed with the servers ``only`` names (None: all of them) listening, and its control API."""
    key, bed = _bed_for(config, scenario)
    servers = bed.servers.values() if only is None else [bed[name] for name in only]
    if all(server.running for server in servers):
        return bed
    from twisted.internet.threads import blockingCallFromThread

    try:
        blockingCallFromThread(_state["reactor"], bed.start, only)
    except Exception:
        # Starting binds ephemeral ports (DNS pairs UDP with TCP's number): try once more on
        # fresh ports in a fresh testbed, and say loudly what went wrong the first time.
        import traceback
        import warnings

        first = traceback.format_exc()
        bed = _state["beds"][key] = _new_bed(config, bed.scenario, bed.seed)
        blockingCallFromThread(_state["reactor"], bed.start, only)
        warnings.warn(TestbedStartWarning(f"the testbed for {bed.scenario.source} started on the second try; "
                                          f"the first failed with:\n{first}"))
    if bed.control is not None and key not in _state["announced"]:
        _state["announced"].add(key)
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\ntestbed: control API and dashboard at {bed.control.url} ({bed.scenario.source})", flush=True)
    return bed


class TestbedStartWarning(UserWarning):
    """A testbed needed a second try to start (the first failure's traceback is in the message)."""


def _for_this_test(request, scenario, only):
    """The running testbed (servers in ``only`` started), reset once per test, with this test's fault markers."""
    if _state["reactor"] is None:
        pytest.fail("testbed: the reactor thread is not running (is the plugin disabled?)")
    bed = _started(request.config, scenario, only)
    node = request.node
    if getattr(node, "_testbed", None) is bed:
        return bed
    bed.reset()
    for marker in node.iter_markers("fault"):
        label = f"@pytest.mark.fault on {node.nodeid}"
        if marker.args:
            pytest.fail(f"{label}: takes keyword arguments only, e.g. fault(server='http', action='reset')",
                        pytrace=False)
        from testbed.schema import ScenarioError

        try:
            rule = bed.rule(label, **marker.kwargs)
        except ScenarioError as e:
            pytest.fail(str(e), pytrace=False)
        bed.call(bed.faults.add, rule)
    node._testbed = bed
    return bed


def _remote_testbed(request, url):
    """A session of the daemon at ``url`` for this one test, closed (and so reset) after it."""
    from testbed.remote import RemoteTestbed

    bed = RemoteTestbed(url, token=os.environ.get("TESTBED_TOKEN")).open_session()
    try:
        for marker in request.node.iter_markers("fault"):
            bed.faults.add(**marker.kwargs)
        yield bed
    finally:
        bed.close()


@pytest.fixture
def testbed(request, testbed_scenario):
    """The running testbed for this test's scenario (every server started), reset, with this test's ``fault`` markers.

    With ``--testbed-url`` it is a session of that daemon instead.
    """
    url = request.config.getoption("testbed_url")
    if url:
        yield from _remote_testbed(request, url)
        return
    yield _for_this_test(request, testbed_scenario, None)


def _server_fixture(name: str, fixture_name: str):
    def fixture(request, testbed_scenario):
        if request.config.getoption("testbed_url"):
            return request.getfixturevalue("testbed")[name]
        return _for_this_test(request, testbed_scenario, [name])[name]

    fixture.__name__ = fixture_name
    fixture.__doc__ = (f"The running {name.upper()} server of the testbed (see testbed.servers.{name}.server); "
                       "it starts on first use, once per scenario per session.")
    return pytest.fixture(fixture, name=fixture_name)


def _register_server_fixtures() -> None:
    """One fixture per protocol that names one in the registry (``smtp_server``...)."""
    from testbed import registry

    for name, spec in registry.protocols().items():
        if spec.fixture:
            globals()[spec.fixture] = _server_fixture(name, spec.fixture)


_register_server_fixtures()


# -- after each test: server errors and expectations -----------------------------------


def _server_errors(bed) -> list[dict]:
    from testbed.journal import ERROR

    return bed.journal.query(ERROR, internal=True)


def _describe_error(event: dict) -> str:
    details = ", ".join(f"{k}={v!r}" for k, v in event.items()
                        if k not in ("seq", "t", "kind", "server", "conn", "error", "internal", "traceback"))
    return (f"{event['server']} (connection {event['conn']}): {event.get('error')}" + (f" ({details})" if details else "")
            + "\n" + event.get("traceback", "").rstrip())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that passed still fails on an exception inside a server, or on requests its expectations did not meet."""
    result = yield
    bed = getattr(item, "_testbed", None)
    if bed is None:
        return result
    problems = []
    errors = _server_errors(bed)
    if errors and item.get_closest_marker(ALLOW_ERRORS) is None:
        problems.append(f"{len(errors)} error(s) inside the testbed's servers during this test (mark the test "
                        f"@pytest.mark.{ALLOW_ERRORS} if it provokes them on purpose):\n"
                        + "\n".join(_describe_error(e) for e in errors))
    for server in map(bed.server, bed.started):
        if getattr(server, "expectations", None):
            try:
                server.verify()
            except AssertionError as e:
                problems.append(str(e))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    return result


# -- failure reports -------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    bed = getattr(item, "_testbed", None)
    if bed is None or report.passed or call.when != "call":
        return
    from testbed.journal import to_json

    lines = [f"seed: {bed.seed}  (replay with --testbed-seed {bed.seed})"]
    fired = bed.journal.faults()
    if fired:
        lines.append(f"faults fired: {len(fired)}")
    from testbed.journal import ERROR, UNEXPECTED

    for event in bed.journal.query(UNEXPECTED):
        lines.append(f"{event['server']}: {event['why']}")
    for event in bed.journal.query(ERROR, internal=True):
        lines.append("server error: " + _describe_error(event))
    lines.append("journal tail:")
    lines.extend("  " + to_json(e)[:400] for e in bed.journal.tail(25))
    report.sections.append(("testbed", "\n".join(lines)))
