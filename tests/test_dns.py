"""Unit tests for testbed.servers.dns: every query fault, byte for byte, over a fake datagram transport
(UDP, through the datagram fault wrapper) and a StringTransport (TCP, through the wire fault wrapper), on a Clock."""

import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, MemoryReactor, _FakePort
from twisted.names import dns as tdns

from testbed import testing
from testbed.config import ScenarioError
from testbed.faults.engine import FaultEngine
from testbed.faults.udp import FaultingDatagramProtocol
from testbed.harness import Testbed
from testbed.journal import COMMAND, ERROR, REPLY, Journal
from testbed.servers.dns.server import DNSDatagram, DNSFactory, rr_text
from testbed.servers.dns.records import ZoneSet

RECORDS = {
    "www.example.test": {"A": "192.0.2.1", "AAAA": "2001:db8::1"},
    "alias.example.test": {"CNAME": "www.example.test"},
    "example.test": {"MX": "10 mail.example.test", "NS": "ns1.example.test"},
    "mail.example.test": {"A": "192.0.2.25"},
    "ns1.example.test": {"A": "192.0.2.53"},
    "_sip._tcp.example.test": {"SRV": "10 5 5060 mail.example.test"},
    "txt.example.test": {"TXT": 'say "hi"\\ \x01'},
    "big.example.test": {"TXT": [c * 200 for c in "abc"]},
    "huge.example.test": {"TXT": [c * 200 for c in "abcdefgh"]},
    "192.0.2.1": {"PTR": "www.example.test"},
}
PEER = ("127.0.0.1", 5353)


class Rig:
    """A DNSFactory on a Clock, with a UDP side through FaultingDatagramProtocol and TCP connections on demand."""

    def __init__(self, *rules, seed=0):
        self.clock = Clock()
        self.journal = Journal(clock=self.clock.seconds)
        self.engine = testing.engine(seed, self.journal, testing.rules(*[dict(server="dns", **r) for r in rules]))
        self.factory = DNSFactory(ZoneSet(RECORDS), engine=self.engine, journal=self.journal, clock=self.clock)
        self.port = FakeDatagramTransport()
        self.udp = FaultingDatagramProtocol(DNSDatagram(self.factory, reactor=self.clock), "dns", self.engine,
                                            self.journal, self.clock)
        self.udp.makeConnection(self.port)
        self._read = 0

    def datagram(self, wire: bytes, addr=PEER) -> list[bytes]:
        """Send one datagram; return the datagrams written back since the last call."""
        self.udp.datagramReceived(wire, addr)
        return self.written()

    def written(self) -> list[bytes]:
        new = self.port.written[self._read:]
        self._read = len(self.port.written)
        assert all(addr == PEER for _, addr in new)
        return [data for data, _ in new]

    def tcp(self):
        return testing.connect(self.factory, "dns", engine=self.engine, journal=self.journal, clock=self.clock)

    def events(self, kind):
        return self.journal.query(kind, server="dns")


def query(name="www.example.test", rdtype="A", qid=0x1234, **kwargs) -> bytes:
    q = dns.message.make_query(name, rdtype, **kwargs)
    q.id = qid
    return q.to_wire()


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def unframe(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        (n,) = struct.unpack_from("!H", stream)
        out.append(stream[2 : 2 + n])
        stream = stream[2 + n :]
    return out


def parse(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)


def clean_reply(wire: bytes) -> bytes:
    """What a rig without faults answers."""
    (reply,) = Rig().datagram(wire)
    return reply


# -- answers -------------------------------------------------------------------------


def test_a_udp_query_is_answered_and_recorded():
    rig = Rig()
    (reply,) = rig.datagram(query())
    m = parse(reply)
    assert m.id == 0x1234
    assert m.flags & dns.flags.QR and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert not m.flags & dns.flags.TC
    assert [rr.to_text() for rr in m.answer[0]] == ["192.0.2.1"]
    (q,) = rig.factory.queries
    assert (q.name, q.type, q.transport, q.rcode, q.conn, q.fault, q.sent) == (
        "www.example.test", "A", "udp", "NOERROR", 1, None, True)
    assert q.answer == ["www.example.test. 300 IN A 192.0.2.1"]
    (command,) = rig.events(COMMAND)
    assert (command["name"], command["type"], command["transport"]) == ("www.example.test", "A", "udp")
    # The answer is folded into the query's one event (there is no separate reply event).
    assert (command["rcode"], command["answers"]) == ("NOERROR", 1)
    assert rig.events(REPLY) == []


def test_a_tcp_query_gets_a_length_prefixed_answer_identical_to_udp():
    rig = Rig()
    c = rig.tcp()
    c.send(frame(query()))
    stream = c.sent()
    assert stream[:2] == struct.pack("!H", len(stream) - 2)
    (reply,) = unframe(stream)
    assert reply == clean_reply(query())
    assert rig.factory.queries[0].transport == "tcp"
    assert not c.closed


def test_tcp_queries_in_one_segment_and_split_across_segments():
    rig = Rig()
    c = rig.tcp()
    data = frame(query(qid=1)) + frame(query("mail.example.test", qid=2))
    c.send(data[:5])
    assert c.sent() == b""
    c.send(data[5:])
    assert [parse(r).id for r in unframe(c.sent())] == [1, 2]


def test_negative_answers_cname_chase_and_refused():
    rig = Rig()
    chased = parse(rig.datagram(query("alias.example.test"))[0])
    assert [rrset.rdtype for rrset in chased.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    missing = parse(rig.datagram(query("nope.example.test"))[0])
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].rdtype == dns.rdatatype.SOA
    assert missing.flags & dns.flags.AA
    outside = parse(rig.datagram(query("www.elsewhere.invalid"))[0])
    assert outside.rcode() == dns.rcode.REFUSED and not outside.answer
    assert [q.rcode for q in rig.factory.queries] == ["NOERROR", "NXDOMAIN", "REFUSED"]


def test_answer_texts_for_every_type():
    zones = ZoneSet(RECORDS)

    def texts(name, rdtype):
        return [rr_text(rr) for rr in zones.lookup(name, rdtype)[1]]

    assert texts("www.example.test", "AAAA") == ["www.example.test. 300 IN AAAA 2001:db8::1"]
    assert texts("example.test", "MX") == ["example.test. 300 IN MX 10 mail.example.test."]
    assert texts("example.test", "NS") == ["example.test. 300 IN NS ns1.example.test."]
    assert texts("_sip._tcp.example.test", "SRV") == ["_sip._tcp.example.test. 300 IN SRV 10 5 5060 mail.example.test."]
    assert texts("txt.example.test", "TXT") == ['txt.example.test. 300 IN TXT "say \\"hi\\"\\\\ \\001"']
    assert texts("1.2.0.192.in-addr.arpa", "PTR") == ["1.2.0.192.in-addr.arpa. 300 IN PTR www.example.test."]
    assert texts("alias.example.test", "A")[0] == "alias.example.test. 300 IN CNAME www.example.test."
    assert texts("example.test", "SOA") == [
        "example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300"]


def test_zone_transfers_and_other_classes_go_through_the_resolver_interface():
    rig = Rig()
    c = rig.tcp()
    c.send(frame(query("example.test", "AXFR")))
    (reply,) = unframe(c.sent())
    m = tdns.Message()
    m.fromStr(reply)  # dnspython would merge the closing SOA into the first one
    assert m.answers[0].type == m.answers[-1].type == tdns.SOA and len(m.answers) > 3
    chaos = parse(rig.datagram(query("version.bind", "TXT", rdclass="CH"))[0])
    assert chaos.rcode() == dns.rcode.REFUSED
    assert [q.rcode for q in rig.factory.queries] == ["NOERROR", "REFUSED"]


def test_a_query_keeps_the_response_wire_and_decodes_it_on_demand():
    rig = Rig()
    (reply,) = rig.datagram(query("example.test", "MX"))
    (q,) = rig.factory.queries
    assert q.wire == reply
    assert [rr.type for rr in q.message.additional] == [tdns.A]


# -- size: TC over UDP, EDNS ---------------------------------------------------------


def test_an_answer_over_512_bytes_sets_tc_with_empty_sections_over_udp():
    rig = Rig()
    wire = query("big.example.test", "TXT")
    (reply,) = rig.datagram(wire)
    # header: same id, QR AA TC RD, NOERROR, one question, nothing else; then the question as asked
    assert reply == struct.pack("!HBBHHHH", 0x1234, 0x87, 0x00, 1, 0, 0, 0) + wire[12:]
    assert rig.factory.queries[0].truncated and rig.events(COMMAND)[0]["truncated"] is True
    c = rig.tcp()
    c.send(frame(wire))
    (full,) = unframe(c.sent())
    assert len(full) > 512 and len(parse(full).answer[0]) == 3


def test_edns_payload_size_lets_a_larger_answer_through_and_is_echoed():
    rig = Rig()
    (reply,) = rig.datagram(query("big.example.test", "TXT", use_edns=0, payload=4096))
    m = parse(reply)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 3
    assert m.edns == 0 and m.payload == 1232
    assert len(reply) > 512


def test_edns_answer_above_the_clients_size_is_truncated_with_opt():
    rig = Rig()
    (reply,) = rig.datagram(query("huge.example.test", "TXT", use_edns=0, payload=1232))
    m = parse(reply)
    assert m.flags & dns.flags.TC and not m.answer and m.edns == 0
    assert len(reply) == 12 + len("huge.example.test") + 2 + 4 + 11


def test_edns_over_tcp_is_not_truncated():
    c = Rig().tcp()
    c.send(frame(query("huge.example.test", "TXT", use_edns=0, payload=1232)))
    (reply,) = unframe(c.sent())
    m = parse(reply)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 8 and m.edns == 0


def test_a_small_edns_size_means_512():
    (reply,) = Rig().datagram(query("big.example.test", "TXT", use_edns=0, payload=100))
    assert parse(reply).flags & dns.flags.TC


# -- protocol faults --------------------------------------------------------------------


@pytest.mark.parametrize("rcode", ["SERVFAIL", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "NOERROR"])
def test_reply_answers_with_the_rcode_and_nothing_else(rcode):
    rig = Rig({"action": "reply", "rcode": rcode})
    wire = query()
    (reply,) = rig.datagram(wire)
    code = dns.rcode.from_text(rcode)
    assert reply == struct.pack("!HBBHHHH", 0x1234, 0x81, code, 1, 0, 0, 0) + wire[12:]
    assert rig.factory.queries[0].fault == "reply" and rig.factory.queries[0].rcode == rcode
    assert rig.events(COMMAND)[0]["fault"] == "reply"


def test_reply_over_tcp_and_only_once_with_times():
    rig = Rig({"action": "reply", "rcode": "SERVFAIL", "times": 1})
    c = rig.tcp()
    c.send(frame(query(qid=1)) + frame(query(qid=2)))
    first, second = (parse(r) for r in unframe(c.sent()))
    assert first.rcode() == dns.rcode.SERVFAIL and second.rcode() == dns.rcode.NOERROR


def test_reply_defaults_to_servfail():
    (reply,) = Rig({"action": "reply"}).datagram(query())
    assert parse(reply).rcode() == dns.rcode.SERVFAIL


def test_truncate_sets_tc_with_empty_sections_even_for_a_small_answer():
    rig = Rig({"action": "truncate"})
    wire = query()
    (reply,) = rig.datagram(wire)
    assert reply == struct.pack("!HBBHHHH", 0x1234, 0x87, 0, 1, 0, 0, 0) + wire[12:]
    c = rig.tcp()
    c.send(frame(wire))
    (over_tcp,) = unframe(c.sent())
    assert over_tcp == reply


def test_wrong_id_changes_only_the_id_and_is_seeded():
    wire = query()
    clean = clean_reply(wire)
    (reply,) = Rig({"action": "wrong_id"}).datagram(wire)
    assert reply[2:] == clean[2:] and reply[:2] != clean[:2]
    assert Rig({"action": "wrong_id"}).datagram(wire) == [reply]
    assert Rig({"action": "wrong_id"}, seed=9).datagram(wire) != [reply]


def test_wrong_question_names_another_question():
    (reply,) = Rig({"action": "wrong_question", "qname": "other.example.test"}).datagram(query())
    m = parse(reply)
    assert m.question[0].name.to_text() == "other.example.test."
    assert m.question[0].rdtype == dns.rdatatype.A
    assert m.answer[0].name.to_text() == "www.example.test."
    q = dns.message.from_wire(query())
    assert not q.is_response(m)


def test_wrong_question_default_name():
    (reply,) = Rig({"action": "wrong_question"}).datagram(query())
    assert parse(reply).question[0].name.to_text() == "question-mismatch.invalid."


def test_wrong_name_answers_for_another_name():
    rig = Rig({"action": "wrong_name", "owner": "evil.example.test"})
    (reply,) = rig.datagram(query())
    m = parse(reply)
    assert m.question[0].name.to_text() == "www.example.test."
    assert [rrset.name.to_text() for rrset in m.answer] == ["evil.example.test."]
    assert rig.factory.queries[0].answer == ["evil.example.test. 300 IN A 192.0.2.1"]


def test_nodata_is_noerror_without_answers_with_the_soa():
    rig = Rig({"action": "nodata"})
    (reply,) = rig.datagram(query())
    m = parse(reply)
    assert m.rcode() == dns.rcode.NOERROR and not m.answer and not m.additional
    assert m.authority[0].rdtype == dns.rdatatype.SOA and m.authority[0].name.to_text() == "example.test."
    assert rig.factory.queries[0].answer == []
    assert rig.events(COMMAND)[0]["answers"] == 0


def test_ttl_overrides_every_ttl():
    (reply,) = Rig({"action": "ttl", "ttl": 7}).datagram(query("example.test", "MX"))
    m = parse(reply)
    assert m.answer[0].ttl == 7 and m.additional[0].ttl == 7
    (nx,) = Rig({"action": "ttl", "ttl": 0}).datagram(query("nope.example.test"))
    assert parse(nx).authority[0].ttl == 0


def test_garbage_sends_seeded_random_bytes_instead():
    (junk,) = Rig({"action": "garbage", "bytes": 40}).datagram(query())
    assert len(junk) == 40 and junk != clean_reply(query())[:40]
    assert Rig({"action": "garbage", "bytes": 40}).datagram(query()) == [junk]
    rig = Rig({"action": "garbage", "bytes": 5})
    c = rig.tcp()
    c.send(frame(query()))
    assert len(c.sent()) == 2 + 5


def test_tcp_length_only_sends_the_prefix_and_closes():
    rig = Rig({"action": "tcp_length_only"})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.sent() == struct.pack("!H", len(clean_reply(query())))
    assert c.closed and not c.aborted


def test_tcp_partial_sends_part_of_the_message_and_closes():
    clean = clean_reply(query())
    rig = Rig({"action": "tcp_partial", "bytes": 10})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.sent() == struct.pack("!H", len(clean)) + clean[:10]
    assert c.closed
    c = Rig({"action": "tcp_partial"}).tcp()
    c.send(frame(query()))
    assert c.sent() == struct.pack("!H", len(clean)) + clean[: len(clean) // 2]


def test_tcp_only_actions_over_udp_send_what_tcp_would_without_the_stream():
    clean = clean_reply(query())
    assert Rig({"action": "tcp_length_only"}).datagram(query()) == [struct.pack("!H", len(clean))]
    assert Rig({"action": "tcp_partial", "bytes": 7}).datagram(query()) == [clean[:7]]


# -- datagram-style actions on the reply, both transports -----------------------------------


def test_drop_sends_nothing_and_the_next_query_is_answered():
    rig = Rig({"action": "drop", "times": 1})
    assert rig.datagram(query(qid=1)) == []
    assert [parse(r).id for r in rig.datagram(query(qid=2))] == [2]
    first, second = rig.factory.queries
    assert (first.fault, first.sent, second.fault) == ("drop", False, None)
    assert rig.events(COMMAND)[0]["sent"] is False


def test_drop_over_tcp_keeps_the_connection_open():
    rig = Rig({"action": "drop", "match": {"transport": "tcp"}})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.sent() == b"" and not c.closed
    assert len(rig.datagram(query())) == 1  # the rule matches TCP only


def test_delay_holds_the_reply_for_the_seconds():
    rig = Rig({"action": "delay", "seconds": 2.0})
    assert rig.datagram(query()) == []
    rig.clock.advance(1.9)
    assert rig.written() == []
    rig.clock.advance(0.1)
    assert rig.written() == [clean_reply(query())]
    c = rig.tcp()
    c.send(frame(query()))
    assert c.sent() == b""
    rig.clock.advance(2.0)
    assert unframe(c.sent()) == [clean_reply(query())]


def test_delay_after_the_tcp_connection_went_writes_nothing():
    rig = Rig({"action": "delay", "seconds": 1.0})
    c = rig.tcp()
    c.send(frame(query()))
    c.wrapper.connectionLost(None)
    rig.clock.advance(1.0)
    assert c.transport.value() == b""


def test_delay_with_jitter_stays_within_it():
    rig = Rig({"action": "delay", "seconds": 1.0, "jitter": 0.5})
    rig.datagram(query())
    rig.clock.advance(0.999)
    assert rig.written() == []
    rig.clock.advance(0.5)
    assert len(rig.written()) == 1


def test_duplicate_sends_copies():
    rig = Rig({"action": "duplicate", "copies": 2})
    clean = clean_reply(query())
    assert rig.datagram(query()) == [clean] * 3
    c = rig.tcp()
    c.send(frame(query()))
    assert unframe(c.sent()) == [clean] * 3


def test_corrupt_flips_bytes_of_the_message_but_not_the_tcp_length():
    clean = clean_reply(query())
    (bad,) = Rig({"action": "corrupt", "rate": 0.1}).datagram(query())
    assert len(bad) == len(clean) and bad != clean
    c = Rig({"action": "corrupt", "rate": 0.1}).tcp()
    c.send(frame(query()))
    stream = c.sent()
    assert stream[:2] == struct.pack("!H", len(clean)) and stream[2:] != clean and len(stream) == 2 + len(clean)


# -- wire actions --------------------------------------------------------------------------


def test_reset_at_connect_resets_the_tcp_connection():
    rig = Rig({"on": "connect", "action": "reset"})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.aborted and c.transport.value() == b""
    assert rig.factory.queries == []


def test_stall_at_connect_answers_nothing_and_never_closes():
    rig = Rig({"on": "connect", "action": "stall"})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.transport.value() == b"" and not c.closed
    assert len(rig.factory.queries) == 1


def test_truncate_at_connect_is_the_wire_truncate():
    rig = Rig({"on": "connect", "action": "truncate", "bytes": 5})
    c = rig.tcp()
    c.send(frame(query()))
    assert c.sent() == frame(clean_reply(query()))[:5]


def test_a_wire_action_at_the_query_stage_shapes_the_tcp_reply():
    rig = Rig({"action": "close", "bytes": 4, "match": {"name": "www.*"}})
    c = rig.tcp()
    c.send(frame(query("mail.example.test", qid=1)))
    assert len(unframe(c.sent())) == 1
    c.send(frame(query(qid=2)))
    assert c.sent() == frame(clean_reply(query(qid=2)))[:4]
    assert c.closed


@pytest.mark.parametrize("action", ["reset", "close", "stall"])
def test_connection_wire_actions_at_the_query_stage_answer_nothing_over_udp(action):
    rig = Rig({"action": action})
    assert rig.datagram(query()) == []
    assert rig.factory.queries[0].sent is False


def test_throttle_and_slice_over_udp_deliver_the_datagram_as_late_as_its_last_byte():
    clean = clean_reply(query())
    rig = Rig({"action": "throttle", "bytes_per_second": len(clean)})
    assert rig.datagram(query()) == []
    rig.clock.advance(0.99)
    assert rig.written() == []
    rig.clock.advance(0.01)
    assert rig.written() == [clean]
    rig = Rig({"action": "slice", "size": 10, "interval": 0.1})
    rig.datagram(query())
    rig.clock.advance((len(clean) - 1) // 10 * 0.1)
    assert rig.written() == [clean]


def test_datagram_stage_actions_through_the_wrapper():
    rig = Rig({"on": "datagram", "action": "drop", "direction": "up", "times": 1})
    assert rig.datagram(query()) == []
    assert rig.events(COMMAND) == []  # the server never saw it
    assert len(rig.datagram(query())) == 1
    rig = Rig({"on": "datagram", "action": "duplicate", "copies": 1})
    assert rig.datagram(query()) == [clean_reply(query())] * 2


# -- matching ----------------------------------------------------------------------------


def test_faults_match_on_name_glob_type_and_transport():
    rig = Rig({"action": "reply", "rcode": "REFUSED", "match": {"name": "*.example.test", "type": "AAAA",
                                                                   "transport": "udp"}})
    assert parse(rig.datagram(query("www.example.test", "A"))[0]).rcode() == dns.rcode.NOERROR
    assert parse(rig.datagram(query("www.example.test", "AAAA"))[0]).rcode() == dns.rcode.REFUSED
    assert parse(rig.datagram(query("WWW.Example.Test.", "AAAA"))[0]).rcode() == dns.rcode.REFUSED
    c = rig.tcp()
    c.send(frame(query("www.example.test", "AAAA")))
    assert parse(unframe(c.sent())[0]).rcode() == dns.rcode.NOERROR
    fired = rig.journal.faults("dns")
    assert len(fired) == 2 and fired[0]["attributes"] == {"name": "www.example.test", "type": "AAAA",
                                                          "transport": "udp"}


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 11, b"hello world, not dns at all"])
def test_garbage_datagrams_are_journaled_and_the_server_keeps_answering(junk):
    rig = Rig()
    replies = rig.datagram(junk)
    errors = rig.events(ERROR)
    assert errors and errors[0]["transport"] == "udp"
    if len(junk) >= 12 and not junk[2] & 0x80:
        (formerr,) = replies
        assert formerr[:2] == junk[:2] and formerr[2] & 0x80 and formerr[3] & 0xF == dns.rcode.FORMERR
    else:
        assert replies == []
    assert parse(rig.datagram(query())[0]).answer


def test_a_compression_loop_gets_formerr_with_the_id():
    header = struct.pack("!HBBHHHH", 0xBEEF, 0x01, 0, 1, 0, 0, 0)
    (reply,) = Rig().datagram(header + b"\xc0\x0c\x00\x01\x00\x01")
    assert reply == struct.pack("!HBBHHHH", 0xBEEF, 0x81, dns.rcode.FORMERR, 0, 0, 0, 0)


def test_a_response_sent_to_the_server_is_ignored():
    rig = Rig()
    assert rig.datagram(clean_reply(query())) == []
    assert rig.events(ERROR)[0]["error"] == "not a query (QR set)"


def test_a_question_cut_short_is_formerr():
    wire = query()
    (reply,) = Rig().datagram(wire[:20])
    m = parse(reply)
    assert m.rcode() == dns.rcode.FORMERR and m.id == 0x1234 and m.flags & dns.flags.QR


def test_other_opcodes_get_notimp_as_a_response():
    q = dns.message.make_query("example.test", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    (reply,) = Rig().datagram(q.to_wire())
    m = parse(reply)
    assert m.flags & dns.flags.QR and m.rcode() == dns.rcode.NOTIMP and m.opcode() == dns.opcode.NOTIFY


def test_garbage_over_tcp_is_journaled_and_the_connection_keeps_working():
    rig = Rig()
    c = rig.tcp()
    c.send(frame(b"\x01\x02\x03") + frame(query()))
    (reply,) = unframe(c.sent())
    assert parse(reply).answer
    assert rig.events(ERROR)[0]["transport"] == "tcp"


def test_a_bug_in_answering_is_journaled_not_raised(monkeypatch):
    rig = Rig()

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(rig.factory.zones, "lookup", broken)
    assert rig.datagram(query()) == []
    assert "boom" in rig.events(ERROR)[0]["error"]
    monkeypatch.undo()
    assert len(rig.datagram(query())) == 1


def test_twisteds_own_messages_still_pass_through_send_reply():
    # A message that did not come through receive() (no exchange) goes out the stock way.
    rig = Rig()
    sent = []

    class Proto:
        def writeMessage(self, message, address=None):
            sent.append(message)

    m = tdns.Message(id=5, answer=1)
    m.timeReceived = 0
    rig.factory.sendReply(Proto(), m, None)
    assert sent == [m]


# -- the server: binding both transports, reset, runtime records ------------------------------


class PortReactor(MemoryReactor):
    """A MemoryReactor that hands out port numbers and refuses UDP on the numbers in ``udp_taken``."""

    def __init__(self, udp_taken=()):
        super().__init__()
        self.udp_taken = set(udp_taken)
        self.next_port = 40000
        self.udp = []
        self.stopped = []

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == 0:
            self.next_port += 1
            port = self.next_port
        fake = super().listenTCP(port, factory, backlog, interface)
        fake.stopListening = lambda: self.stopped.append(port)
        return fake

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.udp_taken:
            raise CannotListenError(interface, port, OSError("address in use"))
        self.udp.append((port, protocol, interface))
        return _FakePort(IPv4Address("UDP", interface, port))


def start_bed(reactor, dns_config):
    others = {name: {"enabled": False} for name in ("http", "smtp", "pop3", "imap", "ftp")}
    bed = Testbed({"servers": {**others, "dns": dict(enabled=True, **dns_config)}}, reactor=reactor)
    failures = []
    bed.start().addErrback(failures.append)
    return bed, failures


def test_udp_binds_on_the_tcp_port_number_retrying_when_it_is_taken():
    reactor = PortReactor(udp_taken={40001, 40002})
    bed, failures = start_bed(reactor, {})
    assert failures == []
    server = bed["dns"]
    assert reactor.stopped == [40001, 40002]
    assert [(port, interface) for port, _, interface in reactor.udp] == [(40003, "127.0.0.1")]
    assert [(l.label, l.number) for l in server.listeners] == [("dns/tcp", 40003), ("dns/udp", 40003)]
    assert server.port == 40003


def test_a_fixed_port_taken_on_udp_fails_the_start():
    reactor = PortReactor(udp_taken={1053})
    bed, failures = start_bed(reactor, {"listen": "tcp:1053:interface=127.0.0.1"})
    (failure,) = failures
    assert failure.check(CannotListenError)


def test_bad_records_are_a_scenario_error_naming_the_record():
    bed, failures = start_bed(PortReactor(), {"records": {"x.test": {"A": "not-an-address"}}})
    (failure,) = failures
    assert failure.check(ScenarioError) and "servers.dns" in str(failure.value) and "x.test" in str(failure.value)


def test_reset_forgets_queries_and_runtime_records_but_keeps_the_scenarios():
    reactor = PortReactor()
    bed, _ = start_bed(reactor, {"records": RECORDS})
    server = bed["dns"]
    server.add_record("new.example.test", "A", "192.0.2.7")
    assert server.zones.lookup("new.example.test", "A")[1]
    assert server.remove_record("www.example.test", "AAAA") == 1
    (_, udp, _), = reactor.udp
    udp.datagramReceived(query("new.example.test"), PEER)
    assert [q.name for q in server.queries] == ["new.example.test"]
    stored = [e for e in server.journal if e["kind"] == "stored"]
    assert [(e["record"], e["name"]) for e in stored] == [("add", "new.example.test"), ("remove", "www.example.test")]
    bed.reset()
    assert server.queries == []
    assert server.zones.lookup("new.example.test", "A")[0] == tdns.ENAME
    assert server.zones.lookup("www.example.test", "AAAA")[1]
    before = server.zones
    bed.reset()
    assert server.zones is before  # nothing changed: no rebuild

