"""The Node example (examples/node, node:test and fetch) runs green against a daemon this test starts."""

import os
import pathlib
import shutil
import subprocess

from _daemon import Daemon, ephemeral

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "node"


def test_the_node_example_passes_against_a_daemon(tmp_path):
    node = shutil.which("node")
    assert node, "node is missing: install it (Debian package nodejs)"
    (tmp_path / "s.toml").write_text("[servers.pop3]\nenabled = false\n[servers.imap]\nenabled = false\n"
                                     "[servers.ftp]\nenabled = false\n")
    daemon = Daemon(tmp_path, "--config", "s.toml", *ephemeral("pop3", "pop3s", "imap", "imaps", "ftp"))
    try:
        url = daemon.control
        result = subprocess.run([node, "--test", str(EXAMPLE / "mail.test.mjs")], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "TESTBED_URL": url})
    finally:
        daemon.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 1" in result.stdout
