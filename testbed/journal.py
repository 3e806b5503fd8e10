"""The journal: an append-only record of everything that crossed every server.

Events are plain dicts with a sequence number, a monotonic timestamp, a kind,
the server and connection they belong to, and kind-specific fields. They can
be queried in memory, streamed to sinks (the ``--journal FILE`` JSONL writer)
and exported as JSON Lines.
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
import time
from collections import deque
from typing import IO, Any, Callable, Iterable, Iterator

#: Event kinds every server uses; protocols may add their own.
OPEN = "connection.open"
CLOSE = "connection.close"
DATA = "data"
COMMAND = "command"
REPLY = "reply"
FAULT = "fault"
STORED = "stored"
ERROR = "error"
#: The server stopped reading a client that does not read its replies (``reading=False``), or read again.
FLOW = "flow"
#: A request no route or expectation allowed (fields: request, why); ``verify()`` names it.
UNEXPECTED = "unexpected"


def internal(error: Any) -> dict[str, Any]:
    """The fields that mark an ``error`` event as an exception inside a server (not a client's bad input).

    ``error`` is an exception or a Twisted Failure; a pytest test during which
    such an event is recorded fails, with this traceback in its report.
    """
    if hasattr(error, "getTraceback"):
        text = error.getTraceback()
    else:
        import traceback

        text = "".join(traceback.format_exception(error))
    return {"internal": True, "traceback": text[-4000:]}


def jsonable(value: Any) -> Any:
    """Plain data for JSON: bytes as UTF-8 text, or ``{\"base64\": ...}`` when not text."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def to_json(event: dict) -> str:
    """One event as one line of JSON (bytes as UTF-8 text, or base64 when not text)."""
    return json.dumps(jsonable(event), separators=(",", ":"), sort_keys=False)


class Records(deque):
    """A record list that keeps the newest ``limit`` items (0: all): the journal's events, a server's messages.

    One bound for everything a run keeps per event: ``[journal] max_events``.
    Appending is deque's own C code, so the bound costs nothing per record.
    """

    def __init__(self, limit: int = 0, items: Iterable = ()):
        super().__init__(items, limit or None)

    @property
    def limit(self) -> int:
        return self.maxlen or 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, deque)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Journal:
    """What crossed every server, in order.

    ``record`` is called from the reactor thread only; readers in other
    threads see a consistent prefix (list appends are atomic) and can block on
    ``wait`` until a new event arrives.
    """

    def __init__(self, payload_cap: int = 16384, clock: Callable[[], float] = time.monotonic,
                 max_events: int = 0, redact: bool = True):
        #: Per connection and direction, how many payload bytes are kept in
        #: ``data`` events; counts are always kept.
        self.payload_cap = payload_cap
        #: Keep at most this many events, oldest dropped first (0: no limit);
        #: servers bound what they keep for tests (``requests``...) with ``records()``.
        self.max_events = max_events
        #: Mask credentials (passwords, SASL responses) in ``data`` payloads, keeping their length.
        self.redact = redact
        self._clock = clock
        #: Events recorded while sinks are held (``hold``), in order, for ``release``.
        self._held: list[dict] | None = None
        self._events: Records = Records(max_events)
        self._seq = 0
        self._sinks: list[Callable[[dict], None]] = []
        self._changed = threading.Condition()

    # -- writing --------------------------------------------------------

    def record(self, kind: str, server: str | None = None, conn: int | None = None, **fields: Any) -> dict:
        # On every server's hot path: one dict display, no intermediate copies.
        self._seq += 1
        event = {"seq": self._seq, "t": self._clock(), "kind": kind, "server": server, "conn": conn, **fields}
        self._events.append(event)
        if self._sinks:
            if self._held is not None:
                self._held.append(event)
            else:
                for sink in self._sinks:
                    sink(event)
        if self._waiters:
            with self._changed:
                self._changed.notify_all()
        return event

    _waiters = 0

    def hold(self) -> None:
        """Keep events from the sinks (the JSONL file) until ``release``: a payload may still be redacted."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Hand the held events to the sinks, in order."""
        held, self._held = self._held, None
        for event in held or ():
            for sink in self._sinks:
                sink(event)

    def add_sink(self, sink: Callable[[dict], None]) -> None:
        """Call ``sink(event)`` for every event recorded from now on."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[dict], None]) -> None:
        self._sinks.remove(sink)

    def clear(self) -> None:
        """Forget every event (between tests); sequence numbers keep counting."""
        self._events = Records(self.max_events)

    def records(self) -> Records:
        """An empty record list under this run's bound, for what a server keeps for tests."""
        return Records(self.max_events)

    # -- reading --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._events)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event recorded (0 before any); it survives ``clear``."""
        return self._seq

    def __iter__(self) -> Iterator[dict]:
        return iter(list(self._events))

    @property
    def events(self) -> list[dict]:
        return list(self._events)

    def query(self, kind: str | Iterable[str] | None = None, server: str | None = None,
              conn: int | None = None, since: int = 0, **match: Any) -> list[dict]:
        """Events of ``kind`` (a kind or several) on ``server``/``conn`` whose fields equal ``match``.

        ``since`` keeps only events with a sequence number above it.
        """
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        out = []
        # One C-level copy of the bounded deque (atomic against the reactor thread's appends); events
        # are in seq order, so ``since`` starts by bisection rather than a walk over what came before.
        events = list(self._events)
        start = bisect.bisect_right(events, since, key=_seq_of) if since else 0
        for e in events[start:]:
            if kinds is not None and e["kind"] not in kinds:
                continue
            if server is not None and e["server"] != server:
                continue
            if conn is not None and e["conn"] != conn:
                continue
            if any(e.get(k) != v for k, v in match.items()):
                continue
            out.append(e)
        return out

    def faults(self, server: str | None = None) -> list[dict]:
        """Fault decisions that fired."""
        return self.query(FAULT, server=server, fired=True)

    def tail(self, n: int = 20) -> list[dict]:
        return list(self._events)[-n:] if n > 0 else []

    def export(self, target: str | IO[str]) -> int:
        """Write every event as JSON Lines to a path or a text file; returns the count."""
        events = list(self._events)
        if isinstance(target, str):
            with open(target, "w", encoding="utf-8") as f:
                return self.export(f)
        for e in events:
            target.write(to_json(e) + "\n")
        return len(events)

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Block (in a thread other than the reactor's) until ``predicate()`` is truthy.

        Returns its value, or the last falsy value when ``timeout`` runs out.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiters += 1
            try:
                while True:
                    value = predicate()
                    remaining = deadline - time.monotonic()
                    if value or remaining <= 0:
                        return value
                    self._changed.wait(min(remaining, 0.5))
            finally:
                self._waiters -= 1


def _seq_of(event: dict) -> int:
    return event["seq"]


class JSONLWriter:
    """A journal sink that appends each event to a file as one JSON line, flushed per event."""

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "a", encoding="utf-8", buffering=1)

    def __call__(self, event: dict) -> None:
        self._file.write(to_json(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
