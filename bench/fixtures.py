"""Per-test cost of the pytest fixtures: http_server against pytest-httpserver, smtp_server against smtpdfix.

Run by hand, never in CI:  python bench/fixtures.py [--tests 300] [--rounds 3]

Each side is a generated test file of N one-request (or one-message) tests,
run by pytest in a subprocess; pytest's own per-test timing (setup + call +
teardown, the durations pytest puts in its reports) is summed per test. The sides alternate,
round after round, and the ratios come from that one run.
"""

from __future__ import annotations

import os
import sys

# bench/ holds http.py and friends, which shadow the standard library when bench/ is sys.path[0]:
# put the repository root there instead (it is also where this checkout's testbed package lives).
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path[0] = _ROOT

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import json  # noqa: E402

HEADER = "import smtplib\nimport urllib.request\n\nMESSAGE = 'Subject: hi\\r\\n\\r\\nhello\\r\\n'\n\n"

#: side -> (the one test's body, the plugins to turn off so only this side's fixture runs).
SIDES = {
    "testbed http": ('''
def test_{i}(http_server):
    http_server.route("/hello", body=b"hello, world\\n")
    assert urllib.request.urlopen(http_server.url + "/hello", timeout=10).read() == b"hello, world\\n"
''', ("no:pytest_httpserver", "no:smtpd")),
    "pytest-httpserver": ('''
def test_{i}(httpserver):
    httpserver.expect_request("/hello").respond_with_data(b"hello, world\\n")
    assert urllib.request.urlopen(httpserver.url_for("/hello"), timeout=10).read() == b"hello, world\\n"
''', ("no:testbed", "no:smtpd")),
    "testbed smtp": ('''
def test_{i}(smtp_server):
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.sendmail("bob@example.test", ["alice@example.test"], MESSAGE)
    assert len(smtp_server.messages) == 1
''', ("no:pytest_httpserver", "no:smtpd")),
    "smtpdfix": ('''
def test_{i}(smtpd):
    with smtplib.SMTP(smtpd.hostname, smtpd.port, timeout=10) as client:
        client.sendmail("bob@example.test", ["alice@example.test"], MESSAGE)
    assert len(smtpd.messages) == 1
''', ("no:testbed",)),
}

#: A conftest.py that writes pytest's own per-phase durations, summed per test, to durations.json.
CONFTEST = '''
import json

_durations = {}


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    with open("durations.json", "w") as f:
        json.dump(list(_durations.values()), f)
'''

PAIRS = (("testbed http", "pytest-httpserver"), ("testbed smtp", "smtpdfix"))


def run_side(folder: str, side: str, tests: int) -> list[float]:
    """Per-test seconds (setup + call + teardown as pytest timed them) for one pytest run of ``side``."""
    body, disabled = SIDES[side]
    name = "test_" + side.replace(" ", "_").replace("-", "_") + ".py"
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(HEADER + "".join(body.format(i=i) for i in range(tests)))
    with open(os.path.join(folder, "conftest.py"), "w") as f:
        f.write(CONFTEST)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    for plugin in disabled:
        command[4:4] = ["-p", plugin]
    # Bytecode cached as on a developer's machine (the first round fills it), in a private folder.
    env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONPYCACHEPREFIX=os.path.join(folder, "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{side}: pytest failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with open(os.path.join(folder, "durations.json")) as f:
        durations = json.load(f)
    if len(durations) != tests:
        sys.exit(f"{side}: expected {tests} timed tests, got {len(durations)}")
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300, help="tests per file (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of every side (default 3)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for pair in PAIRS:
                # Alternate which side of a pair goes first, so neither always runs on a warmer machine.
                for side in (pair if round_ % 2 == 0 else pair[::-1]):
                    print(f"round {round_ + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                    times[side].extend(run_side(folder, side, args.tests))
    print(f"{args.tests} tests x {args.rounds} rounds; ms per test (pytest's setup+call+teardown)")
    print(f"{'fixture':<20} {'mean':>8} {'median':>8} {'first':>8}")
    for side, values in times.items():
        firsts = values[::args.tests]
        print(f"{side:<20} {1000 * statistics.fmean(values):8.2f} {1000 * statistics.median(values):8.2f} "
              f"{1000 * statistics.fmean(firsts):8.1f}")
    for ours, peer in PAIRS:
        ratio = statistics.fmean(times[ours]) / statistics.fmean(times[peer])
        median = statistics.median(times[ours]) / statistics.median(times[peer])
        print(f"{ours} / {peer}: {ratio:.2f}x (mean per test), {median:.2f}x (median)")


if __name__ == "__main__":
    main()
