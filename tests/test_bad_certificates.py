"""Deliberately bad certificates: each server presents the chain its scenario names, and real clients refuse it."""

import ftplib
import imaplib
import poplib
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from _clients import CURL

SCENARIO = {
    "servers": {
        "http": {"certificate": "expired"},
        "smtp": {"certificate": "wrong_host"},
        "pop3": {"certificate": "untrusted_ca"},
        "imap": {"certificate": "self_signed"},
        "ftp": {"certificate": "not_yet_valid"},
        "dns": {"enabled": False},
    },
    "users": {"alice@example.test": "secret"},
}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


@pytest.fixture
def context(testbed):
    return ssl.create_default_context(cafile=testbed.ca_path)


def test_https_with_an_expired_certificate(http_server, context):
    with pytest.raises(urllib.error.URLError, match="certificate has expired"):
        urllib.request.urlopen(http_server.https_url + "/", context=context, timeout=10)


def test_curl_refuses_the_expired_certificate(http_server, testbed):
    result = subprocess.run([CURL, "-sS", "--max-time", "10", "--cacert", testbed.ca_path, http_server.https_url],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 60 and "expired" in result.stderr


def test_starttls_with_a_certificate_for_another_host(smtp_server, context):
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            smtp.starttls(context=context)


def test_smtps_presents_the_same_chain(smtp_server, context):
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        smtplib.SMTP_SSL(smtp_server.host, smtp_server.tls_port, context=context, timeout=10)


def test_stls_with_a_chain_from_an_untrusted_ca(pop3_server, context):
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        client.stls(context=context)


def test_imaps_with_a_self_signed_certificate(imap_server, context):
    with pytest.raises(ssl.SSLCertVerificationError, match="self.signed certificate"):
        imaplib.IMAP4_SSL(imap_server.host, imap_server.tls_port, ssl_context=context, timeout=10)


def test_ftps_with_a_certificate_not_yet_valid(ftp_server, context):
    client = ftplib.FTP_TLS(context=context, timeout=10)
    client.connect(ftp_server.host, ftp_server.port)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate is not yet valid"):
        client.auth()


def test_a_client_that_does_not_verify_still_gets_in(imap_server):
    unverified = ssl._create_unverified_context()
    client = imaplib.IMAP4_SSL(imap_server.host, imap_server.tls_port, ssl_context=unverified, timeout=10)
    assert client.login("alice@example.test", "secret")[0] == "OK"
    client.logout()
