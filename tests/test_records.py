"""Every record a handle returns gives JSON-ready data through to_dict(), the shape the control API serves."""

import ftplib
import io
import json
import poplib
import smtplib
import urllib.request

import dns.message
import dns.query


def roundtrip(record) -> dict:
    data = record.to_dict()
    assert json.loads(json.dumps(data)) == data
    return data


MESSAGE = (b"From: app@example.test\r\nTo: alice@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n")


def test_mail_records(testbed, smtp_server, pop3_server):
    testbed.call(testbed.mail.add_user, "alice@example.test", "secret")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.sendmail("app@example.test", ["alice@example.test"], MESSAGE)
    (message,) = smtp_server.wait_for(1)
    data = roundtrip(message)
    assert (data["mail_from"], data["rcpt_to"], data["subject"], data["text"]) == (
        "app@example.test", ["alice@example.test"], "report", "hello")
    assert data["attachments"] == [{"part": 2, "filename": "a.bin", "content_type": "application/octet-stream",
                                    "size": 3}]
    stored = roundtrip(testbed.call(lambda: testbed.mail.mailbox("alice@example.test").messages[0]))
    assert (stored["user"], stored["mailbox"], stored["subject"]) == ("alice@example.test", "INBOX", "report")

    pop = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
    pop.user("alice@example.test")
    pop.pass_("secret")
    pop.retr(1)
    pop.quit()
    pop3_server.wait_for(1, kind="quit")
    session = roundtrip(pop3_server.sessions[0])
    assert (session["user"], session["retrieved"]) == ("alice@example.test", [1])
    assert roundtrip(pop3_server.retrievals[0])["complete"] is True


def test_http_dns_and_ftp_records(testbed, http_server, dns_server, ftp_server):
    testbed.call(testbed.mail.add_user, "alice@example.test", "secret")
    http_server.route("/r", method="POST", json={"ok": True})
    urllib.request.urlopen(urllib.request.Request(http_server.url + "/r?x=1", data=b"\xff\x00", method="POST"),
                           timeout=10).read()
    request = roundtrip(http_server.requests[0])
    assert (request["method"], request["path"], request["query"], request["body"]) == (
        "POST", "/r", "x=1", {"base64": "/wA="})

    dns_server.add_record("www.example.test", "A", "127.0.0.9")
    dns.query.udp(dns.message.make_query("www.example.test", "A"), dns_server.host, port=dns_server.port, timeout=5)
    query = roundtrip(dns_server.queries[0])
    assert (query["name"], query["type"], query["rcode"]) == ("www.example.test", "A", "NOERROR")
    assert query["answer"] == ["www.example.test. 300 IN A 127.0.0.9"]

    with ftplib.FTP() as client:
        client.connect(ftp_server.host, ftp_server.port, timeout=10)
        client.login("alice@example.test", "secret")
        client.storbinary("STOR up.txt", io.BytesIO(b"data"))
    ftp_server.wait_for(1)
    assert roundtrip(ftp_server.uploads[0])["path"] == "up.txt"
