"""The daemon's control API: --control, the ready output, and the scenario it exports running the same again."""

import json

import pytest
from twisted.python import usage

from _control import Api
from _daemon import Daemon, ephemeral
from testbed.tap import Options

SCENARIO = """seed = 5
[servers.http]
[[servers.http.routes]]
path = "/ping"
body = "pong"
[servers.dns]
records = { "app.example.test" = { A = "10.1.2.3" } }
[servers.pop3]
enabled = false
[servers.imap]
enabled = false
[[faults]]
server = "smtp"
on = "RCPT"
match = { rcpt = "*@bounce.test" }
action = "reply"
code = 550
"""


def control_url(daemon):
    assert daemon.control, "no control API line in:\n" + "".join(daemon.output)
    return daemon.control


def test_the_exported_scenario_runs_the_same_servers_routes_records_and_faults(tmp_path):
    (tmp_path / "s.toml").write_text(SCENARIO)
    first = Daemon(tmp_path, "--config", "s.toml", "--ports-out", "ports.json", *ephemeral("pop3", "pop3s", "imap",
                                                                                        "imaps"))
    try:
        api = Api(control_url(first) + "/api/v1")
        listed = json.loads((tmp_path / "ports.json").read_text())["listeners"]
        assert {"server": "control", "protocol": "http", "label": "control", "host": "127.0.0.1",
                "port": int(first.control.rsplit(":", 1)[1]), "url": first.control + "/", "tls": False} in listed
        assert api.post("/faults", {"server": "http", "on": "request", "action": "reply", "status": 503})[0] == 200
        assert api.post("/servers/http/routes", {"path": "/added", "body": "later"})[0] == 200
        exported = api.get("/scenario")[1]
        status, toml = api.get("/scenario?format=toml")
        assert status == 200
    finally:
        first.stop()
    (tmp_path / "exported.toml").write_text(toml.decode())
    second = Daemon(tmp_path, "--config", "exported.toml", *ephemeral("pop3", "pop3s", "imap", "imaps"))
    try:
        again = Api(control_url(second) + "/api/v1").get("/scenario")[1]
    finally:
        second.stop()
    assert again == exported
    assert [r["path"] for r in again["servers"]["http"]["routes"]] == ["/added", "/ping"]  # the order they are tried
    assert again["servers"]["dns"]["records"] == {"app.example.test": {"A": "10.1.2.3"}}
    assert [(f["server"], f["action"]) for f in again["faults"]] == [("smtp", "reply"), ("http", "reply")]
    assert again["seed"] == 5 and again["servers"]["pop3"]["enabled"] is False


def test_the_default_scenario_serves_the_control_api_on_loopback_2580():
    options = Options()
    options.parseOptions([])
    assert options.control_listen == "tcp:2580:interface=127.0.0.1"
    options = Options()
    options.parseOptions(["--control", ""])
    assert options.control_listen == ""


def test_a_non_loopback_control_without_a_token_is_refused():
    with pytest.raises(usage.UsageError, match=r"control.token: expected a token"):
        Options().parseOptions(["--control", "tcp:0"])


def test_a_taken_control_port_is_one_line_naming_the_option(tmp_path):
    import socket
    import subprocess
    import sys

    from _daemon import TWISTD

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, *TWISTD, "-n", "--pidfile", "", "testbed", *ephemeral("control"),
                                 "--control", f"tcp:{port}:interface=127.0.0.1"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"twisted-testbed: cannot listen on 127.0.0.1:{port} (Address already in use), asked for by --control"]
