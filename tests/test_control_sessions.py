"""Sessions: two tests sharing one testbed see only their own mail, requests, queries, events and faults."""

import smtplib
import urllib.request

import dns.message
import dns.query
import dns.rcode
import pytest

from _control import Api, start, stop


@pytest.fixture(scope="module")
def bed():
    bed = start({"servers": {"dns": {"records": {"example.test": {"A": "10.0.0.1"}}},
                             "pop3": {"enabled": False}, "imap": {"enabled": False}, "ftp": {"enabled": False}}})
    yield bed
    stop(bed)


def traffic(bed, session):
    """What a client under test would do, tagged the natural way for its session."""
    smtp = bed["smtp"]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.sendmail("app@example.test", [f"alice+{session}@example.test"], f"Subject: {session}\r\n\r\nhi\r\n")
    request = urllib.request.Request(bed["http"].url + "/anything", headers={"X-Testbed-Session": session})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError:
        pass  # no route: a 404 is still a request the server recorded
    query = dns.message.make_query(f"app.{session}.example.test", "A")
    return dns.query.udp(query, "127.0.0.1", port=bed["dns"].port, timeout=5)


def test_two_sessions_never_see_each_other(bed):
    root = Api(bed.control.url + "/api/v1")
    root.post("/reset")
    one, two = (root.post("/sessions")[1]["id"] for _ in range(2))
    a = Api(root.base, headers={"X-Testbed-Session": one})
    b = Api(root.base + "", headers={"X-Testbed-Session": two})
    added = a.post("/faults", {"server": "dns", "on": "query", "action": "reply", "rcode": "SERVFAIL"})
    assert added[0] == 200
    assert dns.rcode.to_text(traffic(bed, one).rcode()) == "SERVFAIL"
    assert dns.rcode.to_text(traffic(bed, two).rcode()) != "SERVFAIL"  # the other session's fault never fires here

    for api, mine in ((a, one), (b, two)):
        assert [m["subject"] for m in api.get("/servers/smtp/messages")[1]] == [mine]
        assert [r["headers"] for r in api.get("/servers/http/requests")[1]][0].count(["x-testbed-session", mine]) == 1
        assert len(api.get("/servers/http/requests")[1]) == 1
        assert [q["name"] for q in api.get("/servers/dns/queries")[1]] == [f"app.{mine}.example.test"]
        assert [u["address"] for u in api.get("/mail/users")[1]] == [f"alice+{mine}@example.test"]
        servers = {e["server"] for e in api.get("/journal?limit=1000")[1]["events"]}
        assert servers == {"smtp", "http", "dns"}
        assert api.get("/wait?kind=stored&server=smtp&timeout=5")[1]["events"][0]["rcpt"] == [
            f"alice+{mine}@example.test"]
    assert [f["key"] for f in a.get("/faults")[1]] == [added[1]["id"]] and b.get("/faults")[1] == []
    # Everything is still there for a caller without a session.
    assert len(root.get("/servers/smtp/messages")[1]) == 2

    assert root.delete(f"/sessions/{one}")[0] == 200
    assert a.get("/servers/smtp/messages")[0] == 404  # closed
    assert root.get("/faults")[1] == []
    assert len(b.get("/servers/smtp/messages")[1]) == 1


def test_a_session_fault_must_sit_where_the_tag_is_seen(bed):
    root = Api(bed.control.url + "/api/v1")
    session = root.post("/sessions")[1]["id"]
    status, body = root.post("/faults?session=" + session, {"server": "smtp", "on": "connect", "action": "reset"})
    assert status == 400 and "SMTP RCPT" in body["error"]
    assert root.get("/journal?session=nope")[0] == 404
