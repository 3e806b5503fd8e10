"""The testbed-wide endpoints: info, scenario, reset, seed, CA, faults, catalog, journal, connections, events, wait.

Each handler runs in the reactor thread and reads the testbed directly; ``routes(api)`` lists them for the router.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer

from testbed import registry
from testbed.control.router import ApiError, Call, Raw, Route
from testbed.control.sessions import Sessions
from testbed.control.sse import EventStream, Filter
from testbed.faults.engine import glob_matches
from testbed.journal import CLOSE, FAULT, OPEN, STORED, to_json
from testbed.schema import ScenarioError

#: The longest a long-poll may wait, in seconds.
MAX_WAIT = 300.0
#: The most journal events one page gives.
MAX_PAGE = 1000
#: ``wait`` parameters that name an event's field by another name.
_ALIASES = {"to": "rcpt", "from": "mail_from"}
#: ``wait`` parameters that are not event fields.
_WAIT_KEYS = {"kind", "server", "conn", "count", "timeout", "since", "session"}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("twisted-testbed")
    except metadata.PackageNotFoundError:
        return "unknown"


class Api:
    """The testbed-wide handlers over one running testbed."""

    def __init__(self, bed, control, stream: EventStream, sessions: Sessions):
        self.bed = bed
        self.control = control
        self.stream = stream
        self.sessions = sessions

    # -- the run ----------------------------------------------------------------

    def info(self, call: Call) -> dict:
        bed = self.bed
        listeners = [{"server": name, "protocol": server.context.protocol, "label": l.label, "url": l.url(),
                      "tls": l.tls} for name, server in bed.servers.items() for l in server.listeners]
        return {"version": _version(), "seed": bed.seed, "scenario": bed.scenario.source,
                "control": self.control.url, "listeners": listeners, "servers": sorted(bed.servers)}

    def scenario(self, call: Call) -> Any:
        from testbed.control.scenario import scenario_data, to_toml

        data = scenario_data(self.bed)
        fmt = call.arg("format", "json")
        if fmt == "toml":
            return Raw(to_toml(data).encode("utf-8"), "application/toml; charset=utf-8")
        if fmt != "json":
            raise ApiError(400, f"query parameter format: expected 'json' or 'toml', got {fmt!r}")
        return data

    def reset(self, call: Call) -> dict:
        session = self.sessions.of(call)
        if session is not None:
            self.sessions.reset(session)
        else:
            self.bed.reset()
            self.sessions.clear()
        return {"reset": True, "session": session.id if session else None}

    # -- sessions -----------------------------------------------------------------

    def open_session(self, call: Call) -> dict:
        session = self.sessions.create()
        return {"id": session.id, "header": "X-Testbed-Session", "mail_tag": session.mail_tag,
                "dns_label": session.id}

    def list_sessions(self, call: Call) -> list[dict]:
        return [{"id": s.id, "rules": list(s.rules)} for s in self.sessions._open.values()]

    def close_session(self, call: Call) -> dict:
        self.sessions.close(self.sessions.get(call.params["id"]))
        return {"closed": call.params["id"]}

    def seed(self, call: Call) -> dict:
        body = call.body()
        seed = body.get("seed") if isinstance(body, dict) else None
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ApiError(400, f"request body: seed: expected an integer, got {seed!r}")
        self.bed.seed = self.bed.faults.seed = seed
        return {"seed": seed}

    def ca(self, call: Call) -> Raw:
        with open(self.bed.ca_path, "rb") as f:
            return Raw(f.read(), "application/x-pem-file")

    def catalog(self, call: Call) -> dict:
        """Per running server: its protocol's stages, match attributes and actions (from the registry)."""
        specs = registry.catalog()
        return {"protocols": specs,
                "servers": {name: server.context.protocol for name, server in self.bed.servers.items()},
                "rule_keys": ["server", "on", "action", "match", "after", "times", "probability", "connection",
                              "direction", "name"]}

    # -- faults -------------------------------------------------------------------

    def faults(self, call: Call) -> list[dict]:
        session = self.sessions.of(call)
        stats = self.bed.faults.stats()
        return stats if session is None else [s for s in stats if s["key"] in session.rules]

    def add_fault(self, call: Call) -> dict:
        body = call.body()
        if not isinstance(body, dict):
            raise ApiError(400, "request body: expected a JSON object with the keys of a [[faults]] entry")
        session = self.sessions.of(call)
        if session is not None:
            body = self.sessions.scope(session, body)
        try:
            rule = self.bed.faults.add(**body)
        except ScenarioError as e:
            raise ApiError(400, str(e), key=e.path, expected=e.expected) from None
        except TypeError as e:
            raise ApiError(400, f"request body: {e}") from None
        key = self.bed.faults.key_of(rule)
        if session is not None:
            session.rules.append(key)
        return {"id": key, "rule": rule.to_dict()}

    def clear_faults(self, call: Call) -> dict:
        session = self.sessions.of(call)
        if session is None:
            self.bed.faults.clear()
        else:
            for key in session.rules:
                self.bed.faults.remove(key)
            session.rules = []
        return {"cleared": True}

    def remove_fault(self, call: Call) -> dict:
        key = call.params["id"]
        if not self.bed.faults.remove(key):
            raise ApiError(404, f"no runtime fault rule {key!r} (scenario rules cannot be removed)")
        return {"removed": key}

    def fault_stats(self, call: Call) -> dict:
        stats = self.faults(call)
        return {"rules": stats, "fired": sum(s["fired"] for s in stats),
                "matched": sum(s["matches"] for s in stats)}

    # -- the journal -----------------------------------------------------------------

    def _query(self, call: Call, kinds=None, server=None, conn=None) -> list[dict]:
        kind = call.arg("kind")
        if kind is not None:
            kinds = set(kind.split(","))
        events = self.bed.journal.query(kind=kinds, server=call.arg("server", server),
                                        conn=call.arg("conn", conn, int), since=call.arg("since", 0, int))
        session = self.sessions.of(call)
        return events if session is None else self.sessions.events(session, events)

    def journal(self, call: Call) -> dict:
        limit = min(call.arg("limit", 100, int), MAX_PAGE)
        if limit < 1:
            raise ApiError(400, f"query parameter limit: expected 1 to {MAX_PAGE}, got {limit}")
        events = self._query(call)
        page = events[:limit]
        return {"events": page, "next": page[-1]["seq"] if len(events) > limit else None,
                "last_seq": self.bed.journal.last_seq}

    def journal_jsonl(self, call: Call) -> Raw:
        return Raw("".join(to_json(e) + "\n" for e in self._query(call)).encode("utf-8"),
                   "application/x-ndjson")

    def connections(self, call: Call) -> list[dict]:
        rows: dict[tuple, dict] = {}
        for e in self._query(call, kinds={OPEN, CLOSE, FAULT}):
            if e["conn"] is None:
                continue
            key = (e["server"], e["conn"])
            if e["kind"] == OPEN:
                rows[key] = {"server": e["server"], "conn": e["conn"], "peer": e.get("peer"), "opened": e["t"],
                             "closed": None, "bytes_up": None, "bytes_down": None, "faults": 0}
                continue
            row = rows.setdefault(key, {"server": e["server"], "conn": e["conn"], "peer": None, "opened": None,
                                        "closed": None, "bytes_up": None, "bytes_down": None, "faults": 0})
            if e["kind"] == CLOSE:
                row.update(closed=e["t"], bytes_up=e.get("bytes_up"), bytes_down=e.get("bytes_down"))
            elif e.get("fired"):
                row["faults"] += 1
        return list(rows.values())

    def connection(self, call: Call) -> dict:
        server = call.params["server"]
        try:
            conn = int(call.params["conn"])
        except ValueError:
            raise ApiError(400, f"connection number: expected an integer, got {call.params['conn']!r}") from None
        events = self._query(call, server=server, conn=conn)
        if not events:
            raise ApiError(404, f"no journal events for connection {conn} of {server!r}")
        return {"server": server, "conn": conn, "events": events}

    def events(self, call: Call) -> Any:
        since = call.header("last-event-id") or call.arg("since", 0)
        try:
            since = int(since)
        except ValueError:
            raise ApiError(400, f"Last-Event-ID/since: expected an event's seq, got {since!r}") from None
        kind = call.arg("kind")
        session = self.sessions.of(call)
        mine = None if session is None else (lambda e: bool(self.sessions.events(session, [e])))
        wanted = Filter(set(kind.split(",")) if kind else None, call.arg("server"), call.arg("conn", None, int), mine)
        return self.stream.subscribe(call.request, wanted, since)

    # -- waiting ------------------------------------------------------------------------

    def wait(self, call: Call) -> defer.Deferred:
        """Answers once ``count`` events match; 408 with what did match kind and server on time-out."""
        count = call.arg("count", 1, int)
        timeout = min(call.arg("timeout", 10.0, float), MAX_WAIT)
        kind, server, since = call.arg("kind", STORED), call.arg("server"), call.arg("since", 0, int)
        conn = call.arg("conn", None, int)
        fields = {_ALIASES.get(k, k): v[0] for k, v in call.args.items() if k not in _WAIT_KEYS and v}
        journal, reactor = self.bed.journal, self.bed.reactor
        kinds = set(kind.split(","))
        session = self.sessions.of(call)

        def candidates():
            events = journal.query(kind=kinds, server=server, conn=conn, since=since)
            return events if session is None else self.sessions.events(session, events)

        def found():
            return [e for e in candidates() if all(glob_matches(p, e.get(k)) for k, p in fields.items())]

        d = defer.Deferred()
        started = time.monotonic()

        def check(event=None):
            if d.called:
                return
            if event is not None and (event["kind"] not in kinds or (server and event["server"] != server)):
                return
            matching = found()
            if len(matching) >= count:
                finish()
                d.callback({"events": matching, "waited": round(time.monotonic() - started, 3)})

        def expire():
            if not d.called:
                journal.remove_sink(check)
                seen = candidates()
                d.errback(ApiError(408, f"waited {timeout:g}s for {count} {kind} event(s) matching {fields or 'anything'}"
                                        f"; {len(found())} matched", events=seen[-50:]))

        def finish():
            journal.remove_sink(check)
            if timer.active():
                timer.cancel()

        timer = reactor.callLater(timeout, expire)
        journal.add_sink(check)
        # A client that hangs up stops the wait; the router answers no one.
        call.request.notifyFinish().addBoth(lambda _: None if d.called else finish())
        check()
        return d

    # -- health -----------------------------------------------------------------------------

    def metrics(self, call: Call) -> Raw:
        counts: dict[str, dict[str, int]] = {}
        for e in self.bed.journal.events:
            name = e["server"] or "-"
            row = counts.setdefault(name, {"connections": 0, "events": 0, "faults": 0, "stored": 0})
            row["events"] += 1
            kind = e["kind"]
            if kind == OPEN:
                row["connections"] += 1
            elif kind == FAULT and e.get("fired"):
                row["faults"] += 1
            elif kind == STORED:
                row["stored"] += 1
        lines = []
        for metric, key, help_ in (("testbed_connections_total", "connections", "Connections accepted"),
                                   ("testbed_events_total", "events", "Journal events recorded"),
                                   ("testbed_faults_fired_total", "faults", "Fault decisions that fired"),
                                   ("testbed_stored_total", "stored", "Items stored (messages, uploads...)")):
            lines += [f"# HELP {metric} {help_} since the last reset.", f"# TYPE {metric} counter"]
            lines += [f'{metric}{{server="{name}"}} {row[key]}' for name, row in sorted(counts.items())]
        messages = len(self.bed.mail.all_messages())
        lines += ["# HELP testbed_messages_stored Messages delivered to the mail store since the last reset.",
                  "# TYPE testbed_messages_stored gauge", f"testbed_messages_stored {messages}",
                  "# HELP testbed_sse_subscribers Connected event-stream clients.",
                  "# TYPE testbed_sse_subscribers gauge", f"testbed_sse_subscribers {self.stream.subscribers}"]
        return Raw(("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")

    def livez(self, call: Call) -> dict:
        return {"live": True}

    def readyz(self, call: Call) -> Any:
        waiting = [name for name, s in self.bed.servers.items() if s.started is None or not s.started.called]
        if waiting:
            raise ApiError(503, "not every server listens yet", waiting=waiting)
        return {"ready": True}


def routes(api: Api) -> list[Route]:
    return [
        Route("GET", "/info", api.info, "Version, seed, scenario source and every listener"),
        Route("GET", "/scenario", api.scenario, "The running scenario (runtime changes included), JSON or TOML",
              query=("format",)),
        Route("POST", "/reset", api.reset, "The per-test reset: journal, runtime faults, counters, stored items"),
        Route("POST", "/sessions", api.open_session, "Open a session: its id and the tags that mark its traffic"),
        Route("GET", "/sessions", api.list_sessions, "The open sessions"),
        Route("DELETE", "/sessions/{id}", api.close_session, "Reset one session and close it"),
        Route("PUT", "/seed", api.seed, "Set the seed of every fault decision from now on"),
        Route("GET", "/ca.pem", api.ca, "The run's CA certificate, for clients to trust",
              produces="application/x-pem-file"),
        Route("GET", "/catalog", api.catalog, "Every protocol's stages, match attributes and actions"),
        Route("GET", "/faults", api.faults, "Every fault rule with its counters"),
        Route("POST", "/faults", api.add_fault, "Add a fault rule (the keys of a [[faults]] entry)"),
        Route("DELETE", "/faults", api.clear_faults, "Remove every runtime fault rule"),
        Route("GET", "/faults/stats", api.fault_stats, "Rules with how often they matched and fired"),
        Route("DELETE", "/faults/{id}", api.remove_fault, "Remove one runtime fault rule"),
        Route("GET", "/journal", api.journal, "Journal events, paged by seq",
              query=("kind", "server", "conn", "since", "limit"), scrub=True),
        Route("GET", "/journal.jsonl", api.journal_jsonl, "Journal events as JSON Lines",
              query=("kind", "server", "conn", "since"), produces="application/x-ndjson", scrub=True),
        Route("GET", "/connections", api.connections, "One row per connection", query=("server",)),
        Route("GET", "/connections/{server}/{conn}", api.connection,
              "One connection's bytes, commands, replies and fault decisions, in order", scrub=True),
        Route("GET", "/events", api.events, "Server-Sent Events of journal events (Last-Event-ID or since resumes)",
              query=("kind", "server", "conn", "since"), produces="text/event-stream"),
        Route("GET", "/wait", api.wait, "Long-poll until count events match; 408 with what arrived on time-out",
              query=("kind", "server", "conn", "count", "timeout", "since", "to", "from"), scrub=True),
    ]


def root_routes(api: Api) -> list[Route]:
    """Outside /api/v1: what probes and scrapers expect at the top."""
    return [
        Route("GET", "/livez", api.livez, "The control listener answers"),
        Route("GET", "/readyz", api.readyz, "Every server listens (503 until then)"),
        Route("GET", "/metrics", api.metrics, "Prometheus counters per server", produces="text/plain"),
    ]
