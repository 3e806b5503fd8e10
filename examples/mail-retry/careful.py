"""Send the nightly report by SMTP, carefully: STARTTLS before AUTH, retry 4xx and drops with backoff,
and never resend once the final dot went out (a lost final reply may hide a stored message).

Reads the server from TESTBED_SMTP_HOST/PORT and the CA from TESTBED_CA (set by `testbed experiment run`).
"""

import os
import smtplib
import ssl
import sys
import time

HOST, PORT = os.environ.get("TESTBED_SMTP_HOST", "127.0.0.1"), int(os.environ.get("TESTBED_SMTP_PORT", "2525"))
TIMEOUT = float(os.environ.get("REPORT_TIMEOUT", "10"))
ATTEMPTS, BACKOFF = 5, float(os.environ.get("REPORT_BACKOFF", "0.05"))
REPORT = b"From: reports@example.test\r\nTo: ops@example.test\r\nSubject: nightly report\r\n\r\nAll jobs ran.\r\n"


class Unknown(Exception):
    """The final dot went out but no reply came back: the server may have stored the report."""


def send_once() -> None:
    client = smtplib.SMTP(HOST, PORT, timeout=TIMEOUT)
    try:
        client.ehlo()
        client.starttls(context=ssl.create_default_context(cafile=os.environ.get("TESTBED_CA")))
        client.ehlo()
        client.login("reports@example.test", "s3cret")
        code, reply = client.mail("reports@example.test")
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, "reports@example.test")
        code, reply = client.rcpt("ops@example.test")
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({"ops@example.test": (code, reply)})
        code, reply = client.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        client.send(smtplib.quotedata(REPORT.decode()).encode() + b"\r\n.\r\n")
        try:
            code, reply = client.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            raise Unknown(str(e)) from None
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        client.quit()
    finally:
        client.close()


def transient(error: Exception) -> bool:
    code = getattr(error, "smtp_code", None)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code = next(iter(error.recipients.values()))[0]
    return code is None or 400 <= code < 500


for attempt in range(1, ATTEMPTS + 1):
    try:
        send_once()
        print(f"report sent (attempt {attempt})")
        sys.exit(0)
    except Unknown as e:
        print(f"the final reply was lost ({e}); not resending, the report may be stored")
        sys.exit(0)
    except (smtplib.SMTPException, OSError) as e:
        if not transient(e):
            print(f"permanent failure, giving up: {e}")
            sys.exit(1)
        print(f"attempt {attempt}: {e}; retrying in {BACKOFF * 2 ** (attempt - 1):.2f}s")
        time.sleep(BACKOFF * 2 ** (attempt - 1))
print("gave up after every attempt")
sys.exit(1)
