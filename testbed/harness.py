"""The testbed: a MultiService of every enabled server instance of a scenario, and the handle tests hold.

It owns the run's journal, fault engine, TLS material and mail store, and
hands each server a narrow ``ServerContext``. Server classes come from the
registry and their modules are imported only when an instance runs, since
some of Twisted's protocol modules install a reactor at import.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.application import service
from twisted.internet import defer

from testbed import config as config_module
from testbed import runtime
from testbed.config import Scenario, ServerEntry
from testbed.faults.engine import FaultEngine
from testbed.journal import JSONLWriter, Journal
from testbed.servers.base import Server, ServerContext
from testbed.tls import CertificateAuthority, ServerTLS


class Testbed(service.MultiService):
    """Every server of one scenario, with its journal, faults, TLS and mail store.

    Its servers are child services; so can other services be (the control
    API, a proxy). ``start()``/``stop()`` return Deferreds for code that runs
    it on a reactor of its own; ``twistd`` runs it as a service.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, scenario: Scenario | Mapping | str | None = None, reactor=None, seed: int | None = None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.scenario = config_module.coerce(scenario)
        self.seed = self.scenario.seed if seed is None else seed
        self.journal = Journal(payload_cap=self.scenario.journal.payload_cap,
                               max_events=self.scenario.journal.max_events, redact=self.scenario.journal.redact)
        self.faults = FaultEngine(self.seed, self.journal, self.scenario.faults,
                                  build_rule=lambda **rule: self.rule("faults.add()", **rule))
        tls = self.scenario.tls
        ca = CertificateAuthority.load(self.scenario.path(tls.ca_cert), self.scenario.path(tls.ca_key)) if tls.ca_cert else None
        self.tls = ServerTLS(ca, tls.hostnames)
        self._mail = None
        #: The control API service, when a face attached one (``testbed.control.attach``).
        self.control = None
        self._writers: list[JSONLWriter] = []
        self._entries = {entry.name: entry for entry in self.scenario.servers.enabled()}
        self._built: dict[str, Server] = {}

    @property
    def servers(self) -> dict[str, Server]:
        """Every enabled server by instance name, in scenario order."""
        return {name: self.server(name) for name in self._entries}

    def server(self, name: str) -> Server:
        """The server instance ``name``, built on first mention: a run that uses one server imports only its module."""
        server = self._built.get(name)
        if server is None:
            try:
                entry = self._entries[name]
            except KeyError:
                enabled = ", ".join(sorted(self._entries)) or "none"
                raise KeyError(f"server {name!r} is not running in this scenario (running: {enabled})") from None
            server = entry.spec.load_server()(self._context(entry))
            server.setName(name)
            # A MultiService starts a child added while it runs; a server starts when start() names it instead.
            running, self.running = self.running, 0
            try:
                server.setServiceParent(self)
            finally:
                self.running = running
            self._built[name] = server
        return server

    def _context(self, entry: ServerEntry) -> ServerContext:
        scenario = self.scenario
        return ServerContext(name=entry.name, protocol=entry.protocol, config=entry.config, reactor=self.reactor,
                             journal=self.journal, faults=self.faults, tls=self.tls, users=scenario.users,
                             path=scenario.path, source=scenario.source, mail=lambda: self.mail, call=self.call)

    # -- life ----------------------------------------------------------------

    def privilegedStartService(self):
        """Under twistd: bind every listener now, so a port in use stops the daemon before it runs."""
        self.servers  # build them all: twistd starts every child
        super().privilegedStartService()
        failures = []
        for started in self._started():
            started.addErrback(failures.append)
        if failures:
            failures[0].raiseException()

    def start(self, only: Iterable[str] | None = None) -> defer.Deferred:
        """Start every enabled server (or the ones named in ``only``) that is not running yet.

        Fires with the testbed once they all listen (fails with the first
        error). Servers left out start later, on a call that names them.
        """
        if only is None:
            self.servers  # build them all
        if not self.running:
            service.Service.startService(self)  # the testbed runs; which children run is chosen below
        children = list(self) if only is None else (
            [self[name] for name in only] + [child for child in self if not isinstance(child, Server)])
        for child in children:
            if not child.running:
                child.startService()
        d = defer.gatherResults([c.started for c in children if getattr(c, "started", None) is not None],
                                consumeErrors=True)

        def failed(failure):
            first = failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure
            return self.stop().addBoth(lambda _: first)

        return d.addCallbacks(lambda _: self, failed)

    def _started(self) -> list[defer.Deferred]:
        """What fires once each child listens: every server's, and any other child's (the control API)."""
        return [child.started for child in self if getattr(child, "started", None) is not None]

    def stop(self) -> defer.Deferred:
        """Stop every server (and any other child service); fires once all stopped listening."""
        d = defer.maybeDeferred(self.stopService) if self.running else defer.gatherResults(
            [defer.maybeDeferred(s.stop) for s in self._built.values()])

        def close_writers(result):
            for writer in self._writers:
                writer.close()
            self._writers = []
            return result

        return d.addBoth(close_writers)

    def reset(self) -> None:
        """Between tests: journal, runtime faults, counters and every server's state back to the start."""
        self.call(self._reset)

    def _reset(self) -> None:
        for server in self._built.values():
            if server.running:
                server.reset()
        if self._mail is not None:
            self._mail.reset()
        self.faults.reset()
        self.journal.clear()

    # -- what tests and the daemon use ------------------------------------------

    @property
    def mail(self):
        """The mail store shared by SMTP, POP3, IMAP (and FTP's users)."""
        if self._mail is None:
            from testbed.mail.store import MailStore

            mail = self.scenario.mail
            self._mail = MailStore(maildir=self.scenario.path(mail.maildir) if mail.maildir else None,
                                   accept_unknown=mail.accept_unknown, users=self.scenario.users)
        return self._mail

    @property
    def ca_path(self) -> str:
        """A PEM file with the run's CA certificate, for clients to trust."""
        return self.tls.ca_path

    def __getitem__(self, name: str) -> Server:
        return self.server(name)

    @property
    def started(self) -> list[str]:
        """The names of the servers running now (a pytest run starts each on first use)."""
        return [name for name, server in self._built.items() if server.running]

    def targets(self) -> Mapping[str, Any]:
        """What a fault rule may aim at: this scenario's enabled servers."""
        return {name: (entry.protocol, entry.spec.faults) for name, entry in self._entries.items()}

    def rule(self, label: str, **rule: Any):
        """A fault rule from keyword arguments, validated against this run's servers; errors start with ``label``."""
        return config_module.rule_from_kwargs(label, self.targets(), **rule)

    def write_journal(self, path: str) -> None:
        """Append every event from now on to ``path`` as JSON Lines, flushed per event."""
        writer = JSONLWriter(path)
        self._writers.append(writer)
        self.journal.add_sink(writer)

    def describe(self) -> list[str]:
        """One line per listener: server, label and address (the control API's too, when it runs)."""
        return [line for child in self if hasattr(child, "describe") for line in child.describe()]

    def listener_records(self) -> list[dict[str, Any]]:
        """Every listener of every server (and of the control API, when it runs) as JSON-ready data: server,
        protocol, label, host, port, url, tls."""
        return [record for child in self if hasattr(child, "listener_records") for record in child.listener_records()]

    def call(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the reactor thread and return its result (directly when already there)."""
        return runtime.call(self.reactor, fn, *args, **kwargs)
