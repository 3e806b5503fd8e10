"""Tests for testbed.servers.dns.records: ZoneSet lookups, zones, zone files, errors, and a live DNS server."""

import ipaddress
import threading

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from twisted.internet import defer, threads
from twisted.names import dns as tdns
from twisted.names import error as terror
from twisted.names import resolve, server
from twisted.python import threadable

from testbed.servers.dns.records import (
    Zone,
    ZoneNameError,
    ZoneRefusedError,
    ZoneServerFactory,
    ZoneSet,
)

RECORDS = {
    "www.example.test": {"A": "127.0.0.5", "MX": ["10 mail.example.test"], "TXT": "v=spf1 -all"},
    "mail.example.test": {"A": "127.0.0.6", "AAAA": "::1"},
    "alias.example.test": {"CNAME": "www.example.test"},
    "alias2.example.test.": {"CNAME": "alias.example.test."},
    "cross.example.test": {"CNAME": "host.other.test"},
    "away.example.test": {"CNAME": "somewhere.invalid"},
    "dangling.example.test": {"CNAME": "missing.example.test"},
    "loop1.example.test": {"CNAME": "loop2.example.test"},
    "loop2.example.test": {"CNAME": "loop1.example.test"},
    "_sip._tcp.example.test": {"SRV": "10 5 5060 mail.example.test"},
    "example.test": {"NS": ["ns1.example.test", "ns2.example.test"]},
    "ns1.example.test": {"A": "127.0.0.53"},
    "v6.example.test": {"AAAA": "2001:db8::1"},
    "127.0.0.5": {"PTR": "www.example.test"},
    "other.test": {
        "SOA": "ns.other.test hostmaster.other.test 42 7200 900 604800 60",
        "NS": "ns.other.test",
    },
    "host.other.test": {"A": "127.0.0.7"},
}


@pytest.fixture
def zs():
    return ZoneSet(RECORDS)


def section(rrs):
    """[(owner, type name, payload)] of a list of RRHeader."""
    return [(rr.name.name.decode(), tdns.QUERY_TYPES[rr.type], rr.payload) for rr in rrs]


def synthesised_soa(zone, serial=1, ttl=300):
    return tdns.Record_SOA(
        f"ns.{zone}", f"hostmaster.{zone}", serial, 3600, 600, 86400, ttl, ttl=ttl
    )


def result_of(d):
    """The result of an already-fired Deferred (a Failure on error)."""
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


# -- answers for every type ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, qtype, expected",
    [
        ("www.example.test", tdns.A, [tdns.Record_A("127.0.0.5", ttl=300)]),
        ("v6.example.test", tdns.AAAA, [tdns.Record_AAAA("2001:db8::1", ttl=300)]),
        ("alias.example.test", tdns.CNAME, [tdns.Record_CNAME("www.example.test", ttl=300)]),
        ("www.example.test", tdns.MX, [tdns.Record_MX(10, "mail.example.test", ttl=300)]),
        ("www.example.test", tdns.TXT, [tdns.Record_TXT(b"v=spf1 -all", ttl=300)]),
        ("_sip._tcp.example.test", tdns.SRV, [tdns.Record_SRV(10, 5, 5060, "mail.example.test", ttl=300)]),
        (
            "example.test",
            tdns.NS,
            [tdns.Record_NS("ns1.example.test", ttl=300), tdns.Record_NS("ns2.example.test", ttl=300)],
        ),
        (
            "other.test",
            tdns.SOA,
            [tdns.Record_SOA("ns.other.test", "hostmaster.other.test", 42, 7200, 900, 604800, 60, ttl=300)],
        ),
        ("5.0.0.127.in-addr.arpa", tdns.PTR, [tdns.Record_PTR("www.example.test", ttl=300)]),
    ],
)
def test_answers_every_type(zs, name, qtype, expected):
    rcode, answers, authority, _ = zs.lookup(name, qtype)
    assert rcode == tdns.OK
    assert [rr.payload for rr in answers] == expected
    assert all(rr.name.name == name.encode() and rr.type == qtype and rr.auth for rr in answers)
    assert all(rr.ttl == 300 for rr in answers)
    assert authority == []


def test_type_may_be_given_by_name(zs):
    assert zs.lookup("www.example.test", "a") == zs.lookup("www.example.test", tdns.A)
    assert zs.lookup("www.example.test", "ANY")[1] == zs.lookup("www.example.test", tdns.ALL_RECORDS)[1]
    with pytest.raises(ValueError, match="unknown query type"):
        zs.lookup("www.example.test", "BOGUS")


def test_mx_answer_carries_target_addresses(zs):
    _, _, _, additional = zs.lookup("www.example.test", tdns.MX)
    assert section(additional) == [
        ("mail.example.test", "A", tdns.Record_A("127.0.0.6", ttl=300)),
        ("mail.example.test", "AAAA", tdns.Record_AAAA("::1", ttl=300)),
    ]


def test_srv_and_ns_answers_carry_target_addresses(zs):
    _, _, _, additional = zs.lookup("_sip._tcp.example.test", tdns.SRV)
    assert [owner for owner, _, _ in section(additional)] == ["mail.example.test", "mail.example.test"]
    _, _, _, additional = zs.lookup("example.test", tdns.NS)
    # ns2 has no address: only ns1's.
    assert section(additional) == [("ns1.example.test", "A", tdns.Record_A("127.0.0.53", ttl=300))]


def test_txt_keeps_spaces_and_splits_long_strings():
    long = "k=" + "x" * 600
    zs = ZoneSet({"t.example.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all", long, '"two" "strings"']}})
    _, answers, _, _ = zs.lookup("t.example.test", tdns.TXT)
    data = [rr.payload.data for rr in answers]
    assert data[0] == [b"v=spf1 ip4:127.0.0.1 -all"]
    assert b"".join(data[1]) == long.encode() and [len(s) for s in data[1]] == [255, 255, 92]
    assert data[2] == [b"two", b"strings"]
    # Long TXT data still encodes on the wire.
    msg = tdns.Message(answer=1)
    msg.answers = answers
    assert tdns.Message().fromStr(msg.toStr()) is None


def test_ip_address_owner_is_stored_under_reverse_name():
    zs = ZoneSet({"127.0.0.5": {"PTR": "www.example.test"}, "2001:db8::1": {"PTR": "v6.example.test"}})
    v6_reverse = "1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa"
    assert v6_reverse == ipaddress.ip_address("2001:db8::1").reverse_pointer
    assert set(zs.zones()) == {"0.0.127.in-addr.arpa", v6_reverse.partition(".")[2]}
    rcode, answers, _, _ = zs.lookup(v6_reverse, "PTR")
    assert rcode == tdns.OK and answers[0].payload == tdns.Record_PTR("v6.example.test", ttl=300)


def test_default_ttl_and_per_record_ttl():
    zs = ZoneSet({"www.example.test": {"A": "127.0.0.5"}}, default_ttl=60)
    zs.add_record("short.example.test", "A", "127.0.0.9", ttl=5)
    assert zs.lookup("www.example.test", tdns.A)[1][0].ttl == 60
    assert zs.lookup("short.example.test", tdns.A)[1][0].ttl == 5
    assert zs.lookup("example.test", tdns.SOA)[1][0].payload.minimum == 60


def test_names_are_case_insensitive_and_trailing_dots_optional(zs):
    expected = zs.lookup("www.example.test", tdns.A)
    for name in ("WWW.Example.TEST", "www.example.test.", b"Www.Example.Test.", tdns.Name("www.EXAMPLE.test")):
        assert zs.lookup(name, tdns.A) == expected
    zs2 = ZoneSet({"MiXeD.Example.Test.": {"CNAME": "WWW.Example.Test."}, "www.example.test": {"A": "127.0.0.5"}})
    _, answers, _, _ = zs2.lookup("mixed.example.test", tdns.A)
    assert [p for _, _, p in section(answers)] == [
        tdns.Record_CNAME("www.example.test", ttl=300),
        tdns.Record_A("127.0.0.5", ttl=300),
    ]


# -- CNAME chasing ---------------------------------------------------------------------------


def test_cname_is_chased_through_the_chain(zs):
    rcode, answers, authority, _ = zs.lookup("alias2.example.test", tdns.A)
    assert rcode == tdns.OK
    assert section(answers) == [
        ("alias2.example.test", "CNAME", tdns.Record_CNAME("alias.example.test", ttl=300)),
        ("alias.example.test", "CNAME", tdns.Record_CNAME("www.example.test", ttl=300)),
        ("www.example.test", "A", tdns.Record_A("127.0.0.5", ttl=300)),
    ]
    assert authority == []


def test_cname_chase_for_mx_brings_the_mx_and_its_additional_data(zs):
    rcode, answers, _, additional = zs.lookup("alias.example.test", tdns.MX)
    assert rcode == tdns.OK
    assert [t for _, t, _ in section(answers)] == ["CNAME", "MX"]
    assert [t for _, t, _ in section(additional)] == ["A", "AAAA"]


def test_cname_chase_crosses_served_zones(zs):
    _, answers, _, _ = zs.lookup("cross.example.test", tdns.A)
    assert section(answers)[-1] == ("host.other.test", "A", tdns.Record_A("127.0.0.7", ttl=300))


def test_cname_to_a_name_we_do_not_serve_returns_the_cname_only(zs):
    rcode, answers, authority, _ = zs.lookup("away.example.test", tdns.A)
    assert rcode == tdns.OK and [t for _, t, _ in section(answers)] == ["CNAME"] and authority == []


def test_cname_loop_terminates(zs):
    rcode, answers, _, _ = zs.lookup("loop1.example.test", tdns.A)
    assert rcode == tdns.OK
    assert [owner for owner, _, _ in section(answers)] == ["loop1.example.test", "loop2.example.test"]


def test_cname_chain_ending_in_nxdomain(zs):
    rcode, answers, authority, _ = zs.lookup("dangling.example.test", tdns.A)
    assert rcode == tdns.ENAME  # RFC 6604: the rcode is that of the last name
    assert [t for _, t, _ in section(answers)] == ["CNAME"]
    assert section(authority) == [("example.test", "SOA", synthesised_soa("example.test"))]


def test_cname_chain_ending_in_nodata(zs):
    rcode, answers, authority, _ = zs.lookup("alias.example.test", tdns.AAAA)
    assert rcode == tdns.OK
    assert [t for _, t, _ in section(answers)] == ["CNAME"]
    assert [t for _, t, _ in section(authority)] == ["SOA"]


# -- negative answers ------------------------------------------------------------------------


def test_nxdomain_has_the_zone_soa_in_authority(zs):
    rcode, answers, authority, additional = zs.lookup("nope.example.test", tdns.A)
    assert (rcode, answers, additional) == (tdns.ENAME, [], [])
    assert section(authority) == [("example.test", "SOA", synthesised_soa("example.test"))]
    assert authority[0].auth
    rcode, _, authority, _ = zs.lookup("deep.nope.other.test", tdns.MX)
    assert rcode == tdns.ENAME
    # Negative-answer TTL is min(SOA TTL, SOA minimum) (RFC 2308).
    assert authority[0].name.name == b"other.test" and authority[0].ttl == 60


def test_nodata_is_noerror_with_soa(zs):
    rcode, answers, authority, additional = zs.lookup("www.example.test", tdns.AAAA)
    assert (rcode, answers, additional) == (tdns.OK, [], [])
    assert section(authority) == [("example.test", "SOA", synthesised_soa("example.test"))]


def test_empty_non_terminal_is_nodata(zs):
    rcode, answers, authority, _ = zs.lookup("_tcp.example.test", tdns.SRV)
    assert (rcode, answers) == (tdns.OK, []) and [t for _, t, _ in section(authority)] == ["SOA"]


@pytest.mark.parametrize("name", ["example.org", "test", "www.example.test.org", "elsewhere.invalid"])
def test_name_outside_every_zone_is_refused(zs, name):
    assert zs.lookup(name, tdns.A) == (tdns.EREFUSED, [], [], [])


# -- the IResolver side ----------------------------------------------------------------------


def test_query_fires_with_the_three_sections(zs):
    answers, authority, additional = result_of(zs.query(tdns.Query("www.example.test", tdns.MX)))
    assert [t for _, t, _ in section(answers)] == ["MX"] and authority == [] and len(additional) == 2
    # ResolverBase convenience methods go through the same path.
    answers, _, _ = result_of(zs.lookupAddress("alias.example.test"))
    assert [t for _, t, _ in section(answers)] == ["CNAME", "A"]
    answers, _, _ = result_of(zs.lookupAllRecords("www.example.test"))
    assert sorted(t for _, t, _ in section(answers)) == ["A", "MX", "TXT"]


def test_query_nodata_fires_with_soa(zs):
    answers, authority, _ = result_of(zs.query(tdns.Query("www.example.test", tdns.AAAA)))
    assert answers == [] and [t for _, t, _ in section(authority)] == ["SOA"]


def test_query_nxdomain_fails_with_authoritative_domain_error(zs):
    failure = result_of(zs.query(tdns.Query("nope.example.test", tdns.A)))
    assert failure.check(ZoneNameError)
    assert isinstance(failure.value, terror.AuthoritativeDomainError)
    assert [t for _, t, _ in section(failure.value.authority)] == ["SOA"]


def test_query_outside_fails_with_refused_error(zs):
    failure = result_of(zs.query(tdns.Query("www.example.org", tdns.A)))
    assert failure.check(ZoneRefusedError)
    assert isinstance(failure.value, terror.DNSQueryRefusedError)
    assert isinstance(failure.value, terror.DomainError)  # so a ResolverChain tries the next resolver
    failure = result_of(zs.query(tdns.Query("www.example.test", tdns.A, tdns.CH)))
    assert failure.check(ZoneRefusedError)


def test_resolver_chain_falls_through_on_refused_and_stops_on_nxdomain(zs):
    fallback = ZoneSet({"www.example.org": {"A": "127.0.0.99"}})
    chain = resolve.ResolverChain([zs, fallback])
    answers, _, _ = result_of(chain.query(tdns.Query("www.example.org", tdns.A)))
    assert answers[0].payload == tdns.Record_A("127.0.0.99", ttl=300)
    failure = result_of(chain.query(tdns.Query("nope.example.test", tdns.A)))
    assert failure.check(ZoneNameError)


def test_axfr_through_lookup_zone(zs):
    answers, authority, additional = result_of(zs.query(tdns.Query("other.test", tdns.AXFR)))
    kinds = [t for _, t, _ in section(answers)]
    assert kinds[0] == kinds[-1] == "SOA" and sorted(kinds[1:-1]) == ["A", "NS"]
    assert (authority, additional) == ([], [])
    assert result_of(zs.lookupZone("www.example.test")).check(ZoneRefusedError)


# -- zones and runtime changes ---------------------------------------------------------------


def test_zones_are_synthesised_per_parent_and_merged():
    assert ZoneSet({"www.a.test": {"A": "127.0.0.1"}, "mail.a.test": {"A": "127.0.0.2"}}).zones() == ["a.test"]
    assert ZoneSet({"www.a.test": {"A": "127.0.0.1"}, "www.b.test": {"A": "127.0.0.2"}}).zones() == ["a.test", "b.test"]
    # A name that is another name's parent is the apex itself.
    assert ZoneSet({"a.test": {"MX": "10 mx.a.test"}, "mx.a.test": {"A": "127.0.0.1"}}).zones() == ["a.test"]
    assert ZoneSet({"x.y.a.test": {"A": "127.0.0.1"}, "a.test": {"A": "127.0.0.2"}}).zones() == ["a.test"]
    assert ZoneSet({"x.y.a.test": {"A": "127.0.0.1"}, "z.a.test": {"A": "127.0.0.2"}}).zones() == ["a.test"]
    # A synthesised zone inside another is merged into the outer one.
    assert ZoneSet({"host.test": {"A": "127.0.0.1"}, "www.a.test": {"A": "127.0.0.2"}}).zones() == ["test"]
    # A single-label name is its own zone.
    assert ZoneSet({"localhost": {"A": "127.0.0.1"}}).zones() == ["localhost"]
    assert ZoneSet().zones() == []


def test_synthesised_soa(zs):
    rcode, answers, _, _ = zs.lookup("example.test", tdns.SOA)
    assert rcode == tdns.OK
    assert section(answers) == [("example.test", "SOA", synthesised_soa("example.test"))]
    zone = zs.zone("www.example.test")
    assert isinstance(zone, Zone) and zone.synthesised and zone.soa[0] == b"example.test"


def test_an_soa_makes_its_name_a_zone_apex():
    zs = ZoneSet(
        {
            "sub.example.test": {"SOA": "ns.sub.example.test hostmaster@example.test 9 3600 600 86400 30"},
            "www.sub.example.test": {"A": "127.0.0.1"},
            "www.example.test": {"A": "127.0.0.2"},
        }
    )
    assert zs.zones() == ["example.test", "sub.example.test"]
    assert not zs.zone("www.sub.example.test").synthesised
    rcode, _, authority, _ = zs.lookup("nope.sub.example.test", tdns.A)
    assert rcode == tdns.ENAME and authority[0].payload.serial == 9
    assert authority[0].payload.rname.name == b"hostmaster.example.test"


def test_add_record_at_runtime(zs):
    assert zs.lookup("new.example.test", tdns.A)[0] == tdns.ENAME
    zs.add_record("new.example.test", "A", "127.0.0.9")
    rcode, answers, _, _ = zs.lookup("NEW.example.test.", tdns.A)
    assert rcode == tdns.OK and answers[0].payload == tdns.Record_A("127.0.0.9", ttl=300)
    # The synthesised serial counts changes.
    assert zs.lookup("example.test", tdns.SOA)[1][0].payload.serial == 2
    # Same value again: replaced (new TTL), not duplicated.
    zs.add_record("new.example.test", "a", "127.0.0.9", ttl=10)
    assert [rr.ttl for rr in zs.lookup("new.example.test", tdns.A)[1]] == [10]


def test_add_record_creates_the_parent_zone(zs):
    assert zs.lookup("www.fresh.test", tdns.A)[0] == tdns.EREFUSED
    zs.add_record("www.fresh.test", "MX", "5 www.fresh.test")
    assert "fresh.test" in zs.zones()
    assert zs.lookup("www.fresh.test", tdns.MX)[0] == tdns.OK
    assert zs.lookup("other.fresh.test", tdns.A)[0] == tdns.ENAME


def test_add_record_rejects_bad_values(zs):
    with pytest.raises(ValueError, match=r"invalid MX record for 'x.example.test': 'mail.example.test'"):
        zs.add_record("x.example.test", "MX", "mail.example.test")
    with pytest.raises(ValueError, match="ttl must be an integer"):
        zs.add_record("x.example.test", "A", "127.0.0.1", ttl=-1)
    assert zs.lookup("x.example.test", tdns.A)[0] == tdns.ENAME


def test_remove_record(zs):
    assert zs.remove_record("www.example.test", "MX", "10 mail.example.test") == 1
    assert zs.lookup("www.example.test", tdns.MX)[1] == []
    assert zs.remove_record("www.example.test") == 2
    assert zs.lookup("www.example.test", tdns.A)[0] == tdns.ENAME
    zs.add_record("only.gone.test", "A", "127.0.0.1")
    assert zs.remove_record("only.gone.test", "A") == 1
    assert "gone.test" not in zs.zones()


def test_add_record_is_safe_while_another_thread_looks_up(zs):
    errors = []

    def reader():
        try:
            for _ in range(300):
                assert zs.lookup("www.example.test", tdns.A)[0] == tdns.OK
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(100):
        zs.add_record(f"h{i}.example.test", "A", f"127.0.1.{i}")
    thread.join()
    assert errors == []
    assert zs.lookup("h99.example.test", tdns.A)[0] == tdns.OK


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "records, message",
    [
        ({"www.x.test": {"A": "1.2.3"}}, "invalid A record for 'www.x.test': '1.2.3': not an IPv4 address"),
        ({"www.x.test": {"A": "::1"}}, "invalid A record for 'www.x.test': '::1'"),
        ({"www.x.test": {"AAAA": "127.0.0.1"}}, "invalid AAAA record for 'www.x.test': '127.0.0.1'"),
        ({"www.x.test": {"MX": "mail.x.test"}}, "invalid MX record for 'www.x.test': 'mail.x.test': expected"),
        ({"www.x.test": {"MX": "x mail.x.test"}}, "MX preference must be a number"),
        ({"s.x.test": {"SRV": "1 2 70000 t.x.test"}}, "invalid SRV record for 's.x.test': '1 2 70000 t.x.test'"),
        ({"x.test": {"SOA": "ns.x.test hostmaster.x.test 1 2"}}, "invalid SOA record for 'x.test'"),
        ({"x.test": {"SOA": ["a b 1 2 3 4 5", "c d 1 2 3 4 5"]}}, "at most one SOA"),
        ({"c.x.test": {"CNAME": "two names"}}, "invalid CNAME record for 'c.x.test': 'two names'"),
        ({"c.x.test": {"NS": "bad..name"}}, "invalid NS record for 'c.x.test': 'bad..name': empty label"),
        ({"c.x.test": {"PTR": ""}}, "invalid PTR record for 'c.x.test'"),
        ({"c.x.test": {"TXT": '"unterminated'}}, "invalid TXT record for 'c.x.test'"),
        ({"c.x.test": {"HINFO": "a b"}}, "unsupported record type 'HINFO' for 'c.x.test'"),
        ({"bad name.x.test": {"A": "127.0.0.1"}}, "invalid record name in A record for 'bad name.x.test'"),
        ({"www.x.test": {"A": 5}}, "invalid A record for 'www.x.test': 5"),
        ({"www.x.test": "127.0.0.1"}, "records for 'www.x.test' must be a mapping"),
    ],
)
def test_bad_values_name_the_record(records, message):
    with pytest.raises(ValueError) as excinfo:
        ZoneSet(records)
    assert message in str(excinfo.value)


def test_bad_default_ttl():
    with pytest.raises(ValueError, match="default_ttl"):
        ZoneSet({}, default_ttl=-5)


# -- zone files --------------------------------------------------------------------------------

MULTI_LINE_SOA = {
    "classic": """\
$ORIGIN example.test.
$TTL 1h
@   IN SOA ns.example.test. hostmaster.example.test. (
            2024010101 ; serial
            3600       ; refresh
            600        ; retry
            86400      ; expire
            300 )      ; minimum
""",
    "data after the parenthesis": """\
$ORIGIN example.test.
$TTL 1h
@   IN SOA ns hostmaster ( 2024010101 ; serial
            3600 600
            86400 300
            )
""",
    "parentheses on one line": """\
$ORIGIN example.test.
$TTL 3600
@ IN SOA ns.example.test. hostmaster.example.test. ( 2024010101 3600 600 86400 300 )
""",
    "ttl class order and units": """\
$ORIGIN example.test.
$TTL 3600
@ 1h IN SOA ns hostmaster (
    2024010101  ; serial (yyyymmddnn)
    1h 10m 1d
    5m
)
""",
}

ZONE_BODY = """\
@           IN NS   ns
ns          IN A    127.0.0.53
www         IN A    127.0.0.2
            IN AAAA ::2          ; blank owner: still www
mail   600  IN A    127.0.0.3
@           IN MX   10 mail
txt         IN TXT  "v=spf1 -all" "second; string"
alias       IN CNAME www
_sip._tcp   IN SRV  0 5 5060 mail.example.test.
1           IN PTR  www          ; a numeric owner is an owner, not a TTL
"""


@pytest.mark.parametrize("layout", sorted(MULTI_LINE_SOA))
def test_zone_file_with_multi_line_soa(tmp_path, layout):
    path = tmp_path / "example.test.zone"
    path.write_text(MULTI_LINE_SOA[layout] + ZONE_BODY)
    zs = ZoneSet(zone_files=[str(path)])
    assert zs.zones() == ["example.test"]
    _, answers, _, _ = zs.lookup("example.test", tdns.SOA)
    soa = answers[0].payload
    assert (soa.mname.name, soa.rname.name) == (b"ns.example.test", b"hostmaster.example.test")
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (2024010101, 3600, 600, 86400, 300)
    assert answers[0].ttl == 3600
    assert not zs.zone("example.test").synthesised

    def payloads(name, qtype):
        rcode, answers, _, _ = zs.lookup(name, qtype)
        assert rcode == tdns.OK
        return [rr.payload for rr in answers]

    assert payloads("www.example.test", tdns.A) == [tdns.Record_A("127.0.0.2", ttl=3600)]
    assert payloads("www.example.test", tdns.AAAA) == [tdns.Record_AAAA("::2", ttl=3600)]
    assert payloads("mail.example.test", tdns.A) == [tdns.Record_A("127.0.0.3", ttl=600)]
    assert payloads("example.test", tdns.MX) == [tdns.Record_MX(10, "mail.example.test", ttl=3600)]
    assert payloads("example.test", tdns.NS) == [tdns.Record_NS("ns.example.test", ttl=3600)]
    assert payloads("txt.example.test", tdns.TXT)[0].data == [b"v=spf1 -all", b"second; string"]
    assert [p.TYPE for p in payloads("alias.example.test", tdns.A)] == [tdns.CNAME, tdns.A]
    assert payloads("_sip._tcp.example.test", tdns.SRV)[0].target.name == b"mail.example.test"
    assert payloads("1.example.test", tdns.PTR) == [tdns.Record_PTR("www.example.test", ttl=3600)]
    assert zs.lookup("nope.example.test", tdns.A)[0] == tdns.ENAME


def test_zone_file_origin_defaults_to_file_name_and_records_can_be_added(tmp_path):
    path = tmp_path / "files.test"
    path.write_text("@ IN SOA ns hostmaster 7 3600 600 86400 300\nwww IN A 127.0.0.1\n")
    zs = ZoneSet({"extra.files.test": {"A": "127.0.0.2"}, "www.elsewhere.test": {"A": "127.0.0.3"}}, [path])
    assert zs.zones() == ["elsewhere.test", "files.test"]
    assert zs.lookup("extra.files.test", tdns.A)[0] == tdns.OK
    assert zs.lookup("www.files.test", tdns.A)[1][0].ttl == 300  # no $TTL: the default ttl
    assert zs.lookup("files.test", tdns.SOA)[1][0].payload.serial == 7


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww IN A 999.1.1.1\n", 2, "not an IPv4 address"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nmx IN MX mail\n", 2, "expected 'preference host'"),
        ("@ IN SOA ns hostmaster (\n 1 3600 600 86400 300\nwww IN A 127.0.0.1\n", 1, "'(' is never closed"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300 )\n", 1, "')' without '('"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww IN HINFO a b\n", 2, "unsupported record type 'HINFO'"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww CH A 127.0.0.1\n", 2, "unsupported class CH"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n\n\nout.example. IN A 127.0.0.1\n", 4, "outside the zone"),
        ("$INCLUDE other.zone\n", 1, "unsupported directive $INCLUDE"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww IN TXT \"open\n", 2, "unterminated quoted string"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN SOA ns hostmaster 2 3600 600 86400 300\n", 2, "second SOA"),
        ("@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww IN\n", 2, "missing record type"),
    ],
)
def test_zone_file_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.test"
    path.write_text(text)
    with pytest.raises(ValueError) as excinfo:
        ZoneSet(zone_files=[str(path)])
    assert f"{path}:{line}: " in str(excinfo.value)
    assert message in str(excinfo.value)


def test_zone_file_without_soa_or_missing(tmp_path):
    path = tmp_path / "nosoa.test"
    path.write_text("www IN A 127.0.0.1\n")
    with pytest.raises(ValueError, match=r"nosoa\.test: no SOA record"):
        ZoneSet(zone_files=[str(path)])
    with pytest.raises(ValueError, match="cannot read zone file .*missing.zone"):
        ZoneSet(zone_files=[str(tmp_path / "missing.zone")])


def test_same_zone_from_two_files(tmp_path):
    one, two = tmp_path / "one.zone", tmp_path / "two.zone"
    for path in (one, two):
        path.write_text("$ORIGIN same.test.\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n")
    with pytest.raises(ValueError, match="already loaded from .*one.zone"):
        ZoneSet(zone_files=[str(one), str(two)])


# -- end to end: DNSServerFactory on real sockets ----------------------------------------------


def _pytest_twisted_drives_reactor(config):
    return config.pluginmanager.has_plugin("twisted")


@pytest.fixture(scope="module")
def reactor_call(request):
    """
    call(f, *args): run f in the reactor thread and wait for its (Deferred) result.

    Without pytest-twisted, start the global reactor in a daemon thread (left
    running: a reactor cannot be restarted).  With pytest-twisted, its
    greenlet runs the reactor in this thread, so call directly.
    """
    from twisted.internet import reactor

    if threadable.isInIOThread() or (not reactor.running and _pytest_twisted_drives_reactor(request.config)):
        import pytest_twisted

        def call(f, *args):
            result = f(*args)
            if isinstance(result, defer.Deferred):
                result = pytest_twisted.blockon(result)
            return result

        return call

    if not reactor.running:
        started = threading.Event()
        reactor.callWhenRunning(started.set)
        thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, name="twisted-reactor", daemon=True
        )
        thread.start()
        assert started.wait(10), "reactor did not start"

    def call(f, *args):
        return threads.blockingCallFromThread(reactor, f, *args)

    return call


def _listen_udp_and_tcp(factory):
    """Listen on 127.0.0.1: UDP on port 0, then TCP on the same number (as twisted/names/tap.py pairs them)."""
    from twisted.internet import error as ierror
    from twisted.internet import reactor

    last = None
    for _ in range(20):
        # A fresh protocol each try: one whose port stopped listening keeps its transport until later.
        udp = reactor.listenUDP(0, tdns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except ierror.CannotListenError as e:
            last = e
            udp.stopListening()
            continue
        return port, [udp, tcp]
    raise last


@pytest.fixture(scope="module")
def live_servers(reactor_call):
    """{"stock": port, "zone": port}: a stock DNSServerFactory and a ZoneServerFactory over one ZoneSet."""
    zoneset = ZoneSet(RECORDS)
    ports, listeners = {}, []
    for kind, factory_class in (("stock", server.DNSServerFactory), ("zone", ZoneServerFactory)):
        factory = factory_class(authorities=[zoneset])
        factory.noisy = False
        port, opened = reactor_call(_listen_udp_and_tcp, factory)
        ports[kind] = port
        listeners.extend(opened)
    yield ports
    for listener in listeners:
        reactor_call(listener.stopListening)


def _off_reactor(fn):
    """Run blocking client code: in a worker thread if this test runs inside the reactor (pytest-twisted)."""
    if threadable.isInIOThread():
        return threads.deferToThread(fn)
    fn()
    return None


def _ask(port, transport, name, rdtype):
    query = dns.message.make_query(name, rdtype)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    return send(query, "127.0.0.1", port=port, timeout=2)


def _rrsets(section_):
    return [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), sorted(r.to_text() for r in rrset))
        for rrset in section_
    ]


KINDS = ["stock", "zone"]
TRANSPORTS = ["udp", "tcp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_a(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "WWW.example.test.", "A")
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert _rrsets(response.answer) == [("www.example.test.", "A", ["127.0.0.5"])]

    return _off_reactor(check)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_mx_with_additional(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "www.example.test.", "MX")
        assert response.rcode() == dns.rcode.NOERROR
        assert _rrsets(response.answer) == [("www.example.test.", "MX", ["10 mail.example.test."])]
        assert _rrsets(response.additional) == [
            ("mail.example.test.", "A", ["127.0.0.6"]),
            ("mail.example.test.", "AAAA", ["::1"]),
        ]

    return _off_reactor(check)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_cname_chase(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "alias2.example.test.", "A")
        assert response.rcode() == dns.rcode.NOERROR
        assert _rrsets(response.answer) == [
            ("alias2.example.test.", "CNAME", ["alias.example.test."]),
            ("alias.example.test.", "CNAME", ["www.example.test."]),
            ("www.example.test.", "A", ["127.0.0.5"]),
        ]
        # dnspython follows the chain to the final answer.
        assert response.resolve_chaining().answer.to_text() == "www.example.test. 300 IN A 127.0.0.5"

    return _off_reactor(check)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_nxdomain(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "nope.example.test.", "A")
        assert response.rcode() == dns.rcode.NXDOMAIN
        assert response.answer == []
        if kind == "zone":
            assert response.flags & dns.flags.AA
            assert _rrsets(response.authority) == [
                ("example.test.", "SOA", ["ns.example.test. hostmaster.example.test. 1 3600 600 86400 300"])
            ]
        else:
            # Twisted 26.10's DNSServerFactory.gotResolverError drops the records of a failed lookup.
            assert response.authority == []

    return _off_reactor(check)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_nodata(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "www.example.test.", "AAAA")
        assert response.rcode() == dns.rcode.NOERROR and response.answer == []
        assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]

    return _off_reactor(check)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_refused(live_servers, kind, transport):
    def check():
        response = _ask(live_servers[kind], transport, "www.example.org.", "A")
        if kind == "zone":
            assert response.rcode() == dns.rcode.REFUSED
        else:
            # Twisted 26.10's DNSServerFactory maps every DomainError, DNSQueryRefusedError included,
            # to NXDOMAIN: no resolver error yields REFUSED.  That is what ZoneServerFactory is for.
            assert response.rcode() == dns.rcode.NXDOMAIN
        assert response.answer == []

    return _off_reactor(check)
