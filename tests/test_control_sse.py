"""The event stream over a fake request and a Clock: batching, no journal sink without subscribers, and a
client that falls behind is skipped, then caught up from the journal in order."""

import json

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from testbed.control.sse import BATCH, EventStream, Filter
from testbed.journal import Journal


class Request(DummyRequest):
    def __init__(self):
        super().__init__([b""])
        self.producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def events(self):
        text = b"".join(self.written).decode()
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def stream():
    journal, clock = Journal(), Clock()
    return journal, clock, EventStream(journal, clock, lambda data: data.replace(b"hunter2", b"[password]"))


def test_no_subscriber_no_sink_and_events_go_out_in_one_batch():
    journal, clock, events = stream()
    journal.record("command", "smtp", 1, command="EHLO")
    assert journal._sinks == []
    request = Request()
    events.subscribe(request, Filter(None, None, None), since=0)
    assert [e["seq"] for e in request.events()] == [1]  # the backlog
    journal.record("command", "smtp", 1, command="MAIL")
    journal.record("data", "smtp", 1, payload=b"AUTH PLAIN hunter2")
    writes = len(request.written)
    clock.advance(BATCH)
    assert len(request.written) == writes + 1
    assert [e["seq"] for e in request.events()] == [1, 2, 3]
    assert "hunter2" not in b"".join(request.written).decode()
    request.finish()  # the client went away
    assert journal._sinks == [] and events.subscribers == 0


def test_a_client_that_falls_behind_is_caught_up_from_the_journal_in_order():
    journal, clock, events = stream()
    fast, slow = Request(), Request()
    events.subscribe(fast, Filter({"stored"}, None, None), since=0)
    events.subscribe(slow, Filter(None, "smtp", None), since=0)
    slow.producer.pauseProducing()  # its transport's buffer is full
    for n in range(3):
        journal.record("stored", "smtp", n + 1)
    clock.advance(BATCH)
    assert [e["seq"] for e in fast.events()] == [1, 2, 3]
    assert slow.events() == []
    journal.record("command", "http", 1)
    journal.record("stored", "smtp", 4)
    slow.producer.resumeProducing()
    clock.advance(BATCH)
    assert [e["seq"] for e in slow.events()] == [1, 2, 3, 5]
    assert [e["seq"] for e in fast.events()] == [1, 2, 3, 5]
