"""Send the nightly report by SMTP, naively: give up on any error reply, resend blindly when the line drops.

Reads the server from TESTBED_SMTP_HOST/PORT and the CA from TESTBED_CA (set by `testbed experiment run`).
"""

import os
import smtplib
import ssl
import sys

HOST, PORT = os.environ.get("TESTBED_SMTP_HOST", "127.0.0.1"), int(os.environ.get("TESTBED_SMTP_PORT", "2525"))
TIMEOUT = float(os.environ.get("REPORT_TIMEOUT", "10"))
REPORT = b"From: reports@example.test\r\nTo: ops@example.test\r\nSubject: nightly report\r\n\r\nAll jobs ran.\r\n"

for attempt in range(3):
    try:
        client = smtplib.SMTP(HOST, PORT, timeout=TIMEOUT)
        client.starttls(context=ssl.create_default_context(cafile=os.environ.get("TESTBED_CA")))
        client.login("reports@example.test", "s3cret")
        client.sendmail("reports@example.test", ["ops@example.test"], REPORT)
        client.quit()
        print("report sent")
        sys.exit(0)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as e:
        print(f"giving up: {e}")
        sys.exit(1)
    except OSError as e:  # smtplib's errors are OSErrors too: the replies were handled above
        print(f"attempt {attempt + 1}: connection lost ({e}); sending again")
sys.exit(1)
