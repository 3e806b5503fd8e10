"""Small SMTP clients that experiments in the tests run as ``callable = "experiment_clients:NAME"``."""

from __future__ import annotations

import smtplib

MESSAGE = "From: r@example.test\r\nTo: ops@example.test\r\nSubject: report\r\n\r\nAll fine.\r\n"


def _smtp(testbed) -> smtplib.SMTP:
    server = testbed["smtp"]
    return smtplib.SMTP(server.host, server.port, timeout=2)


def send_once(testbed) -> int:
    """One message, no retry: fails on any fault."""
    client = _smtp(testbed)
    client.sendmail("r@example.test", ["ops@example.test"], MESSAGE)
    client.quit()
    print("sent")
    return 0


def send_five(testbed) -> int:
    """Five messages on five connections, whatever happens to each."""
    sent = 0
    for i in range(5):
        try:
            client = _smtp(testbed)
            client.sendmail("r@example.test", [f"ops{i}@example.test"], MESSAGE)
            client.quit()
            sent += 1
        except (smtplib.SMTPException, OSError):
            pass
    print(f"sent {sent}")
    return 0


def planted(testbed) -> int:
    """Retries up to four times; the planted bug: it fails only after both a 451 at RCPT and a reset in DATA."""
    saw_451 = saw_reset = False
    for _ in range(4):
        try:
            client = _smtp(testbed)
            client.ehlo()
            client.mail("r@example.test")
            code, _ = client.rcpt("ops@example.test")
            if code == 451:
                saw_451 = True
                client.quit()
                continue
            try:
                client.data(MESSAGE)
            except (smtplib.SMTPServerDisconnected, OSError):
                saw_reset = True
                continue
            client.quit()
            break
        except (smtplib.SMTPException, OSError):
            continue
    if saw_451 and saw_reset:
        print("bug: lost the report after a 451 and a reset")
        return 1
    return 0
