"""Wire actions at the byte level, over StringTransport and Clock, through testbed.testing.connect."""

import pytest
from twisted.internet.protocol import Factory, Protocol

from testbed import testing
from testbed.faults.wire import corrupt
from testbed.faults.engine import stable_random


class Talker(Protocol):
    """Greets, echoes, and asks about the "request" stage when it sees b"?"."""

    def connectionMade(self):
        self.received = b""
        self.lost = False
        self.transport.write(b"hello\n")

    def dataReceived(self, data):
        self.received += data
        if data == b"?":
            self.seam.at("request", path="/x")
            self.transport.write(b"0123456789")
        else:
            self.transport.write(data)

    def connectionLost(self, reason):
        self.lost = True


class TalkerFactory(testing.SeamFactory, Factory):
    """Hands each Talker its connection's seam."""


def talk(*specs, seed=0):
    return testing.connect(TalkerFactory.forProtocol(Talker), "http", rules=testing.rules(*specs), seed=seed)


def test_without_faults_bytes_pass_untouched_and_are_journaled():
    c = talk()
    c.send(b"ping")
    assert c.sent() == b"hello\nping"
    data = c.journal.query("data")
    assert [(e["direction"], e["payload"]) for e in data] == [("down", b"hello\n"), ("up", b"ping"), ("down", b"ping")]
    assert c.journal.query("connection.open")[0]["conn"] == 1


def test_refuse_closes_on_accept_and_the_protocol_never_starts():
    c = talk({"server": "http", "action": "refuse"})
    assert c.transport.value() == b""
    assert c.transport.disconnecting
    c.wrapper.connectionLost(None)
    assert c.journal.query("connection.close")


def test_reset_at_connect_aborts_with_a_rst_at_the_first_byte():
    c = talk({"server": "http", "action": "reset"})
    assert c.aborted  # Talker greets first: its first byte trips the reset


class Listener(Protocol):
    """Waits for the client to speak first, as HTTP does."""

    def dataReceived(self, data):
        self.got = data


def test_reset_at_connect_waits_for_the_client_to_speak_so_it_reads_as_a_reset():
    c = testing.connect(Factory.forProtocol(Listener), "http",
                        rules=testing.rules({"server": "http", "action": "reset"}))
    assert not c.aborted
    c.send(b"GET / HTTP/1.1\r\n")
    assert c.aborted
    assert not hasattr(c.protocol, "got")


def test_reset_after_bytes_lets_that_many_through_first():
    c = talk({"server": "http", "action": "reset", "bytes": 3})
    assert c.transport.value() == b"hel"
    assert c.aborted


def test_close_after_bytes_sends_a_fin_after_n_bytes():
    c = talk({"server": "http", "action": "close", "bytes": 8})
    c.send(b"abcdef")
    assert c.transport.value() == b"hello\nab"
    assert c.transport.disconnecting and not c.aborted


def test_stall_black_holes_everything_including_the_fin():
    c = talk({"server": "http", "action": "stall", "bytes": 2})
    c.send(b"more")
    c.protocol.transport.loseConnection()
    assert c.transport.value() == b"he"
    assert not c.transport.disconnecting


def test_stall_upstream_stops_reading_from_the_client():
    c = talk({"server": "http", "action": "stall", "direction": "up"})
    c.send(b"lost")
    assert c.protocol.received == b""
    assert c.transport.producerState == "paused"


def test_truncate_stops_after_n_bytes():
    c = talk({"server": "http", "action": "truncate", "bytes": 7})
    c.send(b"abc")
    assert c.transport.value() == b"hello\na"


def test_delay_holds_bytes_for_the_latency_and_keeps_their_order():
    c = talk({"server": "http", "action": "delay", "seconds": 2.0})
    c.clock.advance(1.0)
    c.send(b"x")  # due at 3.0, after the greeting due at 2.0
    assert c.transport.value() == b""
    c.clock.advance(1.0)
    assert c.transport.value() == b"hello\n"
    c.clock.advance(1.0)
    assert c.transport.value() == b"hello\nx"


def test_delay_with_jitter_never_reorders():
    c = talk({"server": "http", "action": "delay", "seconds": 0.5, "jitter": 1.0})
    for i in range(20):
        c.send(bytes([65 + i]))
        c.clock.advance(0.01)
    c.clock.advance(5)
    assert c.transport.value() == b"hello\n" + bytes(range(65, 85))


def test_throttle_releases_bytes_at_the_rate():
    c = talk({"server": "http", "action": "throttle", "bytes_per_second": 100})
    c.send(b"x" * 194)  # 200 bytes queued with the greeting
    assert len(c.transport.value()) == 5  # a twentieth of a second's worth, at once
    c.clock.pump([0.05] * 20)  # one second, in the steps the reactor would take
    assert 100 <= len(c.transport.value()) <= 110
    for _ in range(40):
        c.clock.advance(0.05)
    assert len(c.transport.value()) == 200


def test_slice_sends_size_bytes_per_interval():
    c = talk({"server": "http", "action": "slice", "size": 2, "interval": 0.1})
    assert c.sent() == b"he"
    c.clock.advance(0.1)
    assert c.sent() == b"ll"
    c.clock.pump([0.1] * 5)
    assert c.sent() == b"o\n"


def test_corrupt_flips_bytes_at_the_rate_from_the_seed():
    c = talk({"server": "http", "action": "corrupt", "rate": 0.5}, seed=3)
    c.send(b"a" * 1000)
    out = c.transport.value()
    assert len(out) == 1006
    flipped = sum(1 for x, y in zip(out, b"hello\n" + b"a" * 1000) if x != y)
    assert 400 < flipped < 600
    again = talk({"server": "http", "action": "corrupt", "rate": 0.5}, seed=3)
    again.send(b"a" * 1000)
    assert again.transport.value() == out


def test_corrupt_function_rates():
    rng = stable_random(1)
    assert corrupt(b"abc", 0.0, rng) == b"abc"
    assert all(x != y for x, y in zip(corrupt(b"abc", 1.0, rng), b"abc"))
    assert corrupt(b"a", 0.0000001, rng, at_least_one=True) != b"a"


def test_a_wire_action_scoped_to_a_stage_starts_at_that_stage():
    c = talk({"server": "http", "on": "request", "action": "reset", "bytes": 4})
    c.send(b"abc")
    assert c.sent() == b"hello\nabc"
    c.send(b"?")
    assert c.transport.value() == b"0123"
    assert c.aborted


def test_up_direction_delays_what_the_client_sends():
    c = talk({"server": "http", "action": "delay", "seconds": 1, "direction": "up"})
    c.send(b"up")
    assert c.protocol.received == b""
    c.clock.advance(1)
    assert c.protocol.received == b"up"


def test_lose_connection_waits_for_queued_bytes():
    c = talk({"server": "http", "action": "delay", "seconds": 1})
    c.protocol.transport.loseConnection()
    assert not c.transport.disconnecting
    c.clock.advance(1)
    assert c.transport.value() == b"hello\n"
    assert c.transport.disconnecting


def test_close_is_journaled_with_byte_counts_and_timers_cancelled():
    c = talk({"server": "http", "action": "delay", "seconds": 5})
    c.send(b"abcd")
    c.wrapper.connectionLost(None)
    assert c.clock.getDelayedCalls() == []
    close = c.journal.query("connection.close")[0]
    assert (close["bytes_up"], close["bytes_down"]) == (4, 10)


def test_payload_capture_stops_at_the_cap_but_counts_go_on():
    from testbed.journal import Journal

    journal = Journal(payload_cap=8)
    c = testing.connect(Factory.forProtocol(Talker), "http", journal=journal)
    c.send(b"0123456789")
    downs = journal.query("data", direction="down")
    assert [e["payload"] for e in downs] == [b"hello\n", b"01"]
    c.send(b"more")
    assert len(journal.query("data", direction="down")) == 2
    c.wrapper.connectionLost(None)
    assert journal.query("connection.close")[0]["bytes_down"] == 20


class Streamer(Protocol):
    """Writes 64 KiB chunks from a pull producer, the way FileSender does."""

    def connectionMade(self):
        self.chunks = 0
        self.transport.registerProducer(self, False)

    def resumeProducing(self):
        if self.chunks < 16:
            self.chunks += 1
            self.transport.write(b"z" * 65536)

    def stopProducing(self):
        pass


def test_a_throttled_producer_is_not_drained_into_memory():
    c = testing.connect(Factory.forProtocol(Streamer), "http",
                        rules=testing.rules({"server": "http", "action": "throttle", "bytes_per_second": 65536}))
    for _ in range(10):
        c.transport.producer.resumeProducing()  # the socket asks for more as fast as it can
    assert c.protocol.chunks <= 6  # held back by the shaper's high-water mark, not all 16
    c.clock.pump([0.05] * 400)
    for _ in range(20):
        c.transport.producer.resumeProducing()
        c.clock.pump([0.05] * 40)
    assert c.protocol.chunks == 16


class StartsTLS(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"+OK Begin TLS\r\n")
        self.transport.startTLS("context")


def test_starttls_waits_until_the_go_ahead_reply_has_left_in_the_clear():
    c = testing.connect(Factory.forProtocol(StartsTLS), "http",
                        rules=testing.rules({"server": "http", "action": "delay", "seconds": 1}))
    started = []
    c.transport.startTLS = lambda ctx, normal=True: started.append(c.transport.value())
    c.send(b"STLS\r\n")
    assert started == []
    c.clock.advance(1)
    assert started == [b"+OK Begin TLS\r\n"]


def test_throttle_copies_only_what_it_releases_from_a_large_write():
    c = talk({"server": "http", "action": "throttle", "bytes_per_second": 2000})
    c.send(b"x" * 200_000)
    c.clock.pump([0.05] * 100)  # five seconds at 2,000 bytes a second
    # The greeting, the first twentieth of a second's worth at once, then five seconds' worth.
    assert len(c.transport.value()) == 6 + 100 + 10_000
    shaper = c.wrapper.down
    assert shaper.queued == 200_006 - len(c.transport.value())
    assert len(shaper.queue[0][1]) == 200_000  # the big write is kept whole, read from an offset


def test_a_close_waiting_for_a_queue_survives_the_action_being_replaced():
    c = talk({"server": "http", "action": "delay", "seconds": 1})
    c.protocol.transport.loseConnection()
    assert not c.transport.disconnecting
    c.send(b"?")  # the request stage is not aimed at; replace the shaper by hand as a stage fault would
    from testbed.faults.engine import Fault, stable_random
    from testbed.config import rule_from_kwargs

    c.wrapper.apply(Fault(rule_from_kwargs("t", server="http", on="request", action="slice", size=100,
                                           interval=0.1), stable_random(1)))
    c.clock.pump([0.1] * 20)
    assert c.transport.value().startswith(b"hello\n")
    assert c.transport.disconnecting


@pytest.mark.parametrize("cut_after, sent", [("client_hello", b""), ("server_hello", b"\x16\x03\x03\x00\x02hi")])
def test_a_handshake_cut_sends_at_most_the_first_record_then_a_fin(cut_after, sent):
    from twisted.internet.testing import StringTransport

    from testbed.faults.wire import HandshakeCut

    raw, cuts = StringTransport(), []
    cut = HandshakeCut(raw, cut_after, cuts.append)
    cut.write(b"\x16\x03\x03\x00\x02hi" + b"\x14\x03\x03\x00\x01\x01")   # ServerHello, ChangeCipherSpec
    cut.write(b"more of the flight")
    assert raw.value() == sent and raw.disconnecting
    assert cuts == [len(sent)]
