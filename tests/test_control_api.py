"""The control API over a real listener: faults, journal, waits, events, what each server holds, security."""

import ftplib
import http.client
import json
import smtplib
import threading
import urllib.request
from email.message import EmailMessage

import dns.message
import dns.query
import pytest

from _control import Api, start, stop

SCENARIO = {
    "users": {"alice@example.test": "hunter2-pw"},
    "servers": {
        "http": {"routes": [{"path": "/ping", "body": "pong"}]},
        "dns": {"records": {"app.example.test": {"A": "10.0.0.1"}}},
        "pop3": {"enabled": False}, "imap": {"enabled": False}, "echo": {"enabled": False},
    },
}


@pytest.fixture(scope="module")
def bed():
    bed = start(SCENARIO)
    yield bed
    stop(bed)


@pytest.fixture
def api(bed):
    api = Api(bed.control.url + "/api/v1")
    assert api.post("/reset")[0] == 200
    return api


def send_mail(bed, to="alice@example.test", subject="hello", attachment=None, body="plain words"):
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "app@example.test", to, subject
    message.set_content(body)
    if attachment:
        message.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="a.bin")
    smtp = bed["smtp"]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(message)


def test_info_names_the_seed_and_every_listener(bed, api):
    status, info = api.get("/info")
    assert status == 200
    assert info["seed"] == 0 and info["control"] == bed.control.url
    urls = {(l["server"], l["label"]): l["url"] for l in info["listeners"]}
    assert urls[("smtp", "smtp")] == f"smtp://127.0.0.1:{bed['smtp'].port}"
    assert ("dns", "dns/udp") in urls


def test_a_fault_added_over_the_api_fires_and_shows_in_stats_and_the_connection(bed, api):
    status, added = api.post("/faults", {"server": "smtp", "on": "RCPT", "action": "reply", "code": 451,
                                         "times": 1})
    assert status == 200 and added["id"].startswith("runtime:")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_mail(bed)
    send_mail(bed)
    stats = api.get("/faults/stats")[1]
    assert stats["fired"] == 1 and stats["rules"][0]["key"] == added["id"]
    rows = api.get("/connections?server=smtp")[1]
    assert [r["faults"] for r in rows] == [1, 0]
    events = api.get(f"/connections/smtp/{rows[0]['conn']}")[1]["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "connection.open" and "fault" in kinds and kinds[-1] == "connection.close"
    fault = next(e for e in events if e["kind"] == "fault")
    assert fault["rule"] == added["id"] and fault["fired"] is True
    assert api.delete(f"/faults/{added['id']}")[0] == 200
    assert api.get("/faults")[1] == []
    assert api.delete(f"/faults/{added['id']}")[0] == 404


def test_a_bad_rule_is_a_400_naming_the_key_and_what_was_expected(api):
    status, body = api.post("/faults", {"server": "smtp", "on": "RCTP", "action": "reply"})
    assert status == 400
    assert "fault.on: expected a stage of smtp" in body["error"] and body["key"] == "fault.on"
    status, body = api.post("/faults", b"{not json", headers={"content-type": "application/json"})
    assert status == 400 and "expected JSON" in body["error"]


def test_wait_answers_as_soon_as_the_mail_arrives_and_408_lists_what_did(bed, api):
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        answer=api.get("/wait?kind=stored&server=smtp&to=alice@*&count=1&timeout=20")))
    waiter.start()
    send_mail(bed)
    waiter.join(25)
    status, body = result["answer"]
    assert status == 200 and body["events"][0]["rcpt"] == ["alice@example.test"]
    assert body["waited"] < 20
    status, body = api.get("/wait?kind=stored&server=smtp&to=bob@*&timeout=0.3")
    assert status == 408
    assert "0 matched" in body["error"] and body["events"][0]["rcpt"] == ["alice@example.test"]


def test_the_journal_pages_by_seq_and_exports_json_lines(bed, api):
    send_mail(bed)
    first = api.get("/journal?server=smtp&limit=3")[1]
    assert len(first["events"]) == 3 and first["next"] == first["events"][-1]["seq"]
    second = api.get(f"/journal?server=smtp&limit=3&since={first['next']}")[1]
    assert second["events"][0]["seq"] > first["next"]
    status, lines = api.get("/journal.jsonl?kind=stored")
    assert status == 200
    assert [json.loads(l)["kind"] for l in lines.decode().splitlines()] == ["stored"]
    assert api.get("/journal?limit=0")[0] == 400


def read_events(response, count):
    events, data = [], []
    while len(events) < count:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            events.append(json.loads("".join(data)))
            data = []
    return events


def test_events_stream_live_and_a_reconnect_with_last_event_id_misses_nothing(bed, api):
    host, port = bed.control.url.split("//")[1].split(":")
    stream = http.client.HTTPConnection(host, int(port), timeout=15)
    stream.request("GET", "/api/v1/events?kind=stored&server=smtp")
    response = stream.getresponse()
    assert response.getheader("content-type") == "text/event-stream"
    send_mail(bed, subject="one")
    first = read_events(response, 1)[0]
    stream.close()
    send_mail(bed, subject="two")  # sent while no one listens
    again = http.client.HTTPConnection(host, int(port), timeout=15)
    again.request("GET", "/api/v1/events?kind=stored", headers={"Last-Event-ID": str(first["seq"])})
    missed = read_events(again.getresponse(), 1)[0]
    again.close()
    assert missed["seq"] > first["seq"] and missed["kind"] == "stored"


def test_mail_users_messages_search_parts_and_delete(bed, api):
    send_mail(bed, subject="invoice 7", attachment=b"\x00\x01binary")
    send_mail(bed, subject="newsletter", body="unsubscribe here")
    users = api.get("/mail/users")[1]
    assert {"address": "alice@example.test", "can_login": True, "mailboxes": ["INBOX"], "messages": 2} in users
    base = "/mail/users/alice@example.test"
    assert [m["subject"] for m in api.get(base + "/messages?subject=invoice")[1]] == ["invoice 7"]
    assert [m["subject"] for m in api.get(base + "/messages?text=unsubscribe")[1]] == ["newsletter"]
    latest = api.get(base + "/messages/latest")[1]
    assert latest["subject"] == "newsletter" and "unsubscribe here" in latest["text"]
    invoice = api.get(base + "/messages?subject=invoice")[1][0]
    part = invoice["attachments"][0]["part"]
    assert api.get(f"{base}/messages/{invoice['uid']}/parts/{part}")[1] == b"\x00\x01binary"
    assert b"Subject: invoice 7" in api.get(f"{base}/messages/{invoice['uid']}/raw")[1]
    assert api.delete(base + "/messages?subject=newsletter")[1] == {"deleted": [latest["uid"]]}
    assert [m["subject"] for m in api.get(base + "/messages")[1]] == ["invoice 7"]
    assert api.delete(base + "/messages")[1] == {"deleted": [invoice["uid"]]}
    assert api.get(base + "/messages/latest")[0] == 404
    assert api.post("/mail/users", {"address": "carol@example.test", "password": "pw-carol-1"})[0] == 200
    assert api.post("/mail/users", {"address": "nobody"})[0] == 400
    assert api.delete("/mail/users/carol@example.test")[1] == {"removed": "carol@example.test"}
    assert "carol@example.test" not in [u["address"] for u in api.get("/mail/users")[1]]
    assert api.delete("/mail/users/carol@example.test")[0] == 404


def test_passwords_never_appear_in_any_response(bed, api):
    smtp = bed["smtp"]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.starttls()
        client.login("alice@example.test", "hunter2-pw")
    pop_free = [api.get(p, raw=True)[1] for p in ("/mail/users", "/scenario", "/journal?limit=1000",
                                                  "/journal.jsonl", "/connections/smtp/1")]
    for body in pop_free:
        assert b"hunter2-pw" not in body
    assert b"hunter2-pw" not in api.get("/scenario?format=toml")[1]


def test_smtp_http_dns_and_ftp_holdings(bed, api):
    send_mail(bed)
    assert api.get("/servers/smtp/messages")[1][0]["rcpt_to"] == ["alice@example.test"]
    http_server = bed["http"]
    assert api.post("/servers/http/routes", {"path": "/api/*", "status": 201, "body": "made"})[0] == 200
    with urllib.request.urlopen(http_server.url + "/api/x", timeout=10) as response:
        assert response.status == 201 and response.read() == b"made"
    try:
        urllib.request.urlopen(urllib.request.Request(http_server.url + "/ping", method="POST"), timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    requests = api.get("/servers/http/requests")[1]
    assert [(r["path"], r["matched"]) for r in requests] == [("/api/x", "GET /api/*"), ("/ping", None)]
    assert requests[1]["near_miss"] == {"route": "GET /ping", "missed": ["method"]}
    routes = api.get("/servers/http/routes")[1]
    assert [(r["path"], r["hits"], r["runtime"]) for r in routes] == [("/api/*", 1, True), ("/ping", 0, False)]
    assert api.post("/servers/http/routes", {"path": "/x", "status": "two"})[0] == 400
    assert api.delete("/servers/http/routes")[1] == {"removed": 1}

    assert api.post("/servers/dns/records", {"name": "new.example.test", "type": "A", "value": "10.0.0.9"})[0] == 200
    answer = dns.query.udp(dns.message.make_query("new.example.test", "A"), "127.0.0.1", port=bed["dns"].port,
                           timeout=5)
    assert answer.answer[0][0].address == "10.0.0.9"
    assert api.get("/servers/dns/queries")[1][0]["name"] == "new.example.test"
    records = api.get("/servers/dns/records")[1]
    assert any(r["name"] == "new.example.test" for rs in records.values() for r in rs)
    assert api.delete("/servers/dns/records?name=new.example.test")[1] == {"removed": 1}

    assert api.put("/servers/ftp/files/pub/data.txt", b"from the api")[0] == 200
    ftp = ftplib.FTP()
    ftp.connect(bed["ftp"].host, bed["ftp"].port, timeout=10)
    ftp.login("alice@example.test", "hunter2-pw")
    chunks = []
    ftp.retrbinary("RETR pub/data.txt", chunks.append)
    ftp.storbinary("STOR up.txt", __import__("io").BytesIO(b"uploaded"))
    ftp.quit()
    assert b"".join(chunks) == b"from the api"
    assert api.get("/servers/ftp/files")[1]["up.txt"] == 8
    assert api.get("/servers/ftp/files/up.txt")[1] == b"uploaded"
    assert [u["path"] for u in api.get("/servers/ftp/uploads")[1]] == ["up.txt"]
    assert api.delete("/servers/ftp/files/up.txt")[0] == 200
    assert api.get("/servers/ftp/files/up.txt")[0] == 404
    assert api.get("/servers/ftp/files/../etc/passwd")[0] in (400, 404)
    assert api.get("/servers/smtp/requests")[0] == 404


def test_reset_seed_ca_metrics_and_probes(bed, api):
    send_mail(bed)
    root = Api(bed.control.url)
    metrics = root.get("/metrics")[1].decode()
    assert 'testbed_connections_total{server="smtp"} 1' in metrics
    assert "testbed_messages_stored 1" in metrics
    assert root.get("/livez")[1] == {"live": True} and root.get("/readyz")[1] == {"ready": True}
    assert api.get("/ca.pem")[1].startswith(b"-----BEGIN CERTIFICATE-----")
    assert api.put("/seed", {"seed": 77})[1] == {"seed": 77}
    assert api.get("/info")[1]["seed"] == 77
    assert api.put("/seed", {"seed": "x"})[0] == 400
    assert api.post("/reset")[0] == 200
    assert api.get("/servers/smtp/messages")[1] == [] and api.get("/journal")[1]["events"] == []
    assert api.get("/nope")[0] == 404 and api.call("PATCH", "/faults")[0] == 405


def test_cross_site_browser_requests_may_not_change_anything(bed, api):
    own = bed.control.url
    assert api.post("/reset", headers={"Origin": "http://evil.example"})[0] == 403
    assert api.post("/reset", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert api.post("/reset", headers={"Origin": own})[0] == 200
    assert api.get("/info", headers={"Origin": "http://evil.example"})[0] == 200


def test_a_token_guards_every_request():
    bed = start({"control": {"listen": "tcp:0:interface=127.0.0.1", "token": "t0k3n"},
                 "servers": {name: {"enabled": False} for name in ("http", "pop3", "imap", "ftp", "dns", "echo")}},
                listen="tcp:0:interface=127.0.0.1")
    try:
        assert Api(bed.control.url + "/api/v1").get("/info")[0] == 401
        assert Api(bed.control.url).get("/metrics")[0] == 401
        good = Api(bed.control.url + "/api/v1", headers={"Authorization": "Bearer t0k3n"})
        assert good.get("/info")[0] == 200
        assert Api(bed.control.url).get("/?token=wrong")[0] == 401
        # A browser opens the dashboard once with the token; the cookie it gets carries it from then on.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(bed.control.url + "/?token=t0k3n", timeout=10) as response:
            assert response.status == 200 and "HttpOnly" in response.headers["set-cookie"]
        with opener.open(bed.control.url + "/api/v1/info", timeout=10) as response:
            assert response.status == 200
    finally:
        stop(bed)


def test_a_non_loopback_listen_without_a_token_is_a_scenario_error():
    from testbed import ScenarioError, from_dict

    with pytest.raises(ScenarioError, match=r"control.token: expected a token"):
        from_dict({"control": {"listen": "tcp:0"}})
    with pytest.raises(ScenarioError, match=r"control.listen: expected a Twisted endpoint"):
        from_dict({"control": {"listen": "tcp:nope"}})
    assert from_dict({"control": {"listen": "tcp:0:interface=0.0.0.0", "token": "x"}}).control.token == "x"
