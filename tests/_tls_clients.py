"""What the TLS fault tests share: curl told TLS is required, and a server's URL for it."""

import subprocess

from _clients import CURL

TIMEOUT = 10
MAIL_USER = "alice@example.test"


def curl_ssl_reqd(url, testbed, *args):
    """curl told TLS is required (--ssl-reqd): its exit code and error."""
    result = subprocess.run([CURL, "-sS", "--max-time", str(TIMEOUT), "--ssl-reqd", "--cacert", testbed.ca_path,
                             "-u", f"{MAIL_USER}:secret", *args, url], capture_output=True, text=True,
                            timeout=TIMEOUT + 5)
    return result.returncode, result.stderr


def url(server, scheme):
    return f"{scheme}://{server.host}:{server.port}/"
