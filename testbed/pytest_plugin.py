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

_state: dict = {"reactor": None, "thread": None, "beds": {}}


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
    from testbed import config as config_module

    seed = config.getoption("testbed_seed")
    key = _scenario_key(scenario, seed)
    bed = _state["beds"].get(key)
    if bed is None:
        if isinstance(scenario, dict):
            parsed = config_module.from_dict(scenario, source="testbed_scenario fixture", base_dir=str(config.rootpath))
        else:
            parsed = config_module.coerce(scenario)
        from twisted.internet.threads import blockingCallFromThread

        bed = _new_bed(config, parsed, seed)
        try:
            blockingCallFromThread(_state["reactor"], bed.start)
        except Exception:
            # Starting binds a dozen ephemeral ports (DNS pairs UDP with TCP's number):
            # try once more on fresh ports, and say loudly what went wrong the first time.
            import traceback
            import warnings

            first = traceback.format_exc()
            bed = _new_bed(config, parsed, seed)
            blockingCallFromThread(_state["reactor"], bed.start)
            warnings.warn(TestbedStartWarning(f"the testbed for {parsed.source} started on the second try; "
                                              f"the first failed with:\n{first}"))
        _state["beds"][key] = bed
        if bed.control is not None:
            capture = config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print(f"\ntestbed: control API and dashboard at {bed.control.url} ({parsed.source})", flush=True)
    return bed


def _new_bed(config, scenario, seed):
    """A testbed for ``scenario``, with the control API when ``--testbed-control`` asks for it."""
    from testbed.harness import Testbed

    bed = Testbed(scenario, reactor=_state["reactor"], seed=seed)
    if config.getoption("testbed_control"):
        from testbed import control
        from testbed.registry import EPHEMERAL

        control.attach(bed, scenario.control.listen or EPHEMERAL)
    return bed


class TestbedStartWarning(UserWarning):
    """A testbed needed a second try to start (the first failure's traceback is in the message)."""


@pytest.fixture
def testbed(request, testbed_scenario):
    """The running testbed for this test's scenario, reset, with this test's ``fault`` markers added."""
    url = request.config.getoption("testbed_url")
    if url:
        yield from _remote_testbed(request, url)
        return
    if _state["reactor"] is None:
        pytest.fail("testbed: the reactor thread is not running (is the plugin disabled?)")
    bed = _bed_for(request.config, testbed_scenario)
    bed.reset()
    for marker in request.node.iter_markers("fault"):
        if marker.args:
            pytest.fail("@pytest.mark.fault takes keyword arguments only, e.g. fault(server='http', action='reset')")
        bed.call(bed.faults.add, **marker.kwargs)
    request.node._testbed = bed
    yield bed


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


def _server_fixture(name: str, fixture_name: str):
    def fixture(testbed):
        return testbed[name]

    fixture.__name__ = fixture_name
    fixture.__doc__ = f"The running {name.upper()} server of the testbed (see testbed.servers.{name}.server)."
    return pytest.fixture(fixture, name=fixture_name)


def _register_server_fixtures() -> None:
    """One fixture per protocol that names one in the registry (``smtp_server``...)."""
    from testbed import registry

    for name, spec in registry.protocols().items():
        if spec.fixture:
            globals()[spec.fixture] = _server_fixture(name, spec.fixture)


_register_server_fixtures()


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
    lines.append("journal tail:")
    lines.extend("  " + to_json(e)[:400] for e in bed.journal.tail(25))
    report.sections.append(("testbed", "\n".join(lines)))
