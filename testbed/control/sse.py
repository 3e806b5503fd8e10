"""Server-Sent Events of the journal: filters, and ``Last-Event-ID``/``since`` so a reconnecting client misses nothing.

The stream adds its journal sink only while someone listens: with no subscriber, recording an event costs nothing more.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web import server

from testbed.journal import Journal, to_json

#: A comment line every this many seconds keeps proxies and idle clients from closing the stream.
KEEPALIVE = 15.0


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
    """Fans journal events out to every connected SSE client."""

    def __init__(self, journal: Journal, reactor, scrub: Callable[[str], str]):
        self.journal = journal
        self.reactor = reactor
        self.scrub = scrub
        self._subscribers: list[tuple[server.Request, Filter]] = []
        self._keepalive = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, request: server.Request, wanted: Filter, since: int) -> Any:
        request.setHeader("content-type", "text/event-stream")
        request.setHeader("cache-control", "no-cache")
        request.write(b"retry: 1000\n\n")
        for event in self.journal.query(since=since):
            if wanted(event):
                request.write(self._frame(event))
        entry = (request, wanted)
        if not self._subscribers:
            self.journal.add_sink(self._publish)
            self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)
        self._subscribers.append(entry)
        request.notifyFinish().addBoth(lambda _: self._leave(entry))
        return server.NOT_DONE_YET

    def _frame(self, event: dict) -> bytes:
        return f"id: {event['seq']}\ndata: {self.scrub(to_json(event))}\n\n".encode("utf-8")

    def _publish(self, event: dict) -> None:
        frame = None
        for request, wanted in self._subscribers:
            if wanted(event):
                if frame is None:
                    frame = self._frame(event)
                request.write(frame)

    def _ping(self) -> None:
        for request, _ in self._subscribers:
            request.write(b": keep-alive\n\n")
        self._keepalive = self.reactor.callLater(KEEPALIVE, self._ping)

    def _leave(self, entry) -> None:
        if entry in self._subscribers:
            self._subscribers.remove(entry)
        if not self._subscribers:
            self.journal.remove_sink(self._publish)
            if self._keepalive is not None and self._keepalive.active():
                self._keepalive.cancel()
            self._keepalive = None

    def close(self) -> None:
        """Stop every stream (the service is stopping)."""
        for request, _ in list(self._subscribers):
            request.finish()
