"""Sessions: parallel tests sharing one testbed, each seeing only its own connections, records and faults.

A connection belongs to a session by what the client under test controls (nothing is tagged ahead of time;
membership is read off the records when asked, so sessions cost the servers nothing):
- SMTP: a recipient of the form ``user+SESSION@domain`` (the mail store keeps it as its own user);
- HTTP: a request carrying the header ``X-Testbed-Session: SESSION``;
- DNS: a query name with ``SESSION`` as one of its labels (``app.SESSION.example.test``).
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable

import attrs

from testbed.control.router import ApiError, Call

HEADER = "x-testbed-session"


@attrs.define
class Session:
    id: str
    #: Journal seq when it began or was last reset: connections seen only before it are forgotten.
    since: int = 0
    #: Keys of the fault rules it added.
    rules: list = attrs.Factory(list)

    @property
    def mail_tag(self) -> str:
        return f"+{self.id}@"

    def tags_address(self, address: str | None) -> bool:
        return bool(address) and self.mail_tag in address.lower()

    def tags_name(self, name: str | None) -> bool:
        return bool(name) and self.id in name.lower().rstrip(".").split(".")

    def tags_headers(self, headers: Any) -> bool:
        pairs = headers.items() if isinstance(headers, dict) else headers
        return any(k.lower() == HEADER and v == self.id for k, v in pairs)


class Sessions:
    """The open sessions of one testbed, and how each sees the testbed's records."""

    def __init__(self, bed):
        self.bed = bed
        self._open: dict[str, Session] = {}

    # -- life ------------------------------------------------------------------------

    def create(self) -> Session:
        session = Session("s" + secrets.token_hex(5), since=self.bed.journal.last_seq)
        self._open[session.id] = session
        return session

    def of(self, call: Call) -> Session | None:
        """The session a request names (``X-Testbed-Session`` or ``?session=``), None for none; 404 if unknown."""
        wanted = call.header(HEADER) or call.arg("session")
        if wanted is None:
            return None
        try:
            return self._open[wanted]
        except KeyError:
            raise ApiError(404, f"no session {wanted!r} (POST /api/v1/sessions opens one)") from None

    def get(self, key: str) -> Session:
        try:
            return self._open[key]
        except KeyError:
            raise ApiError(404, f"no session {key!r}") from None

    def reset(self, session: Session) -> None:
        """Just this session: its faults, its mail, and what it saw so far."""
        for key in session.rules:
            self.bed.faults.remove(key)
        session.rules = []
        store = self.bed.mail
        for user in [u for u in store.users if session.tags_address(u)]:
            for name in store.list_mailboxes(user):
                box = store.mailbox(user, name)
                box.delete([m.uid for m in box.messages])
        session.since = self.bed.journal.last_seq

    def close(self, session: Session) -> None:
        self.reset(session)
        del self._open[session.id]

    def clear(self) -> None:
        """The whole testbed was reset: every session starts over (their rules went with it)."""
        for session in self._open.values():
            session.rules = []
            session.since = self.bed.journal.last_seq

    # -- what a session sees -------------------------------------------------------------

    def _recent(self, session: Session) -> set[tuple[str, int]]:
        return {(e["server"], e["conn"]) for e in self.bed.journal.query(since=session.since) if e["conn"] is not None}

    def smtp_messages(self, session: Session, server) -> list:
        recent = self._recent(session)
        return [m for m in server.messages if (server.name, m.conn) in recent
                and any(session.tags_address(r) for r in m.rcpt_to)]

    def requests(self, session: Session, server) -> list:
        recent = self._recent(session)
        return [r for r in server.requests if (server.name, r.conn) in recent and session.tags_headers(r.header_items)]

    def queries(self, session: Session, server) -> list:
        recent = self._recent(session)
        return [q for q in server.queries if (server.name, q.conn) in recent and session.tags_name(q.name)]

    def connections(self, session: Session) -> set[tuple[str, int]]:
        """Every recent connection that carried one of the session's tags."""
        recent = self._recent(session)
        tagged = set()
        for name, server in self.bed.servers.items():
            protocol = server.context.protocol
            if protocol == "smtp":
                tagged |= {(name, m.conn) for m in self.smtp_messages(session, server)}
                tagged |= {(e["server"], e["conn"]) for e in self.bed.journal.query(
                    kind="command", server=name, since=session.since) if e.get("command") == "RCPT"
                    and session.tags_address(e.get("arg"))}
            elif protocol == "http":
                tagged |= {(name, r.conn) for r in self.requests(session, server)}
            elif protocol == "dns":
                tagged |= {(name, q.conn) for q in self.queries(session, server)}
        return tagged & recent

    def events(self, session: Session, events: Iterable[dict]) -> list[dict]:
        mine = self.connections(session)
        return [e for e in events if e["seq"] > session.since and (e["server"], e["conn"]) in mine]

    def users(self, session: Session, users: Iterable[str]) -> list[str]:
        return [u for u in users if session.tags_address(u)]

    # -- faults ----------------------------------------------------------------------------

    def scope(self, session: Session, rule: dict) -> dict:
        """``rule`` narrowed to the session's connections, by a match on the attribute that carries its tag."""
        server = self.bed.servers.get(rule.get("server"))
        if server is None:
            return rule  # the rule builder names the unknown server
        protocol = server.context.protocol
        on = rule.get("on")
        match = dict(rule.get("match") or {})
        if protocol == "smtp" and on in ("RCPT", "message", "VRFY"):
            key, pattern = "rcpt", f"*+{session.id}@*"
        elif protocol == "http" and on == "request":
            key, pattern = "headers", {HEADER: session.id}
        elif protocol == "dns" and on == "query":
            key, pattern = "name", [f"{session.id}.*", f"*.{session.id}.*", f"*.{session.id}"]
        else:
            raise ApiError(400, f"a session's fault must be at a stage that carries its tag: SMTP RCPT, message "
                                f"or VRFY; HTTP request; DNS query (got {protocol} {on!r})")
        if key in match:
            raise ApiError(400, f"match.{key}: a session's fault matches on {key} itself; leave it out")
        match[key] = pattern
        return {**rule, "match": match}
