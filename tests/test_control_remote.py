"""RemoteTestbed over a real control listener, and pytest --testbed-url: parallel xdist workers stay apart."""

import re
import smtplib
import ssl
import subprocess
import sys
import textwrap
import threading
import urllib.request

import pytest

from _control import start, stop
from _daemon import Daemon, ephemeral
from testbed import WaitTimeout
from testbed.remote import RemoteTestbed


@pytest.fixture(scope="module")
def bed():
    bed = start({"servers": {"pop3": {"enabled": False}, "imap": {"enabled": False}}})
    yield bed
    stop(bed)


def test_the_remote_handle_has_the_in_process_surface(bed):
    remote = RemoteTestbed(bed.control.url)
    remote.reset()
    smtp = remote["smtp"]
    assert (smtp.host, smtp.port, smtp.tls_port) == (bed["smtp"].host, bed["smtp"].port, bed["smtp"].tls_port)
    remote.faults.add(server="smtp", on="RCPT", action="reply", code=451, times=1)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=remote.ca_path))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("app@example.test", ["bob@example.test"], "Subject: first\r\n\r\nx\r\n")
        client.sendmail("app@example.test", ["bob@example.test"], "Subject: second\r\n\r\nx\r\n")
    [message] = smtp.wait_for(to="bob@*", timeout=10)
    assert message.rcpt_to == ["bob@example.test"] and message.message["subject"] == "second"
    assert [m.subject for m in smtp.messages] == ["second"]
    assert smtp.faults.fired()[0]["action"] == "reply"
    with pytest.raises(ValueError, match="fault.action"):
        remote.faults.add(server="smtp", action="explode")
    remote.faults.clear()
    assert remote.faults.stats() == []

    http = remote["http"]
    http.route("/hook", method="POST", status=204)
    later = threading.Timer(0, lambda: urllib.request.urlopen(
        urllib.request.Request(http.url + "/hook", data=b'{"n": 1}', method="POST")).close())
    later.start()
    [request] = http.wait_for(lambda r: r.path == "/hook", timeout=10)
    later.join()
    assert request.method == "POST" and request.json() == {"n": 1}
    with pytest.raises(WaitTimeout, match="waited 0.2s for 2 requests; got 1"):
        http.wait_for(2, timeout=0.2)
    remote.reset()
    assert http.requests == [] and remote["dns"].queries == []


XDIST_SUITE = textwrap.dedent('''
    import smtplib
    import pytest
    from testbed.remote import RemoteTestbed

    @pytest.mark.parametrize("worker_test", ["faulty", "clean"])
    def test_isolated(testbed, worker_test, request):
        smtp = testbed["smtp"]
        me = f"alice+{testbed.session}@example.test"
        if worker_test == "faulty":
            testbed.faults.add(server="smtp", on="RCPT", action="reply", code=451)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            if worker_test == "faulty":
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    client.sendmail("app@example.test", [me], "Subject: mine\\r\\n\\r\\nx\\r\\n")
                testbed.faults.clear()
            client.sendmail("app@example.test", [me], "Subject: mine\\r\\n\\r\\nx\\r\\n")
        # Both workers' mail is in the daemon before either looks: they ran side by side.
        everyone = RemoteTestbed(request.config.getoption("testbed_url"))
        everyone["smtp"].wait_for(2, timeout=30)
        assert [m.rcpt_to for m in smtp.messages] == [[me]]
        assert testbed.faults.stats() == []
''')


def test_two_xdist_workers_sharing_one_daemon_never_see_each_others_mail_or_faults(tmp_path):
    (tmp_path / "s.toml").write_text("[servers.pop3]\nenabled = false\n[servers.imap]\nenabled = false\n")
    (tmp_path / "test_suite.py").write_text(XDIST_SUITE)
    daemon = Daemon(tmp_path, "--config", "s.toml", *ephemeral("pop3", "pop3s", "imap", "imaps"))
    try:
        url = daemon.control
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                                 "--testbed-url", url, "test_suite.py"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        daemon.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_pytest_testbed_control_serves_the_api_and_prints_its_url(tmp_path):
    (tmp_path / "test_one.py").write_text(textwrap.dedent('''
        import json, urllib.request

        def test_it(testbed, smtp_server):
            with urllib.request.urlopen(testbed.control.url + "/api/v1/info") as response:
                info = json.load(response)
            assert {"server": "smtp", "protocol": "smtp", "label": "smtp",
                    "url": f"smtp://127.0.0.1:{smtp_server.port}", "tls": False} in info["listeners"]
    '''))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--testbed-control",
                             "test_one.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"testbed: control API and dashboard at http://127\.0\.0\.1:\d+ ", result.stdout), result.stdout
