"""The twistd face: the package installs with its plugin, and `twistd -n testbed` serves as configured."""

import json
import os
import pathlib
import re
import shutil
import signal
import site
import subprocess
import sys
import venv

import pytest
from _clients import CURL
from _daemon import TWISTD, Daemon, ephemeral

ROOT = pathlib.Path(__file__).parent.parent


def twistd(*args, cwd, timeout=20, python=sys.executable):
    return subprocess.run([python, *TWISTD, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def curl(*args):
    return subprocess.run([CURL, "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def test_twistd_help_documents_every_option(tmp_path):
    result = twistd("testbed", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--seed", "--journal", "--ca-out", "--ports-out", "--http", "--https", "--smtp",
                   "--smtps", "--pop3", "--pop3s", "--imap", "--imaps", "--ftp", "--dns"):
        assert option in result.stdout


def test_the_daemon_serves_a_scenario_writes_its_journal_and_ca_and_stops_cleanly(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('seed = 3\n[servers.http]\n[[servers.http.routes]]\npath = "/ping"\nbody = "pong"\n'
                        '[[faults]]\nserver = "http"\non = "request"\nmatch = { path = "/boom" }\n'
                        'action = "reply"\nstatus = 500\n')
    daemon = Daemon(tmp_path, "--config", str(scenario), "--journal", "journal.jsonl", "--ca-out", "ca.pem",
                    *ephemeral())
    try:
        # A server the file does not mention still runs: every server is listed.
        assert set(daemon.urls) == {"HTTP", "HTTPS", "SMTP", "SMTPS", "POP3", "POP3S", "IMAP", "IMAPS", "FTP",
                                    "DNS/TCP", "DNS/UDP"}, "".join(daemon.output)
        assert curl(daemon.urls["HTTP"] + "/ping").stdout == "pong"
        assert curl("-o", "/dev/null", "-w", "%{http_code}", daemon.urls["HTTP"] + "/boom").stdout == "500"
        assert curl("--cacert", str(tmp_path / "ca.pem"), daemon.urls["HTTPS"] + "/ping").stdout == "pong"
        assert daemon.ca == "ca.pem"
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


def private_network():
    """``unshare -rn``: a network namespace of the test's own, where the daemon's well-known ports are free.

    Where the kernel or a container forbids it, the machine's own network is
    used, and the well-known ports must be free there.
    """
    try:
        usable = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except FileNotFoundError:
        usable = False
    return ["unshare", "-rn"] if usable else []


WELL_KNOWN = {("http", "http"): 8080, ("http", "https"): 8443, ("smtp", "smtp"): 2525, ("smtp", "smtps"): 2465,
              ("pop3", "pop3"): 2110, ("pop3", "pop3s"): 2995, ("imap", "imap"): 2143, ("imap", "imaps"): 2993,
              ("ftp", "ftp"): 2121, ("dns", "dns/tcp"): 1053, ("dns", "dns/udp"): 1053,
              ("control", "control"): 2580}


def test_a_config_that_sets_no_listener_keeps_the_well_known_ports_in_ports_out(tmp_path):
    scenario = tmp_path / "users-and-faults.toml"
    scenario.write_text('[users]\n"carol@example.test" = "pw"\n[servers.smtp]\nmax_recipients = 3\n'
                        '[[faults]]\nserver = "smtp"\non = "RCPT"\naction = "reply"\ncode = 451\n')
    daemon = Daemon(tmp_path, "--config", str(scenario), "--ports-out", "ports.json", wrap=private_network())
    try:
        assert daemon.urls, "".join(daemon.output)
        ports = json.loads((tmp_path / "ports.json").read_text())
    finally:
        daemon.stop()
    listeners = ports["listeners"]
    assert {(l["server"], l["label"]): l["port"] for l in listeners} == WELL_KNOWN
    assert all(l["host"] == "127.0.0.1" for l in listeners)
    assert all(l["protocol"] == l["server"] for l in listeners if l["server"] != "control")
    assert {l["url"] for l in listeners if l["tls"]} == {"https://127.0.0.1:8443", "smtps://127.0.0.1:2465",
                                                        "pop3s://127.0.0.1:2995", "imaps://127.0.0.1:2993"}
    assert ports["seed"] == 0 and ports["ca"] == daemon.ca
    assert pathlib.Path(ports["ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_tcp_0_in_a_config_still_asks_for_a_free_port(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('[servers.http]\nlisten = "tcp:0:interface=127.0.0.1"\ntls_listen = ""\n')
    daemon = Daemon(tmp_path, "--config", str(scenario), "--ports-out", "ports.json", *ephemeral("http", "https"))
    try:
        listeners = json.loads((tmp_path / "ports.json").read_text())["listeners"]
    finally:
        daemon.stop()
    (http,) = [l for l in listeners if l["server"] == "http"]
    assert http["port"] not in (0, 8080) and http["url"] == daemon.urls["HTTP"]


def test_the_ready_output_names_the_ca_and_get_slash_lists_the_servers(tmp_path):
    daemon = Daemon(tmp_path, *ephemeral())
    try:
        assert daemon.ca, "".join(daemon.output)
        page = curl("--cacert", daemon.ca, daemon.urls["HTTPS"] + "/")
    finally:
        daemon.stop()
    assert page.returncode == 0, page.stderr
    for label, url in daemon.urls.items():
        assert f"<td>{url}</td>" in page.stdout, label
    assert daemon.ca in page.stdout


def in_use(tmp_path, *args, busy_option="http", scenario=None):
    """twistd run with one of its ports held by another socket: (its stderr, its exit code, the port)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if scenario is not None:
            scenario.write_text(scenario.read_text().replace("PORT", str(port)))
            args = (*args, "--config", str(scenario))
        else:
            args = (*args, f"--{busy_option}", f"tcp:{port}:interface=127.0.0.1")
        result = twistd("-n", "--pidfile", "", "testbed", *ephemeral(busy_option), *args, cwd=tmp_path)
    return result, port


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path):
    result, port = in_use(tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"twisted-testbed: cannot listen on 127.0.0.1:{port} (Address already in use), asked for by --http"]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_port_in_use_names_the_scenario_key_that_asked_for_it(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('[servers.smtp]\ntls_listen = "tcp:PORT:interface=127.0.0.1"\n')
    result, port = in_use(tmp_path, busy_option="smtps", scenario=scenario)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"twisted-testbed: cannot listen on 127.0.0.1:{port} (Address already in use), "
        f"asked for by servers.smtp.tls_listen in {scenario}"]


def without_pythonpath() -> dict:
    """The environment for the installed copy: PYTHONPATH (a source tree) would shadow what was installed."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the package installed from the source tree, not editable.

    Its dependencies come from the interpreter running the suite, whether that
    is a virtualenv or the system's: a .pth file lists that interpreter's
    site directories (``system_site_packages`` would give the base
    interpreter's, which a virtualenv's packages are not in).
    """
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    pathlib.Path(purelib, "suite-site-packages.pth").write_text("".join(f"{d}\n" for d in ours if os.path.isdir(d)))
    source = tmp_path_factory.mktemp("src") / "twisted-testbed"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__",
                                                                 ".pytest_cache", "dropin.cache"))
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(source)],
                             timeout=300, capture_output=True, text=True, env=without_pythonpath())
    assert install.returncode == 0, install.stderr
    return python


def test_a_non_editable_install_carries_the_twistd_plugin(installed, tmp_path):
    where = subprocess.run([installed, "-c", "import testbed, twisted.plugins.testbed_plugin as p; "
                                             "print(testbed.__file__); print(p.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60, env=without_pythonpath())
    assert where.returncode == 0, where.stderr
    package, plugin = where.stdout.split()
    venv_root = str(installed.parent.parent)
    assert package.startswith(venv_root) and plugin.startswith(venv_root), where.stdout
    result = subprocess.run([installed, *TWISTD, "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env=without_pythonpath())
    assert re.search(r"^\s+testbed\s", result.stdout, re.M), result.stdout


def test_a_non_editable_install_carries_the_dashboard(installed, tmp_path):
    where = subprocess.run([installed, "-c", "import os, testbed.control.dashboard as d; print(d.FOLDER); "
                                             "print(sorted(os.listdir(d.FOLDER)))"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60, env=without_pythonpath())
    folder, names = where.stdout.splitlines()
    assert folder.startswith(str(installed.parent.parent)), where.stdout + where.stderr
    assert names == str(["app.css", "app.js", "index.html"])
