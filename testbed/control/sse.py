"""Server-Sent Events of the journal: filters, and ``Last-Event-ID``/``since`` so a reconnecting client misses nothing.

The stream adds its journal sink only while someone listens: with no subscriber, recording an event costs nothing more.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from twisted.internet.interfaces import IPushProducer
from twisted.web import server
from zope.interface import implementer

from testbed.journal import Journal, jsonable

#: A comment line every this many seconds keeps proxies and idle clients from closing the stream.
KEEPALIVE = 15.0
#: How often queued events go out: the most a subscriber lags behind the journal, in seconds.
BATCH = 0.05


class Filter:
    """Which events a subscriber wants: kinds, a server, a connection."""

    def __init__(self, kinds: set[str] | None, server: str | None, conn: int | None,
                 mine: Callable[[dict], bool] | None = None):
        self.kinds, self.server, self.conn, self.mine = kinds, server, conn, mine

    def __call__(self, event: dict) -> bool:
        return ((self.kinds is None or event["kind"] in self.kinds)
                and (self.server is None or event["server"] == self.server)
                and (self.conn is None or event["conn"] == self.conn)
                and (self.mine is None or self.mine(event)))


@implementer(IPushProducer)
class Subscriber:
    """One SSE client. As the producer of its response, it hears when the client falls behind: it is then
    skipped, and caught up from the journal once the transport drains, so a slow client costs no memory."""

    def __init__(self, request: server.Request, wanted: Filter, last: int):
        self.request = request
        self.wanted = wanted
        #: Every event up to this seq has been sent (or was not wanted).
        self.last = last
        self.paused = False
        self.behind = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class EventStream:
    """Fans journal events out to every connected SSE client.

    Recording only queues the event; every ``BATCH`` seconds the queue is encoded (each event once) and
    written to each subscriber in one write, so a busy server pays little for a watching dashboard.
    With no subscriber there is no sink on the journal at all.
    """

    def __init__(self, journal: Journal, reactor, scrub: Callable[[bytes], bytes]):
        self.journal = journal
        self.reactor = reactor
        self.scrub = scrub
        self._subscribers: list[Subscriber] = []
        self._pending: list[dict] = []
        self._sink = self._pending.append
        self._flush_call = None
        self._keepalive = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, request: server.Request, wanted: Filter, since: int) -> Any:
        request.setHeader("content-type", "text/event-stream")
        request.setHeader("cache-control", "no-cache")
        subscriber = Subscriber(request, wanted, since)
        request.registerProducer(subscriber, True)
        request.write(b"retry: 1000\n\n" + self._catch_up(subscriber))
        if not self._subscribers:
            self.journal.add_sink(self._sink)
            self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)
            self._flush_call = self.reactor.callLater(BATCH, self._flush)
        self._subscribers.append(subscriber)
        request.notifyFinish().addBoth(lambda _: self._leave(subscriber))
        return server.NOT_DONE_YET

    def _catch_up(self, subscriber: Subscriber) -> bytes:
        events = [e for e in self.journal.query(since=subscriber.last) if subscriber.wanted(e)]
        subscriber.last = self.journal.last_seq
        subscriber.behind = False
        return self.scrub(b"".join(_frame(e) for e in events))

    def _flush(self) -> None:
        pending = list(self._pending)
        del self._pending[:]
        frames: dict[int, bytes] = {}  # each event encoded once, and only if someone wants it
        for subscriber in self._subscribers:
            if subscriber.paused:
                subscriber.behind = subscriber.behind or bool(pending)
                continue
            if subscriber.behind:
                data = self._catch_up(subscriber)
            else:
                wanted, last = subscriber.wanted, subscriber.last
                parts = []
                for event in pending:
                    if event["seq"] > last and wanted(event):
                        frame = frames.get(event["seq"])
                        if frame is None:
                            frame = frames[event["seq"]] = _frame(event)
                        parts.append(frame)
                data = self.scrub(b"".join(parts)) if parts else b""
                if pending:
                    subscriber.last = max(last, pending[-1]["seq"])
            if data:
                subscriber.request.write(data)
        self._flush_call = self.reactor.callLater(BATCH, self._flush)

    def _ping(self) -> None:
        for subscriber in self._subscribers:
            if not subscriber.paused:
                subscriber.request.write(b": keep-alive\n\n")
        self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)

    def _leave(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        if not self._subscribers:
            self.journal.remove_sink(self._sink)
            del self._pending[:]
            for call in (self._keepalive, self._flush_call):
                if call is not None and call.active():
                    call.cancel()
            self._keepalive = self._flush_call = None

    def close(self) -> None:
        """Stop every stream (the service is stopping)."""
        for subscriber in list(self._subscribers):
            subscriber.request.unregisterProducer()
            subscriber.request.finish()


def _frame(event: dict) -> bytes:
    # orjson, with journal.jsonable as the fallback for bytes and sets: the same JSON as the journal's own
    # to_json, about seven times faster, which is most of what a subscriber costs a busy server.
    return b"id: %d\ndata: %s\n\n" % (event["seq"], orjson.dumps(event, default=jsonable,
                                                                   option=orjson.OPT_NON_STR_KEYS))
