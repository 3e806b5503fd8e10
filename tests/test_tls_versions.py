"""Servers limited to TLS 1.0 and 1.1 (``tls_versions``): clients with today's defaults must refuse them.

Each is tried with the standard library's smtplib, poplib, imaplib and ftplib and with curl --ssl-reqd.
"""

import ftplib
import imaplib
import poplib
import smtplib
import ssl

import pytest
from _tls_clients import MAIL_USER, TIMEOUT, curl_ssl_reqd, url


def old_tls_client(testbed) -> ssl.SSLContext:
    """A client that still accepts TLS 1.0 and 1.1 (and the security level their handshakes need)."""
    context = ssl.create_default_context(cafile=testbed.ca_path)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.fixture(scope="module")
def testbed_scenario():
    old = {"tls": "starttls", "tls_versions": ["TLSv1", "TLSv1.1"]}
    return {"users": {MAIL_USER: "secret"},
            "servers": {"smtp": old, "pop3": old, "imap": old, "ftp": old,
                        "http": {"tls_versions": ["TLSv1", "TLSv1.1"]}}}


def test_smtplib_refuses_and_an_old_client_gets_tls_1_1(smtp_server, testbed):
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=TIMEOUT) as client:
        with pytest.raises(ssl.SSLError):
            client.starttls(context=ssl.create_default_context(cafile=testbed.ca_path))
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=TIMEOUT) as client:
        client.starttls(context=old_tls_client(testbed))
        assert client.sock.version() == "TLSv1.1"


def test_poplib_refuses_and_an_old_client_gets_tls_1_1(pop3_server, testbed):
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    with pytest.raises(ssl.SSLError):
        client.stls(context=ssl.create_default_context(cafile=testbed.ca_path))
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    client.stls(context=old_tls_client(testbed))
    assert client.sock.version() == "TLSv1.1"
    client.quit()


def test_imaplib_refuses_and_an_old_client_gets_tls_1_1(imap_server, testbed):
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    with pytest.raises(ssl.SSLError):
        client.starttls(ssl_context=ssl.create_default_context(cafile=testbed.ca_path))
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    client.starttls(ssl_context=old_tls_client(testbed))
    assert client.sock.version() == "TLSv1.1"
    client.logout()


def test_ftplib_refuses_and_an_old_client_gets_tls_1_1(ftp_server, testbed):
    client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=testbed.ca_path), timeout=TIMEOUT)
    client.connect(ftp_server.host, ftp_server.port)
    with pytest.raises(ssl.SSLError):
        client.auth()
    client = ftplib.FTP_TLS(context=old_tls_client(testbed), timeout=TIMEOUT)
    client.connect(ftp_server.host, ftp_server.port)
    client.auth()
    assert client.sock.version() == "TLSv1.1"
    client.quit()


def test_curl_refuses_every_server_unless_told_tls_1_0_will_do(smtp_server, pop3_server, imap_server,
                                                               ftp_server, http_server, testbed):
    for server, scheme in ((smtp_server, "smtp"), (pop3_server, "pop3"), (imap_server, "imap"),
                           (ftp_server, "ftp")):
        code, error = curl_ssl_reqd(url(server, scheme), testbed)
        assert code == 35, (scheme, error)                 # SSL connect error
    code, error = curl_ssl_reqd(http_server.https_url, testbed)
    assert code == 35, error
    code, error = curl_ssl_reqd(http_server.https_url, testbed, "--tlsv1.0", "--ciphers", "DEFAULT:@SECLEVEL=0",
                                "-o", "/dev/null", "-w", "%{http_code}")
    assert code == 0, error
