"""The SMTP server with real clients over loopback: smtplib (plain, STARTTLS, SMTPS, AUTH), swaks, curl, Twisted's sendmail."""

from __future__ import annotations

import concurrent.futures
import smtplib
import ssl
import subprocess

import pytest
import pytest_twisted
from _clients import CURL, SWAKS

from testbed.servers.base import WaitTimeout


#: One scenario for the module: the testbed starts once for it.
SCENARIO = {
    "seed": 25,
    "servers": {"smtp": {"enabled": True, "tls": "starttls"}, "http": {"enabled": False}},
    "users": {"alice@example.test": "secret", "bob@example.test": "hunter2"},
}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


def message(subject: str = "hello", body: str = "Hi Alice.") -> bytes:
    return (f"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n{body}\r\n").encode()


def client(server, **kwargs) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=kwargs.pop("timeout", 10), **kwargs)


@pytest.fixture
def tls_context(testbed):
    context = ssl.create_default_context(cafile=testbed.ca_path)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


# -- smtplib ---------------------------------------------------------------------------------


def test_smtplib_plain_arrives_byte_for_byte_in_the_inbox(smtp_server, testbed):
    raw = message(body="line one\r\n.leading dot\r\nline three")
    with client(smtp_server) as smtp:
        assert smtp.sendmail("sender@example.test", ["alice@example.test", "bob@example.test"], raw) == {}
    [m] = smtp_server.wait_for()
    assert m.raw == raw
    assert (m.mail_from, m.rcpt_to, m.tls, m.auth_user) == ("sender@example.test",
                                                             ["alice@example.test", "bob@example.test"], False, None)
    assert m.message["Subject"] == "hello"
    assert testbed.mail.mailbox("bob@example.test").messages[0].raw == raw
    kinds = [e["kind"] for e in smtp_server.journal]
    assert {"command", "reply", "stored"} <= set(kinds)


def test_a_large_8bit_message_with_long_lines_arrives_intact(smtp_server):
    line = bytes(range(128, 256)) * 200 + b".x"  # 25,602 bytes of 8-bit text
    raw = message("big") + b"".join(b".%d%s\r\n" % (i, line) for i in range(80))  # about 2 MB
    with client(smtp_server) as smtp:
        smtp.sendmail("a@example.test", ["alice@example.test"], raw)
    assert smtp_server.wait_for()[0].raw == raw


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_starttls_verified_then_auth(smtp_server, tls_context, mechanism):
    with client(smtp_server) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and smtp.has_extn("size") and smtp.has_extn("pipelining")
        smtp.starttls(context=tls_context)  # checks the certificate for 127.0.0.1
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.user, smtp.password = "alice@example.test", "secret"
        method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}[mechanism]
        assert smtp.auth(mechanism, method)[0] == 235
        smtp.sendmail("alice@example.test", ["bob@example.test"], message(mechanism))
    [m] = smtp_server.wait_for(to="bob@*")
    assert (m.tls, m.auth_user, m.message["Subject"]) == (True, "alice@example.test", mechanism)


def test_smtplib_starttls_with_localhost_name(smtp_server, tls_context):
    with smtplib.SMTP("localhost", smtp_server.port, timeout=10) as smtp:
        smtp.starttls(context=tls_context)
        smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert smtp_server.wait_for()[0].tls


def test_smtp_ssl_on_the_tls_port_with_and_without_auth(smtp_server, tls_context):
    assert smtp_server.tls_port and smtp_server.tls_port != smtp_server.port
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.tls_port, context=tls_context, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.sendmail("a@example.test", ["alice@example.test"], message("anonymous"))
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.tls_port, context=tls_context, timeout=10) as smtp:
        smtp.login("bob@example.test", "hunter2")
        smtp.sendmail("bob@example.test", ["alice@example.test"], message("authenticated"))
    first, second = smtp_server.wait_for(2)
    assert (first.tls, first.auth_user) == (True, None)
    assert (second.tls, second.auth_user) == (True, "bob@example.test")


def test_wrong_password_is_smtplib_authentication_error(smtp_server, tls_context):
    with client(smtp_server) as smtp:
        smtp.starttls(context=tls_context)
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            smtp.login("alice@example.test", "wrong")
        assert e.value.smtp_code == 535


def test_a_user_added_at_runtime_can_log_in(smtp_server, testbed, tls_context):
    testbed.call(testbed.mail.add_user, "carol@example.test", "c4r0l")
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.tls_port, context=tls_context, timeout=10) as smtp:
        smtp.login("carol@example.test", "c4r0l")


def test_size_limit_is_advertised_and_enforced(smtp_server):
    with client(smtp_server) as smtp:
        smtp.ehlo()
        limit = int(smtp.esmtp_features["size"])
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            smtp.sendmail("a@example.test", ["alice@example.test"], b"x" * (limit + 1))
        assert e.value.smtp_code == 552


def test_wait_for_times_out_naming_what_arrived(smtp_server):
    with client(smtp_server) as smtp:
        smtp.sendmail("a@example.test", ["alice@example.test"], message("only one"))
    with pytest.raises(WaitTimeout, match="only one"):
        smtp_server.wait_for(2, timeout=0.2)
    with pytest.raises(WaitTimeout, match="to 'nobody@"):
        smtp_server.wait_for(to="nobody@*", timeout=0.2)


# -- faults seen by smtplib -------------------------------------------------------------------


@pytest.mark.fault(server="smtp", on="RCPT", match={"rcpt": "*@bounce.test"}, action="reply", code=550,
                   message="5.1.1 no such user")
def test_fault_marker_refuses_only_matching_recipients(smtp_server):
    with client(smtp_server) as smtp:
        refused = smtp.sendmail("a@example.test", ["x@bounce.test", "alice@example.test"], message())
        assert refused == {"x@bounce.test": (550, b"5.1.1 no such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("a@example.test", ["y@bounce.test"], message())
    [m] = smtp_server.wait_for()
    assert m.rcpt_to == ["alice@example.test"]


@pytest.mark.fault(server="smtp", on="RCPT", action="reply", code=451, times=1)
def test_a_temporary_failure_then_the_retry_succeeds(smtp_server):
    with client(smtp_server) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
        assert e.value.recipients["alice@example.test"][0] == 451
        smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert len(smtp_server.wait_for()) == 1
    [fired] = smtp_server.faults.fired()
    assert fired["on"] == "RCPT"


def test_runtime_faults_at_data_and_after_the_dot(smtp_server, testbed):
    smtp_server.faults.add(on="DATA", action="reply", code=554, times=1)
    smtp_server.faults.add(on="message", action="reply", code=452, times=1)
    with client(smtp_server) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as e:
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
        assert e.value.smtp_code == 554
        with pytest.raises(smtplib.SMTPDataError) as e:
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
        assert e.value.smtp_code == 452
        assert smtp_server.messages == [] and testbed.mail.mailbox("alice@example.test").messages == []
        smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert len(smtp_server.wait_for()) == 1


@pytest.mark.fault(server="smtp", on="connect", action="reply", code=421, times=1)
def test_greeting_421(smtp_server):
    with pytest.raises(smtplib.SMTPConnectError) as e:
        client(smtp_server)
    assert e.value.smtp_code == 421
    with client(smtp_server) as smtp:
        assert smtp.noop()[0] == 250


@pytest.mark.fault(server="smtp", on="connect", action="reply", code=554)
def test_greeting_554(smtp_server):
    with pytest.raises(smtplib.SMTPConnectError) as e:
        client(smtp_server)
    assert e.value.smtp_code == 554


@pytest.mark.fault(server="smtp", on="EHLO", action="reply", code=502, message="5.5.1 EHLO not supported")
def test_ehlo_refused_smtplib_falls_back_to_helo(smtp_server):
    with client(smtp_server) as smtp:
        smtp.sendmail("a@example.test", ["alice@example.test"], message())
        assert smtp.does_esmtp is False
    [m] = smtp_server.wait_for()
    commands = [e["command"] for e in smtp_server.journal if e["kind"] == "command"]
    assert commands[:3] == ["EHLO", "HELO", "MAIL"]
    assert m.helo


@pytest.mark.fault(server="smtp", on="STARTTLS", action="reply", code=454)
def test_starttls_454(smtp_server, tls_context):
    with client(smtp_server) as smtp:
        with pytest.raises(smtplib.SMTPResponseException) as e:
            smtp.starttls(context=tls_context)
        assert e.value.smtp_code == 454


@pytest.mark.fault(server="smtp", on="AUTH", match={"mechanism": "PLAIN"}, action="reply", code=454,
                   message="4.7.0 try later")
def test_auth_454(smtp_server, tls_context):
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.tls_port, context=tls_context, timeout=10) as smtp:
        smtp.ehlo()
        smtp.esmtp_features["auth"] = "PLAIN"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            smtp.login("alice@example.test", "secret")
        assert e.value.smtp_code == 454


@pytest.mark.fault(server="smtp", on="MAIL", action="reply", code=421, message="4.3.2 going down")
def test_421_at_mail_closes_and_smtplib_sees_it(smtp_server):
    with client(smtp_server) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
        assert e.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


@pytest.mark.fault(server="smtp", on="message", action="reset")
def test_reset_after_the_dot_is_a_disconnect_and_nothing_stored(smtp_server):
    with client(smtp_server) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert smtp_server.messages == []


@pytest.mark.fault(server="smtp", on="message", action="reply", code=451, then="reset")
def test_reply_then_reset_after_the_dot(smtp_server):
    with client(smtp_server) as smtp:
        with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPServerDisconnected)):
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert smtp_server.messages == []


@pytest.mark.fault(server="smtp", on="message", action="silence")
def test_silence_after_the_dot_times_the_client_out(smtp_server):
    with client(smtp_server, timeout=0.5) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail("a@example.test", ["alice@example.test"], message())
    assert smtp_server.messages == []


@pytest.mark.fault(server="smtp", on="DATA", action="stall")
def test_stall_after_the_354_times_the_client_out(smtp_server):
    with client(smtp_server, timeout=0.5) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail("a@example.test", ["alice@example.test"], message())


# -- other clients -----------------------------------------------------------------------------


def swaks(server, *args):
    result = subprocess.run([SWAKS, "--server", server.host, "--from", "sender@example.test", "--to",
                             "alice@example.test", "--header", "Subject: from swaks", "--body", "swaks body",
                             "--timeout", "10", *args], capture_output=True, timeout=20)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return result


def test_swaks_plain_starttls_smtps_and_auth(smtp_server, testbed):
    swaks(smtp_server, "--port", str(smtp_server.port))
    swaks(smtp_server, "--port", str(smtp_server.port), "--tls", "--tls-verify", "--tls-ca-path", testbed.ca_path,
          "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", "secret")
    swaks(smtp_server, "--port", str(smtp_server.tls_port), "--tlsc", "--tls-verify", "--tls-ca-path",
          testbed.ca_path, "--auth", "CRAM-MD5", "--auth-user", "bob@example.test", "--auth-password", "hunter2")
    messages = smtp_server.wait_for(3)
    assert [(m.tls, m.auth_user) for m in messages] == [(False, None), (True, "alice@example.test"),
                                                        (True, "bob@example.test")]
    assert {m.message["Subject"] for m in messages} == {"from swaks"}
    assert all(m.message.get_content().strip() == "swaks body" for m in messages)


def curl(*args):
    return subprocess.run([CURL, "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)


def test_curl_smtp_starttls_and_smtps(smtp_server, testbed, tmp_path):
    raw = message("from curl", "curl body\r\n.dot line")
    upload = tmp_path / "mail.eml"
    upload.write_bytes(raw)
    common = ["--mail-from", "sender@example.test", "--mail-rcpt", "alice@example.test", "--upload-file", str(upload)]
    plain = curl(f"smtp://{smtp_server.host}:{smtp_server.port}", *common)
    assert plain.returncode == 0, plain.stderr
    starttls = curl(f"smtp://{smtp_server.host}:{smtp_server.port}", "--ssl-reqd", "--cacert", testbed.ca_path,
                    "--user", "alice@example.test:secret", *common)
    assert starttls.returncode == 0, starttls.stderr
    smtps = curl(f"smtps://{smtp_server.host}:{smtp_server.tls_port}", "--cacert", testbed.ca_path, *common)
    assert smtps.returncode == 0, smtps.stderr
    messages = smtp_server.wait_for(3)
    assert [m.raw for m in messages] == [raw] * 3
    assert [(m.tls, m.auth_user) for m in messages] == [(False, None), (True, "alice@example.test"), (True, None)]


# -- load and the reactor face ---------------------------------------------------------------------


def test_200_messages_from_20_concurrent_sessions_arrive_exactly_once(smtp_server):
    def session(n: int) -> None:
        with client(smtp_server) as smtp:
            for i in range(10):
                smtp.sendmail(f"s{n}@example.test", ["alice@example.test"], expected[n * 10 + i])

    expected = [message(f"message {k}", f"body {k}\r\n" + "x" * (k % 7) * 100) for k in range(200)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        list(pool.map(session, range(20)))
    arrived = smtp_server.wait_for(200, timeout=10)
    assert len(arrived) == 200
    assert sorted(m.raw for m in arrived) == sorted(expected)


@pytest.fixture
def trust_the_testbed_ca(testbed, monkeypatch):
    """Twisted's sendmail verifies STARTTLS against the platform's trust, which OpenSSL reads from SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", testbed.ca_path)


@pytest_twisted.inlineCallbacks
def test_twisted_sendmail_in_the_reactor(smtp_server, trust_the_testbed_ca):
    from twisted.mail import smtp

    raw = message("from twisted")
    lf = raw.replace(b"\r\n", b"\n")  # Twisted's client wants "\n" lines and sends them as CRLF
    yield smtp.sendmail(smtp_server.host, "sender@example.test", ["alice@example.test"], lf,
                        port=smtp_server.port, username="bob@example.test", password="hunter2",
                        requireTransportSecurity=True, requireAuthentication=True)
    messages = yield smtp_server.wait_for(1, to="alice@example.test")
    assert (messages[0].raw, messages[0].tls, messages[0].auth_user) == (raw, True, "bob@example.test")
