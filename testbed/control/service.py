"""The control listener: a child service of the testbed serving the API, events and probes on twisted.web.

It listens on its own endpoint (loopback by default), never through the fault wrapper the servers sit behind.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer
from twisted.web import server

from testbed.control import api as api_module
from testbed.control import dashboard
from testbed.control import holdings as holdings_module
from testbed.control.openapi import document, page
from testbed.control.router import Guard, Route, Router, Scrubber
from testbed.control.sessions import Sessions
from testbed.control.sse import EventStream
from testbed.servers.base import ListeningService

PREFIX = "/api/v1"


class QuietSite(server.Site):
    def log(self, request):
        """The journal is the record; an access log line per API call would only be noise."""


class ControlService(ListeningService):
    """``/api/v1/...``, ``/livez``, ``/readyz``, ``/metrics`` over one running testbed."""

    name = "control"

    def __init__(self, bed, listen: str, token: str = ""):
        self.bed = bed
        self.listen = listen
        self.port = None
        scrub = Scrubber(lambda: {**bed.scenario.users, **bed.mail.users})
        self.stream = EventStream(bed.journal, bed.reactor, scrub)
        self.sessions = Sessions(bed)
        api = api_module.Api(bed, self, self.stream, self.sessions)
        holdings = holdings_module.Holdings(bed, self.sessions)
        #: The API's routes, relative to /api/v1 (the OpenAPI document lists exactly these).
        self.api_routes: list[Route] = api_module.routes(api) + holdings_module.routes(holdings)
        self.api_routes += [Route("GET", "/openapi.json", lambda call: self.openapi, "This document"),
                            Route("GET", "/docs", lambda call: page(self.openapi), "This document, readable",
                                  produces="text/html")]
        routes = [attrs.evolve(r, template=PREFIX + r.template)
                  for r in self.api_routes] + api_module.root_routes(api) + dashboard.routes()
        self.site = QuietSite(Router(routes, Guard(token), scrub), reactor=bed.reactor)
        self.openapi = document(self.api_routes, api_module._version())

    def start(self) -> defer.Deferred:
        """Listen; fires with the port once bound."""
        from twisted.internet.endpoints import serverFromString

        return serverFromString(self.bed.reactor, self.listen).listen(self.site).addCallbacks(
            self._bound, self._refused)

    def _bound(self, port):
        self.port = port
        return port

    def _refused(self, failure):
        from twisted.internet.error import CannotListenError

        from testbed.servers.base import ListenError

        failure.trap(CannotListenError)
        raise ListenError("control", "listen", self.listen, failure.value)

    def stop(self):
        self.stream.close()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        address = self.port.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"http://{host}:{address.port}"

    def describe(self) -> list[str]:
        return [f"control API and dashboard at {self.url}/"] if self.url else []

    def listener_records(self) -> list[dict]:
        """Its listener as ``--ports-out`` and the daemon's index page list every server's."""
        if self.port is None:
            return []
        address = self.port.getHost()
        return [{"server": "control", "protocol": "http", "label": "control", "host": address.host,
                 "port": address.port, "url": self.url + "/", "tls": False}]
