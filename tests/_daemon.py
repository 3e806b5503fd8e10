"""Drives `twistd -n testbed ...` in a subprocess for the daemon tests: start, read its listeners, stop."""

import re
import signal
import subprocess
import sys

#: twistd as the current interpreter runs it (the console script may belong to another Python).
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


def ephemeral(*but):
    """Every listener option on a free port, except those named (this machine's well-known ports may be taken).

    An option turns its server on: leave out the servers a test's scenario turns off.
    """
    return [arg for name in ("http", "https", "smtp", "smtps", "pop3", "pop3s", "imap", "imaps", "ftp", "dns",
                             "control")
            if name not in but for arg in (f"--{name}", "tcp:0:interface=127.0.0.1")]


class Daemon:
    """`twistd -n testbed ...` in a subprocess; reads the listener lines it prints."""

    def __init__(self, tmp_path, *args, wrap=()):
        self.process = subprocess.Popen(
            [*wrap, sys.executable, *TWISTD, "-n", "--pidfile", "", "testbed", *args],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.urls = {}
        self.ca = None
        #: The control API's base URL (http://127.0.0.1:PORT), when it runs.
        self.control = None
        self.output = []
        for line in self.process.stdout:
            self.output.append(line)
            match = re.match(r"twisted-testbed: (\S+)\s+(\S+://\S+)", line)
            if match:
                self.urls[match.group(1)] = match.group(2)
            match = re.match(r"twisted-testbed: CA\s+(\S.*)$", line)
            if match:
                self.ca = match.group(1)
            match = re.match(r"twisted-testbed: control API and dashboard at (http://\S+?)/?$", line)
            if match:
                self.control = match.group(1)
            if line.strip() == "twisted-testbed: ready" or self.process.poll() is not None:
                break

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            rest = self.process.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest = self.process.communicate()[0]
        self.output.append(rest)
        return self.process.returncode
