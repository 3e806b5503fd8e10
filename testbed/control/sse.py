"""Server-Sent Events of the journal: filters, and ``Last-Event-ID``/``since`` so a reconnecting client misses nothing.

The stream adds its journal sink only while someone listens: with no subscriber, recording an event costs nothing more.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.web import server

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


class EventStream:
    """Fans journal events out to every connected SSE client.

    Recording only queues the event; every ``BATCH`` seconds the queue is encoded (each event once) and
    written to each subscriber in one write, so a busy server pays little for a watching dashboard.
    """

    def __init__(self, journal: Journal, reactor, scrub: Callable[[str], str]):
        self.journal = journal
        self.reactor = reactor
        self.scrub = scrub
        self._subscribers: list[tuple[server.Request, Filter]] = []
        self._pending: list[dict] = []
        self._flush_call = None
        self._keepalive = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, request: server.Request, wanted: Filter, since: int) -> Any:
        request.setHeader("content-type", "text/event-stream")
        request.setHeader("cache-control", "no-cache")
        backlog = [e for e in self.journal.query(since=since) if wanted(e)]
        request.write(b"retry: 1000\n\n" + self.scrub("".join(_frame(e) for e in backlog)).encode("utf-8"))
        entry = (request, wanted)
        if not self._subscribers:
            self._sink = self._pending.append
            self.journal.add_sink(self._sink)
            self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)
        self._subscribers.append(entry)
        request.notifyFinish().addBoth(lambda _: self._leave(entry))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        return server.NOT_DONE_YET

    def _flush(self) -> None:
        pending, self._pending[:] = list(self._pending), []
        if pending:
            frames = [(event, _frame(event)) for event in pending]
            for request, wanted in self._subscribers:
                text = "".join(frame for event, frame in frames if wanted(event))
                if text:
                    request.write(self.scrub(text).encode("utf-8"))
        self._flush_call = self.reactor.callLater(BATCH, self._flush) if self._subscribers else None

    def _ping(self) -> None:
        for request, _ in self._subscribers:
            request.write(b": keep-alive\n\n")
        self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)

    def _leave(self, entry) -> None:
        if entry in self._subscribers:
            self._subscribers.remove(entry)
        if not self._subscribers:
            self.journal.remove_sink(self._sink)
            self._pending[:] = []
            for call in (self._keepalive, self._flush_call):
                if call is not None and call.active():
                    call.cancel()
            self._keepalive = self._flush_call = None

    def close(self) -> None:
        """Stop every stream (the service is stopping)."""
        for request, _ in list(self._subscribers):
            request.finish()


def _plain(value: Any) -> Any:
    """What ``json`` cannot write itself, as ``testbed.journal.jsonable`` would give it."""
    return jsonable(value)


def _frame(event: dict) -> str:
    # json's own encoder with a fallback for bytes and sets: several times faster than walking every
    # event through jsonable first, and the same text.
    return f"id: {event['seq']}\ndata: {json.dumps(event, separators=(',', ':'), default=_plain)}\n\n"
