"""The DNS server end to end over loopback: dnspython and dig through the pytest fixtures, with faults."""

import pathlib
import socket
import subprocess

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from _clients import DIG

ZONE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "zones" / "example.test.zone"
BIG = [c * 200 for c in "abcdefgh"]  # about 1.7 KB of TXT: over 512 and over dig's 1232

SCENARIO = {
    "seed": 7,
    "servers": {
        "http": {"enabled": False},
        "dns": {
            "enabled": True,
            "zone_files": [str(ZONE)],
            "records": {
                "big.example.test": {"TXT": BIG},
                "api.records.test": {"A": ["192.0.2.80", "192.0.2.81"]},
                "192.0.2.10": {"PTR": "www.example.test"},
            },
        },
    },
}



@pytest.fixture
def testbed_scenario():
    return SCENARIO


def ask(server, name, rdtype="A", tcp=False, timeout=2.0, **kwargs):
    q = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(q, server.host, port=server.port, timeout=timeout, **kwargs)


def resolver(server, timeout=2.0):
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.timeout = r.lifetime = timeout
    return r


def dig(server, *args):
    result = subprocess.run([DIG, f"@{server.host}", "-p", str(server.port), "+time=2", "+tries=1", *args],
                            capture_output=True, text=True, timeout=20)
    return result.stdout


def texts(answer):
    return sorted(rdata.to_text() for rdata in answer)


# -- answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name, rdtype, expected", [
    ("www.example.test", "A", ["192.0.2.10"]),
    ("www.example.test", "AAAA", ["2001:db8::10"]),
    ("web.example.test", "CNAME", ["www.example.test."]),
    ("example.test", "MX", ["10 mail.example.test.", "20 mail2.example.test."]),
    ("txt.example.test", "TXT", ['"hello world" "second string"']),
    ("_imaps._tcp.example.test", "SRV", ["0 5 993 mail.example.test."]),
    ("example.test", "NS", ["ns1.example.test.", "ns2.example.test."]),
    ("example.test", "SOA", ["ns1.example.test. hostmaster.example.test. 2024010101 7200 900 1209600 300"]),
    ("10.2.0.192.in-addr.arpa", "PTR", ["www.example.test."]),
    ("api.records.test", "A", ["192.0.2.80", "192.0.2.81"]),
])
def test_every_type_resolves(dns_server, name, rdtype, expected, tcp):
    answer = resolver(dns_server).resolve(name, rdtype, tcp=tcp)
    assert texts(answer) == expected
    (query,) = dns_server.queries
    assert (query.name, query.type, query.transport, query.rcode) == (name, rdtype, "tcp" if tcp else "udp", "NOERROR")


def test_cname_is_chased_and_mx_brings_glue(dns_server):
    r = ask(dns_server, "alias.example.test")
    assert [rrset.name.to_text() for rrset in r.answer] == ["alias.example.test.", "web.example.test.",
                                                            "www.example.test."]
    assert texts(resolver(dns_server).resolve("alias.example.test")) == ["192.0.2.10"]
    mx = ask(dns_server, "example.test", "MX")
    assert sorted(rrset.name.to_text() for rrset in mx.additional) == ["mail.example.test.", "mail2.example.test."]
    assert dns_server.queries[0].answer[-1] == "www.example.test. 600 IN A 192.0.2.10"


def test_nxdomain_carries_the_soa(dns_server):
    r = ask(dns_server, "nope.example.test")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    (soa,) = r.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 300
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver(dns_server).resolve("nope.example.test")


def test_names_outside_the_zones_are_refused(dns_server):
    assert ask(dns_server, "www.example.com").rcode() == dns.rcode.REFUSED
    assert dns_server.queries[0].rcode == "REFUSED"


def test_a_large_answer_sets_tc_and_the_client_falls_back_to_tcp(dns_server):
    r, used_tcp = dns.query.udp_with_fallback(dns.message.make_query("big.example.test", "TXT"), dns_server.host,
                                             port=dns_server.port, timeout=2)
    assert used_tcp and len(r.answer[0]) == 8
    assert [(q.transport, q.truncated) for q in dns_server.queries] == [("udp", True), ("tcp", False)]


def test_runtime_records_are_served(dns_server):
    dns_server.add_record("new.example.test", "A", "192.0.2.99", ttl=60)
    r = ask(dns_server, "new.example.test")
    assert r.answer[0].ttl == 60 and texts(r.answer[0]) == ["192.0.2.99"]
    dns_server.add_record("fresh.zone.test", "TXT", "brand new")
    assert texts(resolver(dns_server).resolve("fresh.zone.test", "TXT")) == ['"brand new"']
    assert dns_server.remove_record("new.example.test") == 1
    assert ask(dns_server, "new.example.test").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ValueError):
        dns_server.add_record("bad.example.test", "A", "not-an-address")


def test_runtime_records_are_gone_in_the_next_test(dns_server):
    assert ask(dns_server, "fresh.zone.test").rcode() == dns.rcode.REFUSED
    assert ask(dns_server, "new.example.test").rcode() == dns.rcode.NXDOMAIN
    assert texts(ask(dns_server, "www.example.test").answer[0]) == ["192.0.2.10"]


def test_wait_for_queries_and_the_journal(dns_server):
    ask(dns_server, "www.example.test")
    ask(dns_server, "mail.example.test", tcp=True)
    assert len(dns_server.wait_for(2, timeout=2)) == 2
    (mail,) = dns_server.wait_for(lambda q: q.name == "mail.example.test", timeout=2)
    assert mail.transport == "tcp" and mail.answer == ["mail.example.test. 3600 IN A 192.0.2.25"]
    commands = [(e["name"], e["transport"]) for e in dns_server.journal if e["kind"] == "command"]
    assert commands == [("www.example.test", "udp"), ("mail.example.test", "tcp")]
    assert [e["rcode"] for e in dns_server.journal if e["kind"] == "reply"] == ["NOERROR", "NOERROR"]


def test_garbage_datagrams_do_not_stop_the_server(dns_server, testbed):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect((dns_server.host, dns_server.port))
        s.send(b"\x00")
        s.send(b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 20)  # a query header, then junk
        formerr = dns.message.from_wire(s.recv(512))
        assert formerr.id == 0x1234 and formerr.rcode() == dns.rcode.FORMERR
    assert len([e for e in dns_server.journal if e["kind"] == "error"]) == 2
    assert ask(dns_server, "www.example.test").answer


# -- faults seen by dnspython --------------------------------------------------------------


@pytest.mark.parametrize("rcode", ["SERVFAIL", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP"])
def test_reply_fault_rcodes(dns_server, testbed, rcode):
    testbed.faults.add(server="dns", on="query", action="reply", rcode=rcode, match={"name": "www.*"})
    r = ask(dns_server, "www.example.test")
    assert r.rcode() == dns.rcode.from_text(rcode) and not r.answer
    assert ask(dns_server, "mail.example.test").rcode() == dns.rcode.NOERROR


@pytest.mark.fault(server="dns", on="query", action="reply", rcode="SERVFAIL")
def test_servfail_is_an_error_to_the_resolver(dns_server):
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        resolver(dns_server).resolve("www.example.test")


@pytest.mark.fault(server="dns", on="query", action="reply", rcode="NXDOMAIN", match={"type": "AAAA"})
def test_nxdomain_fault_for_one_type(dns_server):
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver(dns_server).resolve("www.example.test", "AAAA")
    assert texts(resolver(dns_server).resolve("www.example.test", "A")) == ["192.0.2.10"]


@pytest.mark.fault(server="dns", on="query", action="drop", match={"transport": "udp"})
def test_drop_times_out(dns_server):
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "www.example.test", timeout=1)
    assert dns_server.queries[0].sent is False
    assert ask(dns_server, "www.example.test", tcp=True).answer


@pytest.mark.fault(server="dns", on="query", action="delay", seconds=0.2)
def test_delay_answers_late(dns_server):
    assert ask(dns_server, "www.example.test").answer
    command, reply = (e for e in dns_server.journal if e["kind"] == "data")
    assert reply["t"] - command["t"] >= 0.2


@pytest.mark.fault(server="dns", on="query", action="duplicate", copies=2)
def test_duplicate_answers_are_harmless_to_the_client(dns_server, testbed):
    assert texts(ask(dns_server, "www.example.test").answer[0]) == ["192.0.2.10"]
    # the client returns on the first copy, maybe before the reactor thread has sent the others
    sent = testbed.journal.wait(lambda: len(testbed.journal.query("data", server="dns", direction="down")) == 3, 2)
    assert sent


@pytest.mark.fault(server="dns", on="query", action="corrupt", rate=1.0)
def test_corrupt_reply_is_rejected(dns_server):
    with pytest.raises(dns.exception.DNSException):
        ask(dns_server, "www.example.test")


@pytest.mark.fault(server="dns", on="query", action="truncate", match={"transport": "udp"})
def test_truncate_fault_makes_the_client_retry_over_tcp(dns_server):
    r, used_tcp = dns.query.udp_with_fallback(dns.message.make_query("www.example.test", "A"), dns_server.host,
                                             port=dns_server.port, timeout=2)
    assert used_tcp and texts(r.answer[0]) == ["192.0.2.10"]
    assert [(q.transport, q.fault) for q in dns_server.queries] == [("udp", "truncate"), ("tcp", None)]


@pytest.mark.fault(server="dns", on="query", action="wrong_id")
def test_wrong_id_is_a_bad_response(dns_server):
    with pytest.raises(dns.query.BadResponse):
        ask(dns_server, "www.example.test")


@pytest.mark.fault(server="dns", on="query", action="wrong_id", match={"transport": "udp"})
def test_wrong_id_ignored_by_a_careful_client_is_a_timeout(dns_server):
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "www.example.test", timeout=0.5, ignore_errors=True)


@pytest.mark.fault(server="dns", on="query", action="wrong_question", qname="other.example.test")
def test_wrong_question_is_a_bad_response(dns_server):
    with pytest.raises(dns.query.BadResponse):
        ask(dns_server, "www.example.test")


@pytest.mark.fault(server="dns", on="query", action="wrong_name", owner="evil.example.test")
def test_answer_for_another_name_is_no_answer(dns_server):
    r = ask(dns_server, "www.example.test")
    assert r.answer[0].name.to_text() == "evil.example.test."
    with pytest.raises(dns.resolver.NoAnswer):
        resolver(dns_server).resolve("www.example.test")


@pytest.mark.fault(server="dns", on="query", action="nodata")
def test_nodata_is_no_answer(dns_server):
    with pytest.raises(dns.resolver.NoAnswer):
        resolver(dns_server).resolve("www.example.test")


@pytest.mark.fault(server="dns", on="query", action="ttl", ttl=5)
def test_ttl_override(dns_server):
    assert resolver(dns_server).resolve("www.example.test").rrset.ttl == 5


@pytest.mark.fault(server="dns", on="query", action="garbage", bytes=40)
def test_garbage_reply_is_rejected(dns_server):
    with pytest.raises(dns.exception.DNSException):
        ask(dns_server, "www.example.test")


@pytest.mark.fault(server="dns", on="query", action="tcp_length_only")
def test_tcp_length_only_is_an_eof(dns_server):
    with pytest.raises(EOFError):
        ask(dns_server, "www.example.test", tcp=True)


@pytest.mark.fault(server="dns", on="query", action="tcp_partial", bytes=10)
def test_tcp_partial_is_an_eof(dns_server):
    with pytest.raises(EOFError):
        ask(dns_server, "www.example.test", tcp=True)


@pytest.mark.fault(server="dns", on="connect", action="reset")
def test_reset_at_connect(dns_server):
    with pytest.raises(ConnectionResetError):
        ask(dns_server, "www.example.test", tcp=True)
    assert ask(dns_server, "www.example.test").answer  # UDP has no connect


@pytest.mark.fault(server="dns", on="datagram", action="drop", direction="up")
def test_datagram_stage_drop_before_the_server_sees_it(dns_server):
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, "www.example.test", timeout=0.5)
    assert dns_server.queries == []


# -- dig --------------------------------------------------------------------------------


def test_dig_over_udp_and_tcp(dns_server):
    assert dig(dns_server, "www.example.test", "A", "+short").split() == ["192.0.2.10"]
    assert dig(dns_server, "+tcp", "example.test", "MX", "+short").splitlines() == ["10 mail.example.test.",
                                                                                    "20 mail2.example.test."]
    assert dig(dns_server, "-x", "192.0.2.10", "+short").split() == ["www.example.test."]
    assert "status: NXDOMAIN" in dig(dns_server, "nope.example.test")
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp", "udp", "udp"]


def test_dig_retries_a_truncated_answer_over_tcp(dns_server):
    out = dig(dns_server, "big.example.test", "TXT")
    assert "Truncated, retrying in TCP mode" in out
    assert out.count("IN\tTXT\t\"") == 8
    assert [(q.transport, q.truncated) for q in dns_server.queries] == [("udp", True), ("tcp", False)]


@pytest.mark.fault(server="dns", on="query", action="truncate", match={"transport": "udp"})
def test_dig_retries_over_tcp_on_a_truncate_fault(dns_server):
    out = dig(dns_server, "www.example.test", "A")
    assert "Truncated, retrying in TCP mode" in out and "192.0.2.10" in out


@pytest.mark.fault(server="dns", on="query", action="reply", rcode="SERVFAIL")
def test_dig_sees_servfail(dns_server):
    assert "status: SERVFAIL" in dig(dns_server, "www.example.test")
