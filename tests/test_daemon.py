"""The twistd face: the package installs with its plugin, and `twistd -n testbed` serves as configured."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import venv

import pytest
from _daemon import TWISTD, Daemon

ROOT = pathlib.Path(__file__).parent.parent


def twistd(*args, cwd, timeout=20, python=sys.executable):
    return subprocess.run([python, *TWISTD, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def test_twistd_help_documents_every_option(tmp_path):
    result = twistd("testbed", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--seed", "--journal", "--ca-out", "--http", "--https", "--smtp", "--smtps",
                   "--pop3", "--pop3s", "--imap", "--imaps", "--ftp", "--dns"):
        assert option in result.stdout


def test_the_daemon_serves_a_scenario_writes_its_journal_and_ca_and_stops_cleanly(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('seed = 3\n[servers.http]\n[[servers.http.routes]]\npath = "/ping"\nbody = "pong"\n'
                        '[[faults]]\nserver = "http"\non = "request"\nmatch = { path = "/boom" }\n'
                        'action = "reply"\nstatus = 500\n')
    daemon = Daemon(tmp_path, "--config", str(scenario), "--journal", "journal.jsonl", "--ca-out", "ca.pem",
                    "--http", "tcp:0:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1")
    try:
        # An empty [servers.X] table still runs X, on ephemeral ports: every server is listed.
        assert set(daemon.urls) == {"HTTP", "HTTPS", "SMTP", "SMTPS", "POP3", "POP3S", "IMAP", "IMAPS", "FTP",
                                    "DNS/TCP", "DNS/UDP"}, "".join(daemon.output)
        assert curl(daemon.urls["HTTP"] + "/ping").stdout == "pong"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", daemon.urls["HTTP"] + "/boom").stdout == "500"
        assert curl("--cacert", str(tmp_path / "ca.pem"), daemon.urls["HTTPS"] + "/ping").stdout == "pong"
    finally:
        code = daemon.stop()
    # twistd ends a Ctrl-C by re-raising SIGINT, the POSIX way to say "stopped by the signal".
    assert code in (0, -signal.SIGINT), "".join(daemon.output)
    assert "Server Shut Down." in "".join(daemon.output)
    events = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["path"] for e in events if e["kind"] == "command"] == ["/ping", "/boom", "/ping"]
    assert [e["seed"] for e in events if e["kind"] == "fault"] == [3]


def test_a_bad_scenario_stops_twistd_before_anything_listens(tmp_path):
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[servers.http]\nlisten = "tcp:0:interface=127.0.0.1"\ntimeout = 3\n')
    result = twistd("-n", "--pidfile", "", "testbed", "--config", str(scenario), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{scenario}: servers.http.timeout: expected a known key" in result.stdout + result.stderr


def test_a_bad_endpoint_option_is_named(tmp_path):
    result = twistd("-n", "--pidfile", "", "testbed", "--http", "tcp:notaport", cwd=tmp_path)
    assert result.returncode != 0
    assert "--http: expected a Twisted endpoint string" in result.stdout + result.stderr


def test_a_port_in_use_stops_twistd_with_the_reason(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = twistd("-n", "--pidfile", "", "testbed", "--http", f"tcp:{port}:interface=127.0.0.1",
                        "--https", "", cwd=tmp_path)
    assert result.returncode != 0
    assert "Address already in use" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the package installed from the source tree, not editable."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, system_site_packages=True, with_pip=True)
    python = where / "bin" / "python"
    source = tmp_path_factory.mktemp("src") / "twisted-testbed"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__",
                                                                 ".pytest_cache", "dropin.cache"))
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                              str(source)], timeout=300, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return python


def test_a_non_editable_install_carries_the_twistd_plugin(installed, tmp_path):
    where = subprocess.run([installed, "-c", "import testbed, twisted.plugins.testbed_plugin as p; "
                                             "print(testbed.__file__); print(p.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60,
                           # A PYTHONPATH pointing at a source tree (a worktree's test run) would shadow the install.
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    package, plugin = where.stdout.split()
    venv_root = str(installed.parent.parent)
    assert package.startswith(venv_root) and plugin.startswith(venv_root), where.stdout
    result = twistd("--help", cwd=tmp_path, python=installed)
    assert re.search(r"^\s+testbed\s", result.stdout, re.M), result.stdout
