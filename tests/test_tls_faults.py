"""TLS faults a client's security must survive, with real clients: STARTTLS stripped, the handshake cut.

Each is tried with the standard library's smtplib, poplib, imaplib and ftplib and with curl --ssl-reqd.
"""

import ftplib
import imaplib
import poplib
import smtplib
import ssl

import pytest
from _tls_clients import MAIL_USER, TIMEOUT, curl_ssl_reqd, url


# -- strip_starttls: the downgrade check -----------------------------------------------------------


@pytest.fixture(scope="module")
def testbed_scenario():
    return {"users": {MAIL_USER: "secret"},
            "servers": {name: {"tls": "starttls"} for name in ("smtp", "pop3", "imap", "ftp")}}


def test_smtp_without_starttls_in_ehlo_is_refused_by_smtplib_and_curl(smtp_server, testbed):
    smtp_server.faults.add(on="EHLO", action="strip_starttls")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls(context=ssl.create_default_context(cafile=testbed.ca_path))
        # A client that sends it anyway meets a server that has no TLS to offer.
        assert client.docmd("STARTTLS") == (502, b"5.5.1 STARTTLS not available")
    code, error = curl_ssl_reqd(url(smtp_server, "smtp"), testbed, "--mail-rcpt", MAIL_USER, "-T", "/dev/null")
    assert code == 64, error                                   # "Requested SSL level failed"
    assert smtp_server.faults.fired()[0]["action"] == "strip_starttls"


def test_pop3_without_stls_in_capa_is_refused_by_poplib_and_curl(pop3_server, testbed):
    pop3_server.faults.add(on="CAPA", action="strip_starttls")
    client = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    assert "STLS" not in client.capa()
    with pytest.raises(poplib.error_proto, match="STLS not supported"):
        client.stls(context=ssl.create_default_context(cafile=testbed.ca_path))
    with pytest.raises(poplib.error_proto, match="STLS not available"):   # poplib refused before asking
        client._shortcmd("STLS")
    client.quit()
    code, error = curl_ssl_reqd(url(pop3_server, "pop3"), testbed)
    assert code == 64, error


def test_imap_without_starttls_in_capability_is_refused_by_imaplib_and_curl(imap_server, testbed):
    imap_server.faults.add(on="CAPABILITY", action="strip_starttls")
    client = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    assert "STARTTLS" not in client.capabilities
    with pytest.raises(imaplib.IMAP4.abort, match="TLS not supported"):
        client.starttls(ssl_context=ssl.create_default_context(cafile=testbed.ca_path))
    assert client._simple_command("STARTTLS")[0] == "NO"
    client.logout()
    code, error = curl_ssl_reqd(url(imap_server, "imap"), testbed)
    assert code == 64, error


def test_ftp_without_auth_tls_is_refused_by_ftplib_and_curl(ftp_server, testbed):
    ftp_server.faults.add(on="FEAT", action="strip_starttls")
    client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=testbed.ca_path), timeout=TIMEOUT)
    client.connect(ftp_server.host, ftp_server.port)
    assert "AUTH TLS" not in client.sendcmd("FEAT") and "PBSZ" not in client.sendcmd("FEAT")
    with pytest.raises(ftplib.error_perm, match="^502"):
        client.auth()                                          # ftplib never reads FEAT: the server refuses
    client.quit()
    # curl sends AUTH without FEAT: the fault must fire before, at the connection.
    ftp_server.faults.add(on="connect", action="strip_starttls")
    code, error = curl_ssl_reqd(url(ftp_server, "ftp"), testbed)
    assert code == 64, error


def test_without_the_fault_every_client_gets_its_tls(smtp_server, pop3_server, imap_server, ftp_server, testbed):
    context = ssl.create_default_context(cafile=testbed.ca_path)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=TIMEOUT) as smtp:
        assert smtp.starttls(context=context)[0] == 220
    pop = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    assert pop.stls(context=context).startswith(b"+OK")
    pop.quit()
    imap = imaplib.IMAP4(imap_server.host, imap_server.port, timeout=TIMEOUT)
    assert imap.starttls(ssl_context=context)[0] == "OK"
    imap.logout()
    ftp = ftplib.FTP_TLS(context=context, timeout=TIMEOUT)
    ftp.connect(ftp_server.host, ftp_server.port)
    assert ftp.auth().startswith("234")
    ftp.quit()
    for server, scheme in ((smtp_server, "smtp"), (pop3_server, "pop3"), (imap_server, "imap"), (ftp_server, "ftp")):
        extra = ("--mail-rcpt", MAIL_USER, "-T", "/dev/null") if scheme == "smtp" else ()
        code, error = curl_ssl_reqd(url(server, scheme), testbed, *extra)
        assert code == 0, (scheme, error)


# -- tls_abort: the handshake cut partway -------------------------------------------------------


def starttls_with(name, server, testbed):
    """Connect with the standard library's client for ``name`` and start TLS as it does."""
    context = ssl.create_default_context(cafile=testbed.ca_path)
    if name == "smtp":
        client = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)
        return lambda: client.starttls(context=context)
    if name == "pop3":
        client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
        return lambda: client.stls(context=context)
    if name == "imap":
        client = imaplib.IMAP4(server.host, server.port, timeout=TIMEOUT)
        return lambda: client.starttls(ssl_context=context)
    client = ftplib.FTP_TLS(context=context, timeout=TIMEOUT)
    client.connect(server.host, server.port)
    return client.auth


@pytest.mark.parametrize("after", ["client_hello", "server_hello"])
@pytest.mark.parametrize("name, stage", [("smtp", "STARTTLS"), ("pop3", "STLS"), ("imap", "STARTTLS"),
                                         ("ftp", "AUTH")])
def test_a_handshake_cut_after_starttls_fails_the_client(name, stage, after, testbed):
    server = testbed[name]
    server.faults.add(on=stage, action="tls_abort", cut_after=after)
    start = starttls_with(name, server, testbed)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        start()
    (cut,) = [e for e in server.journal if e.get("cut")]
    assert cut["cut_after"] == after and (cut["size"] > 0) == (after == "server_hello")
    code, error = curl_ssl_reqd(url(server, name), testbed)
    assert code == 35, error                                   # SSL connect error


@pytest.mark.parametrize("after", ["client_hello", "server_hello"])
def test_a_handshake_cut_on_an_implicit_tls_port_fails_curl_and_urllib(http_server, testbed, after):
    import urllib.error
    import urllib.request

    http_server.faults.add(on="connect", action="tls_abort", cut_after=after, match={"tls": True})
    code, error = curl_ssl_reqd(http_server.https_url, testbed)
    assert code == 35, error                                   # SSL connect error
    with pytest.raises(urllib.error.URLError) as failed:
        urllib.request.urlopen(http_server.https_url, timeout=TIMEOUT,
                               context=ssl.create_default_context(cafile=testbed.ca_path))
    assert isinstance(failed.value.reason, (ssl.SSLError, ConnectionError)), failed.value
    http_server.route("/ok", body="ok")
    with urllib.request.urlopen(http_server.url + "/ok", timeout=TIMEOUT) as response:   # plain HTTP is untouched
        assert response.read() == b"ok"
