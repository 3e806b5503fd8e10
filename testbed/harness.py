"""The testbed: builds every enabled server of a scenario on one reactor, and is the handle tests hold.

It owns the run's journal, fault engine, TLS material and mail store; server
modules are imported only when their server is enabled, since some of
Twisted's protocol modules install a reactor at import.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from twisted.internet import defer

from testbed import config as config_module
from testbed.config import Scenario
from testbed.faults.engine import FaultEngine
from testbed.journal import JSONLWriter, Journal
from testbed.servers.base import REACTOR_THREAD, Server, in_reactor_thread
from testbed.tls import CertificateAuthority, ServerTLS

#: Server name -> module implementing it (each has a ``SERVER`` class).
SERVER_MODULES = {
    "http": "testbed.servers.http.server",
    "smtp": "testbed.servers.smtp.server",
    "pop3": "testbed.servers.pop3.server",
    "imap": "testbed.servers.imap.server",
    "ftp": "testbed.servers.ftp.server",
    "dns": "testbed.servers.dns.server",
    "echo": "testbed.servers.echo.server",
}


class Testbed:
    """Every server of one scenario, with its journal, faults, TLS and mail store."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, scenario: Scenario | Mapping | str | None = None, reactor=None, seed: int | None = None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.scenario = config_module.coerce(scenario)
        self.seed = self.scenario.seed if seed is None else seed
        self.journal = Journal(payload_cap=self.scenario.journal.payload_cap,
                               max_events=self.scenario.journal.max_events)
        self.faults = FaultEngine(self.seed, self.journal, self.scenario.faults)
        tls = self.scenario.tls
        ca = CertificateAuthority.load(self.scenario.path(tls.ca_cert), self.scenario.path(tls.ca_key)) if tls.ca_cert else None
        self.tls = ServerTLS(ca, tls.hostnames)
        self.servers: dict[str, Server] = {}
        self._mail = None
        self._writers: list[JSONLWriter] = []

    # -- life ----------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        """Start every enabled server; fires with the testbed once all listen."""
        try:
            for name, server_config in self.scenario.servers.enabled():
                module = importlib.import_module(SERVER_MODULES[name])
                server = module.SERVER(self, name, server_config)
                self.servers[name] = server
                yield server.start()
        except BaseException:
            yield self.stop()
            raise
        return self

    @defer.inlineCallbacks
    def stop(self):
        for server in list(self.servers.values()):
            yield server.stop()
        for writer in self._writers:
            writer.close()
        self._writers = []

    def reset(self) -> None:
        """Between tests: journal, runtime faults, counters and every server's state back to the start."""
        self.call(self._reset)

    def _reset(self) -> None:
        for server in self.servers.values():
            server.reset()
        if self._mail is not None:
            self._mail.reset()
        self.faults.reset()
        self.journal.clear()

    # -- what tests and the daemon use ------------------------------------------

    @property
    def mail(self):
        """The mail store shared by SMTP, POP3 and IMAP."""
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
        try:
            return self.servers[name]
        except KeyError:
            enabled = ", ".join(sorted(self.servers)) or "none"
            raise KeyError(f"server {name!r} is not running in this scenario (running: {enabled})") from None

    def write_journal(self, path: str) -> None:
        """Append every event from now on to ``path`` as JSON Lines, flushed per event."""
        writer = JSONLWriter(path)
        self._writers.append(writer)
        self.journal.add_sink(writer)

    def describe(self) -> list[str]:
        """One line per listener: server, label and address."""
        return [line for server in self.servers.values() for line in server.describe()]

    def call(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the reactor thread and return its result (directly when already there)."""
        if in_reactor_thread() or not self.reactor.running:
            return fn(*args, **kwargs)
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, fn, *args, **kwargs)


def set_reactor_thread(ident: int | None) -> None:
    """Declare which thread runs the reactor (the pytest face runs it in a background thread)."""
    REACTOR_THREAD[0] = ident
