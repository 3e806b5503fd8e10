"""What every running server shares: the context it gets, its listeners, the handle tests hold, and waiting.

A protocol's server module subclasses ``Server`` and implements ``start``;
listening, fault wrapping, TLS, reset and the thread-safe ``wait_for`` live
here. A server is a child service of the testbed and sees only its
``ServerContext``, never the testbed itself.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError

from testbed import registry
from testbed.faults.engine import glob_matches
from testbed.runtime import in_reactor_thread


#: The listen backlog of a tcp: endpoint that names none. Twisted's default, 50, dropped accepted
#: handshakes under 1,000 parallel sessions; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024


def with_backlog(endpoint: str) -> str:
    """``endpoint`` with ``backlog=LISTEN_BACKLOG`` added when it is a tcp:/tcp6: endpoint without a backlog."""
    kind = endpoint.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6") or "backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={LISTEN_BACKLOG}"


class WaitTimeout(AssertionError):
    """``wait_for`` ran out of time; the message says what arrived instead."""


class ListenError(CannotListenError):
    """A listener could not bind: which server, which config key asked for it, and why."""

    def __init__(self, server: str, key: str, endpoint: str, error: CannotListenError):
        super().__init__(error.interface, error.port, error.socketError)
        self.server = server
        self.key = key
        self.endpoint = endpoint

    @property
    def address(self) -> str:
        host = self.interface or "0.0.0.0"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def reason(self) -> str:
        error = self.socketError
        return getattr(error, "strerror", None) or str(error)

    def __str__(self) -> str:
        return (f"servers.{self.server}.{self.key} = {self.endpoint!r}: cannot listen on {self.address} "
                f"({self.reason})")


@attrs.frozen
class ServerContext:
    """What the run hands one server instance: no more than it needs."""

    #: The instance name (journal events and fault rules use it) and its protocol.
    name: str
    protocol: str
    config: Any
    reactor: Any
    #: The run's journal (the server records under its own name) and fault engine.
    journal: Any
    faults: Any
    #: The run's TLS material (``testbed.tls.ServerTLS``).
    tls: Any
    #: The scenario's users (address -> password), its path resolver (relative to the scenario
    #: file) and its source, for messages.
    users: Mapping[str, str]
    path: Callable[[str], str]
    source: str
    #: The shared mail store, built on first use (only mail servers and FTP ask).
    mail: Callable[[], Any]
    #: Run a function in the reactor thread from any thread (``testbed.runtime.call``).
    call: Callable[..., Any]


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

    def to_dict(self, server: "Server") -> dict[str, Any]:
        """JSON-ready, for ``--ports-out`` and scripts: server, protocol, label, host, port, url, tls."""
        return {"server": server.name, "protocol": server.context.protocol, "label": self.label,
                "host": self.host, "port": self.number, "url": self.url(), "tls": self.tls}


class ServerFaults:
    """``server.faults``: add and clear runtime fault rules aimed at one server."""

    def __init__(self, server: "Server"):
        self._server = server

    def add(self, **rule: Any):
        rule.setdefault("server", self._server.name)
        context = self._server.context
        return context.call(context.faults.add, **rule)

    def clear(self) -> None:
        context = self._server.context
        context.call(context.faults.clear)

    def fired(self) -> list[dict]:
        return self._server.context.journal.faults(self._server.name)


class ListeningService(service.Service):
    """A child service of the testbed that binds its listeners when started and says when through ``started``.

    It listens in ``privilegedStartService`` under twistd (so a port in use
    stops the daemon at once) and in ``startService`` otherwise; subclasses
    implement ``start()`` (listen, returning a Deferred) and ``stop()``.
    """

    #: Fires once the service listens (or fails with why it could not).
    started: defer.Deferred | None = None

    def privilegedStartService(self):
        super().privilegedStartService()
        self._listen()

    def startService(self):
        super().startService()
        self._listen()

    def _listen(self) -> defer.Deferred:
        if self.started is None:
            self.started = defer.maybeDeferred(self.start)
        return self.started

    def stopService(self):
        super().stopService()
        self.started = None
        return self.stop()


class Server(ListeningService, abc.ABC):
    """A running server: ``host``, ``port``, ``tls_port``, ``faults``, ``journal``, ``wait_for``.

    As a service it listens when started (in ``privilegedStartService`` under
    twistd, so a port in use stops the daemon at once) and stops listening
    when stopped; ``started`` fires once every listener is bound.
    """

    #: URL scheme of the plain and the TLS listener ("http", "https"...).
    scheme = "tcp"
    tls_scheme = "tls"
    #: ALPN protocol ids offered under TLS (HTTP: http/1.1); others negotiate none.
    alpn: tuple[bytes, ...] = ()

    def __init__(self, context: ServerContext):
        self.context = context
        self.name = context.name
        self.config = context.config
        self.reactor = context.reactor
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
        config = self.config
        return self.context.tls.serving(getattr(config, "certificate", "valid"), getattr(config, "tls_versions", ()))

    # -- listening -----------------------------------------------------------

    @defer.inlineCallbacks
    def listen(self, endpoint: str, factory, label: str, tls: bool = False, scheme: str | None = None):
        """Listen on ``endpoint`` with ``factory`` wrapped for faults (and in TLS when ``tls``)."""
        from twisted.internet.endpoints import serverFromString

        from testbed.faults.wire import FaultingFactory

        context = self.context
        wrapped = FaultingFactory(factory, self.name, context.faults, context.journal, context.reactor, label=label,
                                  tls=tls, alpn=self.alpn, replies=registry.protocol(context.protocol).replies)
        outer = wrapped
        if tls:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            outer = TLSMemoryBIOFactory(self.tls.options(), False, wrapped)
        try:
            port = yield serverFromString(context.reactor, with_backlog(endpoint)).listen(outer)
        except CannotListenError as e:
            raise self.listen_error(endpoint, e) from None
        listener = Listener(label, port, tls, scheme or (self.tls_scheme if tls else self.scheme), wrapped)
        self.listeners.append(listener)
        return listener

    def listen_error(self, endpoint: str, error: CannotListenError) -> ListenError:
        """``error`` naming this server and the config key whose endpoint could not bind."""
        keys = [l.key for l in registry.protocol(self.context.protocol).listeners
                if getattr(self.config, l.key, None) == endpoint]
        return ListenError(self.name, keys[0] if keys else "listen", endpoint, error)

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
    def ca_path(self) -> str:
        """A PEM file with the run's CA certificate, for clients of this server's TLS listeners to trust."""
        return self.context.tls.ca_path

    @property
    def journal(self) -> list[dict]:
        return self.context.journal.query(server=self.name)

    def describe(self) -> list[str]:
        return [f"{l.label.upper():<7} {l.url()}" for l in self.listeners]

    def listener_records(self) -> list[dict[str, Any]]:
        """Every listener as JSON-ready data (see ``Listener.to_dict``)."""
        return [l.to_dict(self) for l in self.listeners]

    # -- waiting ---------------------------------------------------------------

    def _wait(self, collect: Callable[[], Sequence], done: Callable[[Sequence], bool], what: str,
              timeout: float, seen: Callable[[], Sequence] | None = None):
        """Wait until ``done(collect())``; blocking in a test thread, a Deferred in the reactor thread.

        On time-out, raises (or errbacks with) ``WaitTimeout`` listing ``seen()``.
        """
        context = self.context

        def failure():
            items = (seen or collect)()
            return WaitTimeout(f"{self.name}: waited {timeout}s for {what}; got {len(items)}: "
                               + "; ".join(repr(i) for i in list(items)[:10]))

        if not in_reactor_thread():
            result = context.journal.wait(lambda: (lambda items: items if done(items) else None)(collect()), timeout)
            if result is None:
                raise failure()
            return result

        d = defer.Deferred()

        def check(event=None):
            if d.called:
                return
            items = collect()
            if done(items):
                context.journal.remove_sink(check)
                timer.cancel()
                d.callback(items)

        def expire():
            if not d.called:
                context.journal.remove_sink(check)
                d.errback(failure())

        timer = context.reactor.callLater(timeout, expire)
        context.journal.add_sink(check)
        check()
        return d

    #: The keyword that picks which records ``wait_for`` reads (POP3's ``kind``, IMAP's ``of``), if any.
    wait_selector: str | None = None
    @property
    def wait_aliases(self) -> Mapping[str, str]:
        """Filter keywords that stand for a record attribute of another name (the spec's; SMTP: ``to``)."""
        return registry.protocol(self.context.protocol).wait_aliases

    def wait_records(self, selector: str | None) -> tuple[Callable[[], Sequence], str]:
        """The records ``wait_for`` reads for ``selector`` (None: the default), and their noun."""
        raise TypeError(f"{type(self).__name__} keeps no records to wait for")

    def wait_for(self, predicate_or_count: Any = 1, *, timeout: float = 5.0, count: int | None = None,
                 **filters: Any):
        """This server's records once ``count`` match ``filters``, or those that also satisfy ``predicate``.

        ``filters`` name record attributes: a string is a case-insensitive glob
        (``to="alice@*"``, ``path="/api/*"``), anything else must be equal, and
        a list attribute matches when one of its items does. Blocks in a test
        thread and returns the records; in the reactor thread, returns a
        Deferred. Raises ``WaitTimeout`` naming what arrived instead.
        """
        if count is not None:  # the keyword older handles took
            predicate_or_count = count
        selector = filters.pop(self.wait_selector, None) if self.wait_selector else None
        collect, noun = self.wait_records(selector)
        keep = record_filter(filters, self.wait_aliases)
        described = "".join(f" with {key} {value!r}" for key, value in filters.items())

        def kept() -> list:
            return [item for item in collect() if keep(item)]

        if callable(predicate_or_count):
            predicate = predicate_or_count
            return self._wait(lambda: [i for i in kept() if predicate(i)], lambda found: len(found) > 0,
                              f"a {noun}{described} matching {getattr(predicate, '__name__', predicate)}", timeout,
                              seen=collect)
        number = 1 if predicate_or_count is None else int(predicate_or_count)
        return self._wait(kept, lambda found: len(found) >= number, f"{number} {noun}(s){described}", timeout,
                          seen=collect)


def record_filter(filters: Mapping[str, Any], aliases: Mapping[str, str] = {}) -> Callable[[Any], bool]:
    """A test of a record against ``wait_for`` filters: fault-rule glob matching on its attributes.

    A string is a case-insensitive glob, anything else must be equal, and a
    list attribute matches when one of its items does (``glob_matches``).
    ``aliases`` maps a filter keyword to the attribute it stands for.
    """
    wanted = [(aliases.get(key, key), key, value) for key, value in filters.items()]
    return lambda record: all(glob_matches(value, _attribute(record, name, shown)) for name, shown, value in wanted)


def _attribute(record: Any, name: str, shown: str) -> Any:
    if isinstance(record, Mapping):
        if name in record:
            return record[name]
        known = sorted(record)
    else:
        try:
            return getattr(record, name)
        except AttributeError:
            known = sorted(n for n in dir(record) if not n.startswith("_") and not callable(getattr(record, n, None)))
    raise TypeError(f"wait_for({shown}=...): a {type(record).__name__} has no {name!r}; "
                    f"filter on one of: {', '.join(known)}")
