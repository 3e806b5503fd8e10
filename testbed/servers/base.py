"""What every running server shares: its listeners, the handle tests hold, and waiting.

A protocol module subclasses ``Server`` and implements ``start``; listening,
fault wrapping, TLS, reset and the thread-safe ``wait_for`` live here.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from twisted.internet import defer

if TYPE_CHECKING:
    from testbed.harness import Testbed


class WaitTimeout(AssertionError):
    """``wait_for`` ran out of time; the message says what arrived instead."""


#: The thread running the reactor when it runs in a background thread (the
#: pytest face); None when the reactor owns the main thread (twistd).
REACTOR_THREAD: list[int | None] = [None]


def in_reactor_thread() -> bool:
    ident = REACTOR_THREAD[0]
    return ident is None or ident == threading.get_ident()


class Listener:
    """One bound port of a server."""

    def __init__(self, label: str, port, tls: bool, scheme: str, factory=None):
        self.label = label
        self.port = port
        self.tls = tls
        self.scheme = scheme
        self.factory = factory

    @property
    def host(self) -> str:
        return self.port.getHost().host

    @property
    def number(self) -> int:
        return self.port.getHost().port

    def url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.number}"


class ServerFaults:
    """``server.faults``: add and clear runtime fault rules aimed at one server."""

    def __init__(self, server: "Server"):
        self._server = server

    def add(self, **rule: Any):
        rule.setdefault("server", self._server.name)
        bed = self._server.bed
        return bed.call(bed.faults.add, **rule)

    def clear(self) -> None:
        bed = self._server.bed
        bed.call(bed.faults.clear)

    def fired(self) -> list[dict]:
        return self._server.bed.journal.faults(self._server.name)


class Server(abc.ABC):
    """A running server: ``host``, ``port``, ``tls_port``, ``faults``, ``journal``, ``wait_for``."""

    #: URL scheme of the plain and the TLS listener ("http", "https"...).
    scheme = "tcp"
    tls_scheme = "tls"
    #: ALPN protocol ids offered under TLS (HTTP: http/1.1); others negotiate none.
    alpn: tuple[bytes, ...] = ()

    def __init__(self, bed: "Testbed", name: str, config: Any):
        self.bed = bed
        self.name = name
        self.config = config
        self.listeners: list[Listener] = []
        self.faults = ServerFaults(self)

    # -- to implement ------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> defer.Deferred:
        """Listen on the configured endpoints."""

    def reset(self) -> None:
        """Forget what the last test left (stored items, runtime additions); called in the reactor thread."""
        for listener in self.listeners:
            if listener.factory is not None and hasattr(listener.factory, "abort_all"):
                listener.factory.abort_all()

    @property
    def tls(self):
        """The run's TLS material, serving this server's ``certificate`` chain."""
        return self.bed.tls.serving(getattr(self.config, "certificate", "valid"))

    # -- listening -----------------------------------------------------------

    @defer.inlineCallbacks
    def listen(self, endpoint: str, factory, label: str, tls: bool = False, scheme: str | None = None):
        """Listen on ``endpoint`` with ``factory`` wrapped for faults (and in TLS when ``tls``)."""
        from twisted.internet.endpoints import serverFromString

        from testbed.faults.wire import FaultingFactory

        bed = self.bed
        wrapped = FaultingFactory(factory, self.name, bed.faults, bed.journal, bed.reactor, label=label, tls=tls,
                                  alpn=self.alpn)
        outer = wrapped
        if tls:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            outer = TLSMemoryBIOFactory(self.tls.options(), False, wrapped)
        port = yield serverFromString(bed.reactor, endpoint).listen(outer)
        listener = Listener(label, port, tls, scheme or (self.tls_scheme if tls else self.scheme), wrapped)
        self.listeners.append(listener)
        return listener

    def stop(self) -> defer.Deferred:
        self.reset()
        return defer.gatherResults([defer.maybeDeferred(l.port.stopListening) for l in self.listeners])

    # -- what tests read ------------------------------------------------------

    def _listener(self, tls: bool) -> Listener | None:
        for listener in self.listeners:
            if listener.tls == tls:
                return listener
        return None

    @property
    def host(self) -> str:
        return self.listeners[0].host

    @property
    def port(self) -> int:
        """The plain (or STARTTLS) port; the implicit-TLS port when that is all there is."""
        listener = self._listener(False) or self.listeners[0]
        return listener.number

    @property
    def tls_port(self) -> int | None:
        """The implicit-TLS port, or None when the scenario enables none."""
        listener = self._listener(True)
        return listener.number if listener else None

    @property
    def journal(self) -> list[dict]:
        return self.bed.journal.query(server=self.name)

    def describe(self) -> list[str]:
        return [f"{l.label.upper():<7} {l.url()}" for l in self.listeners]

    # -- waiting ---------------------------------------------------------------

    def _wait(self, collect: Callable[[], Sequence], done: Callable[[Sequence], bool], what: str,
              timeout: float, seen: Callable[[], Sequence] | None = None):
        """Wait until ``done(collect())``; blocking in a test thread, a Deferred in the reactor thread.

        On time-out, raises (or errbacks with) ``WaitTimeout`` listing ``seen()``.
        """
        bed = self.bed

        def failure():
            items = (seen or collect)()
            return WaitTimeout(f"{self.name}: waited {timeout}s for {what}; got {len(items)}: "
                               + "; ".join(repr(i) for i in list(items)[:10]))

        if not in_reactor_thread():
            result = bed.journal.wait(lambda: (lambda items: items if done(items) else None)(collect()), timeout)
            if result is None:
                raise failure()
            return result

        d = defer.Deferred()

        def check(event=None):
            if d.called:
                return
            items = collect()
            if done(items):
                bed.journal.remove_sink(check)
                timer.cancel()
                d.callback(items)

        def expire():
            if not d.called:
                bed.journal.remove_sink(check)
                d.errback(failure())

        timer = bed.reactor.callLater(timeout, expire)
        bed.journal.add_sink(check)
        check()
        return d

    def wait_for_items(self, items: Callable[[], Sequence], predicate_or_count: Any, timeout: float, noun: str):
        """The common ``wait_for``: a count of items, or a predicate some item must satisfy."""
        if callable(predicate_or_count):
            predicate = predicate_or_count
            return self._wait(lambda: [i for i in items() if predicate(i)], lambda found: len(found) > 0,
                              f"a {noun} matching {getattr(predicate, '__name__', predicate)}", timeout, seen=items)
        count = 1 if predicate_or_count is None else int(predicate_or_count)
        return self._wait(items, lambda found: len(found) >= count, f"{count} {noun}(s)", timeout)
