"""What each server holds, over the API: mail users, mailboxes and messages; HTTP requests and routes;
DNS queries and records; FTP files and uploads. Records come out through their own ``to_dict()``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from testbed.control.router import ApiError, Call, Raw, Route


def _contains(needle: str | None, *haystacks: Any) -> bool:
    if needle is None:
        return True
    needle = needle.lower()
    return any(needle in str(h).lower() for h in haystacks if h is not None)


def _route_name(state) -> str:
    return f"{state.route.method} {state.route.path}"


def _misses(state, request) -> list[str]:
    """What keeps ``state``'s route from answering ``request`` (the route's own ``differences``), by criterion."""
    criteria = {"header": "headers", "JSON": "body"}
    missed = []
    for phrase in state.differences(request):
        criterion = phrase.split(" ", 1)[0]
        criterion = criteria.get(criterion, criterion)
        if criterion not in missed:
            missed.append(criterion)
    return missed


def _route_report(states, request, static: bool) -> dict:
    """The route that answers ``request`` under the routes as they are now, or the nearest miss and why.

    Routes changed since the request arrived are judged as they are now.
    """
    nearest = None
    for state in states:
        missed = _misses(state, request)
        if not missed:
            return {"matched": _route_name(state), "near_miss": None}
        if nearest is None or len(missed) < len(nearest[1]):
            nearest = (state, missed)
    miss = None if nearest is None else {"route": _route_name(nearest[0]), "missed": nearest[1]}
    return {"matched": "static files" if static else None, "near_miss": miss}


class Holdings:
    """Handlers over the servers' records and the shared mail store."""

    def __init__(self, bed, sessions):
        self.bed = bed
        self.sessions = sessions

    def _server(self, call: Call, protocol: str):
        name = call.params["name"]
        server = self.bed.servers.get(name)
        if server is None:
            raise ApiError(404, f"no server {name!r} (running: {', '.join(sorted(self.bed.servers))})")
        if server.context.protocol != protocol:
            raise ApiError(404, f"server {name!r} is {server.context.protocol}, not {protocol}")
        return server

    # -- mail ------------------------------------------------------------------------

    def users(self, call: Call) -> list[dict]:
        store = self.bed.mail
        users = store.users
        session = self.sessions.of(call)
        shown = sorted(users) if session is None else self.sessions.users(session, sorted(users))
        return [{"address": user, "can_login": users[user] is not None, "mailboxes": store.list_mailboxes(user),
                 "messages": len(store.mailbox(user).messages)} for user in shown]

    def add_user(self, call: Call) -> dict:
        body = call.body()
        address = body.get("address") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(address, str) or "@" not in address:
            raise ApiError(400, f"request body: address: expected an address such as alice@example.test, "
                                f"got {address!r}")
        if password is not None and not isinstance(password, str):
            raise ApiError(400, "request body: password: expected a string (or null: cannot log in)")
        try:
            self.bed.mail.add_user(address, password)
        except ValueError as e:
            raise ApiError(400, f"request body: address: {e}") from None
        return {"address": address.lower(), "can_login": password is not None}

    def remove_user(self, call: Call) -> dict:
        try:
            self.bed.mail.remove_user(call.params["user"])
        except (KeyError, ValueError):
            raise ApiError(404, f"no user {call.params['user']!r}") from None
        return {"removed": call.params["user"].lower()}

    def _mailbox(self, call: Call):
        try:
            return self.bed.mail.mailbox(call.params["user"], call.arg("mailbox", "INBOX"))
        except KeyError:
            raise ApiError(404, f"no mailbox {call.arg('mailbox', 'INBOX')!r} of user {call.params['user']!r}") from None

    def mailboxes(self, call: Call) -> list[dict]:
        store = self.bed.mail
        try:
            names = store.list_mailboxes(call.params["user"])
        except KeyError:
            raise ApiError(404, f"no user {call.params['user']!r}") from None
        return [{"name": n, "messages": len(store.mailbox(call.params["user"], n).messages)} for n in names]

    def _search(self, call: Call) -> list:
        found = []
        for m in self._mailbox(call).messages:
            message = m.message
            if not (_contains(call.arg("from"), message.get("from")) and _contains(call.arg("to"), message.get("to"),
                                                                                    message.get("cc"))
                    and _contains(call.arg("subject"), message.get("subject"))
                    and _contains(call.arg("text"), m.raw.decode("utf-8", "replace"))):
                continue
            found.append(m)
        return found

    @staticmethod
    def _summary(m) -> dict:
        full = m.to_dict()
        for key in ("raw", "headers", "html"):
            full.pop(key, None)
        return full

    def messages(self, call: Call) -> list[dict]:
        return [self._summary(m) for m in self._search(call)]

    def delete_messages(self, call: Call) -> dict:
        doomed = [m.uid for m in self._search(call)]
        self._mailbox(call).delete(doomed)
        return {"deleted": doomed}

    def _message(self, call: Call):
        mailbox = self._mailbox(call)
        uid = call.params["uid"]
        if uid == "latest":
            if not mailbox.messages:
                raise ApiError(404, f"the mailbox of {call.params['user']!r} is empty")
            return mailbox.messages[-1]
        try:
            message = mailbox.get(int(uid))
        except ValueError:
            raise ApiError(400, f"message: expected a uid or 'latest', got {uid!r}") from None
        if message is None:
            raise ApiError(404, f"no message {uid} in the mailbox of {call.params['user']!r}")
        return message

    def message(self, call: Call) -> dict:
        return self._message(call).to_dict()

    def raw(self, call: Call) -> Raw:
        return Raw(self._message(call).raw, "message/rfc822")

    def part(self, call: Call) -> Raw:
        message = self._message(call)
        try:
            index = int(call.params["part"])
            part = list(message.message.walk())[index]
        except (ValueError, IndexError):
            raise ApiError(404, f"no part {call.params['part']!r} (see the message's attachments)") from None
        if part.is_multipart():
            raise ApiError(404, f"part {index} is a multipart container, not content")
        return Raw(part.get_payload(decode=True) or b"", part.get_content_type())

    def delete_message(self, call: Call) -> dict:
        message = self._message(call)
        self._mailbox(call).delete([message.uid])
        return {"deleted": [message.uid]}

    # -- SMTP ------------------------------------------------------------------------

    def smtp_messages(self, call: Call) -> list[dict]:
        server = self._server(call, "smtp")
        session = self.sessions.of(call)
        messages = server.messages if session is None else self.sessions.smtp_messages(session, server)
        return [m.to_dict() for m in messages]

    # -- HTTP ------------------------------------------------------------------------

    def requests(self, call: Call) -> list[dict]:
        server = self._server(call, "http")
        session = self.sessions.of(call)
        requests = server.requests if session is None else self.sessions.requests(session, server)
        states = server.route_states
        return [dict(r.to_dict(), **_route_report(states, r, server.static_root is not None)) for r in requests]

    def routes(self, call: Call) -> list[dict]:
        import attrs

        server = self._server(call, "http")
        states = server.route_states
        added = len(states) - len(server.config.routes)
        return [dict(attrs.asdict(s.route), hits=s.hits, runtime=i < added) for i, s in enumerate(states)]

    def add_route(self, call: Call) -> dict:
        import attrs

        from testbed.schema import Checker, ScenarioError
        from testbed.servers.http.spec import Route as HTTPRoute

        server = self._server(call, "http")
        try:
            route = Checker("request body").structure("route", HTTPRoute, call.body())
        except ScenarioError as e:
            raise ApiError(400, str(e), key=e.path, expected=e.expected) from None
        server.route(**attrs.asdict(route))
        return attrs.asdict(route)

    def clear_routes(self, call: Call) -> dict:
        return {"removed": self._server(call, "http").clear_routes()}

    # -- DNS -------------------------------------------------------------------------

    def queries(self, call: Call) -> list[dict]:
        server = self._server(call, "dns")
        session = self.sessions.of(call)
        queries = server.queries if session is None else self.sessions.queries(session, server)
        return [q.to_dict() for q in queries]

    def records(self, call: Call) -> dict:
        from twisted.names import dns

        zones = self._server(call, "dns").zones
        out = {}
        for name in zones.zones():
            zone = zones.zone(name)
            out[name] = [{"name": owner.decode("ascii", "replace") if isinstance(owner, bytes) else str(owner),
                          "type": dns.QUERY_TYPES.get(rr.TYPE, str(rr.TYPE)), "ttl": rr.ttl, "value": str(rr)}
                         for owner, rrs in sorted(zone.records.items()) for rr in rrs]
        return out

    def add_record(self, call: Call) -> dict:
        server = self._server(call, "dns")
        body = call.body()
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("name", "type", "value")):
            raise ApiError(400, "request body: expected {\"name\": ..., \"type\": ..., \"value\": ..., \"ttl\": N}")
        try:
            server.add_record(body["name"], body["type"], body["value"], body.get("ttl"))
        except ValueError as e:
            raise ApiError(400, f"request body: {e}") from None
        return {"added": body}

    def remove_records(self, call: Call) -> dict:
        server = self._server(call, "dns")
        name = call.arg("name")
        if name is None:
            raise ApiError(400, "query parameter name: expected the owner name whose records go")
        return {"removed": server.remove_record(name, call.arg("type"), call.arg("value"))}

    # -- FTP -------------------------------------------------------------------------

    def files(self, call: Call) -> dict:
        return self._server(call, "ftp").files

    def _segments(self, call: Call) -> list[str]:
        from testbed.servers.ftp.fs import check_segment

        segments = [s for s in call.params["path"].split("/") if s]
        for segment in segments:
            reason = check_segment(segment)
            if reason is not None:
                raise ApiError(400, f"path {call.params['path']!r}: {reason}")
        if not segments:
            raise ApiError(400, "path: expected a file's path under the FTP root")
        return segments

    def read_file(self, call: Call) -> Raw:
        server = self._server(call, "ftp")
        segments = self._segments(call)
        try:
            return Raw(server.read("/".join(segments)), "application/octet-stream")
        except (KeyError, OSError):
            raise ApiError(404, f"no file {'/'.join(segments)!r}") from None

    @defer.inlineCallbacks
    def write_file(self, call: Call):
        server = self._server(call, "ftp")
        segments = self._segments(call)
        data = call.raw_body()
        shell = server.shell
        for i in range(1, len(segments)):
            try:
                yield shell.makeDirectory(segments[:i])
            except Exception:  # it exists already (or is a file: openForWriting says so below)
                pass
        try:
            writer = yield shell.openForWriting(segments)
            consumer = yield writer.receive()
            consumer.write(data)
            yield writer.close()
        except Exception as e:
            raise ApiError(400, f"cannot write {'/'.join(segments)!r}: {e}") from None
        return {"path": "/".join(segments), "size": len(data)}

    @defer.inlineCallbacks
    def delete_file(self, call: Call):
        server = self._server(call, "ftp")
        segments = self._segments(call)
        try:
            yield server.shell.removeFile(segments)
        except Exception as e:
            raise ApiError(404, f"cannot delete {'/'.join(segments)!r}: {e}") from None
        return {"deleted": "/".join(segments)}

    def uploads(self, call: Call) -> list[dict]:
        return [u.to_dict() for u in self._server(call, "ftp").uploads]


def routes(h: Holdings) -> list[Route]:
    user = "/mail/users/{user}"
    one = user + "/messages/{uid}"
    search = ("mailbox", "from", "to", "subject", "text")
    return [
        Route("GET", "/mail/users", h.users, "Mail users (never their passwords)"),
        Route("POST", "/mail/users", h.add_user, "Add a user (address, password; null: cannot log in)"),
        Route("DELETE", user, h.remove_user, "Remove a user with its mailboxes (scenario users return at reset)"),
        Route("GET", user + "/mailboxes", h.mailboxes, "A user's mailboxes"),
        Route("GET", user + "/messages", h.messages, "A user's messages, searched by from/to/subject/text",
              query=search),
        Route("DELETE", user + "/messages", h.delete_messages, "Delete the messages a search finds (all without one)",
              query=search),
        Route("GET", one, h.message, "One message ('latest' or a uid): headers, text, HTML, attachments, raw",
              query=("mailbox",)),
        Route("DELETE", one, h.delete_message, "Delete one message", query=("mailbox",)),
        Route("GET", one + "/raw", h.raw, "One message's raw source", query=("mailbox",), produces="message/rfc822"),
        Route("GET", one + "/parts/{part}", h.part, "One MIME part's decoded content (attachments by part)",
              query=("mailbox",), produces="application/octet-stream"),
        Route("GET", "/servers/{name}/messages", h.smtp_messages, "Messages an SMTP server accepted"),
        Route("GET", "/servers/{name}/requests", h.requests, "Requests an HTTP server received"),
        Route("GET", "/servers/{name}/routes", h.routes, "An HTTP server's routes with their hits"),
        Route("POST", "/servers/{name}/routes", h.add_route, "Add an HTTP route (the keys of [[servers.http.routes]])"),
        Route("DELETE", "/servers/{name}/routes", h.clear_routes, "Remove the routes added at runtime"),
        Route("GET", "/servers/{name}/queries", h.queries, "Queries a DNS server answered"),
        Route("GET", "/servers/{name}/records", h.records, "Records a DNS server serves, by zone"),
        Route("POST", "/servers/{name}/records", h.add_record, "Serve one more DNS record"),
        Route("DELETE", "/servers/{name}/records", h.remove_records, "Stop serving records of a name",
              query=("name", "type", "value")),
        Route("GET", "/servers/{name}/files", h.files, "Every file an FTP server serves, with its size"),
        Route("GET", "/servers/{name}/files/{path*}", h.read_file, "One FTP file's content",
              produces="application/octet-stream"),
        Route("PUT", "/servers/{name}/files/{path*}", h.write_file, "Write one FTP file (the body is its content)"),
        Route("DELETE", "/servers/{name}/files/{path*}", h.delete_file, "Delete one FTP file"),
        Route("GET", "/servers/{name}/uploads", h.uploads, "Uploads an FTP server completed"),
    ]
