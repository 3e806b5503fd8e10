"""RemoteTestbed: the in-process testbed's handle (servers, records, faults, reset, wait_for, CA) over the control API.

Only the standard library's HTTP client; no reactor. With a session, it sees and changes only that session's traffic.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from testbed import registry
from testbed.servers.base import WaitTimeout, record_filter


class RemoteError(Exception):
    """The control API answered with an error: its status and reason."""

    def __init__(self, status: int, reason: str, body: Any = None):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.body = status, reason, body


class Record:
    """A record as the API gives it (``to_dict()``): its keys as attributes."""

    def __init__(self, data: dict):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


def _bytes(value: Any) -> bytes:
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    return (value or "").encode("utf-8")


class Message(Record):
    """An accepted or stored mail message: envelope, ``raw`` bytes, the parsed ``message``, ``subject``."""

    @property
    def raw(self) -> bytes:
        return self._data["raw"].encode("utf-8")

    @property
    def message(self):
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class Request(Record):
    """An HTTP request: ``method``, ``path``, ``headers`` (lower-case names), ``body``, ``json()``, ``text``."""

    @property
    def headers(self) -> dict[str, str]:
        return {k: v for k, v in self._data["headers"]}

    @property
    def body(self) -> bytes:
        return _bytes(self._data["body"])

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _Client:
    def __init__(self, url: str, token: str | None, session: str | None):
        self.base = url.rstrip("/") + "/api/v1"
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if session:
            self.headers["X-Testbed-Session"] = session

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None, timeout: float = 30.0,
             accept: tuple[int, ...] = ()) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data is not None else {}))
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                content, kind = response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            content = e.read()
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = {"error": content.decode("utf-8", "replace")}
            if e.code in accept:
                return e.code, parsed
            raise RemoteError(e.code, parsed.get("error", ""), parsed) from None
        result = json.loads(content) if kind.startswith("application/json") else content
        return (200, result) if accept else result


class RemoteFaults:
    """``faults``: add and clear fault rules (the keys of a ``[[faults]]`` entry) over the API."""

    def __init__(self, client: _Client, server: str | None = None):
        self._client = client
        self._server = server

    def add(self, **rule: Any) -> dict:
        if self._server is not None:
            rule.setdefault("server", self._server)
        try:
            return self._client.call("POST", "/faults", rule)
        except RemoteError as e:
            if e.status == 400:
                raise ValueError(e.reason) from None
            raise

    def clear(self) -> None:
        self._client.call("DELETE", "/faults")

    def stats(self) -> list[dict]:
        return self._client.call("GET", "/faults")

    def fired(self) -> list[dict]:
        return [e for e in self._client.call("GET", "/journal", query={"kind": "fault", "server": self._server,
                                                                          "limit": 1000})["events"] if e["fired"]]


class RemoteServer:
    """One server of a remote testbed: ``host``, ``port``, ``url``, its records, ``faults``, ``wait_for``."""

    #: Per protocol: the records it keeps, their view class, and the journal kinds that change them.
    _RECORDS = {"smtp": ("messages", Message), "http": ("requests", Request), "dns": ("queries", Record),
                "ftp": ("uploads", Record)}

    def __init__(self, bed: "RemoteTestbed", name: str, protocol: str, listeners: list[dict]):
        self._bed = bed
        self.name = name
        self.protocol = protocol
        self.listeners = listeners
        self.faults = RemoteFaults(bed._client, name)

    def _listener(self, tls: bool) -> dict | None:
        return next((l for l in self.listeners if l["tls"] == tls), None)

    def _address(self, tls: bool) -> tuple[str, int] | None:
        listener = self._listener(tls)
        if listener is None:
            return None
        netloc = urllib.parse.urlsplit(listener["url"]).netloc
        host, _, port = netloc.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def host(self) -> str:
        return (self._address(False) or self._address(True))[0]

    @property
    def port(self) -> int:
        return (self._address(False) or self._address(True))[1]

    @property
    def tls_port(self) -> int | None:
        address = self._address(True)
        return address[1] if address else None

    @property
    def url(self) -> str:
        return (self._listener(False) or self._listener(True))["url"]

    @property
    def ca_path(self) -> str:
        return self._bed.ca_path

    def _items(self, what: str) -> list:
        view = self._RECORDS.get(self.protocol, (what, Record))[1]
        return [view(item) for item in self._bed._client.call("GET", f"/servers/{self.name}/{what}")]

    @property
    def messages(self) -> list[Message]:
        return self._items("messages")

    @property
    def requests(self) -> list[Request]:
        return self._items("requests")

    @property
    def queries(self) -> list[Record]:
        return self._items("queries")

    @property
    def uploads(self) -> list[Record]:
        return self._items("uploads")

    @property
    def journal(self) -> list[dict]:
        return self._bed._client.call("GET", "/journal", query={"server": self.name, "limit": 1000})["events"]

    def route(self, path: str, **response: Any) -> dict:
        """HTTP: answer ``path`` (a glob) with this response from now on (the keys of a route table)."""
        return self._bed._client.call("POST", f"/servers/{self.name}/routes", {"path": path, **response})

    def add_record(self, name: str, type: str, value: str, ttl: int | None = None) -> None:
        """DNS: serve one more record from now on."""
        self._bed._client.call("POST", f"/servers/{self.name}/records",
                               {"name": name, "type": type, "value": value, "ttl": ttl})

    def wait_for(self, predicate_or_count: Any = 1, *, timeout: float = 5.0, count: int | None = None,
                 **filters: Any):
        """The records once ``count`` (default 1) match ``filters`` (as the in-process ``wait_for``: globs on
        record attributes, SMTP's ``to``/``sender`` for ``rcpt_to``/``mail_from``), or those that also
        satisfy a predicate; each pass blocks on the API's long-poll, never on a sleep."""
        if self.protocol not in self._RECORDS:
            raise TypeError(f"{self.name} ({self.protocol}) keeps no records to wait for")
        what = self._RECORDS[self.protocol][0]
        predicate = predicate_or_count if callable(predicate_or_count) else None
        wanted = 1 if predicate else int(count if count is not None else (predicate_or_count or 1))
        keep = record_filter(filters, registry.protocol(self.protocol).wait_aliases)

        def select(items):
            items = [i for i in items if keep(i)]
            return [i for i in items if predicate(i)] if predicate else items

        deadline = time.monotonic() + timeout
        client = self._bed._client
        while True:
            since = client.call("GET", "/journal", query={"limit": 1})["last_seq"]
            items = self._items(what)
            found = select(items)
            if len(found) >= wanted:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"{self.name}: waited {timeout}s for {wanted} {what}; got {len(items)}: "
                                  + "; ".join(repr(i) for i in items[:10]))
            client.call("GET", "/wait", query={"server": self.name, "kind": "stored,command", "since": since,
                                               "timeout": round(remaining, 3)}, timeout=remaining + 10,
                        accept=(408,))


class RemoteTestbed:
    """A running testbed over its control API: ``bed["smtp"].messages``, ``faults``, ``reset()``, ``ca_path``.

    ``session`` (an id from ``open_session``) limits everything to that session's traffic.
    """

    __test__ = False

    def __init__(self, url: str, token: str | None = None, session: str | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.session = session
        self._client = _Client(self.url, token, session)
        self.faults = RemoteFaults(self._client)
        self._ca_path: str | None = None
        self._servers: dict[str, RemoteServer] | None = None

    def info(self) -> dict:
        return self._client.call("GET", "/info")

    @property
    def servers(self) -> dict[str, RemoteServer]:
        if self._servers is None:
            info = self.info()
            by_server: dict[str, list] = {}
            protocols = {}
            for listener in info["listeners"]:
                by_server.setdefault(listener["server"], []).append(listener)
                protocols[listener["server"]] = listener["protocol"]
            self._servers = {name: RemoteServer(self, name, protocols[name], by_server[name])
                             for name in info["servers"] if name in by_server}
        return self._servers

    def __getitem__(self, name: str) -> RemoteServer:
        try:
            return self.servers[name]
        except KeyError:
            raise KeyError(f"server {name!r} is not running there (running: {', '.join(sorted(self.servers))})") \
                from None

    @property
    def seed(self) -> int:
        return self.info()["seed"]

    def reset(self) -> None:
        """The per-test reset (of this session only, with a session)."""
        self._client.call("POST", "/reset", {})

    def open_session(self) -> "RemoteTestbed":
        """A handle on a new session of the same testbed (its id is ``.session``; its mail tag ``+ID@``)."""
        session = self._client.call("POST", "/sessions", {})["id"]
        return RemoteTestbed(self.url, self.token, session)

    def close(self) -> None:
        """Close this handle's session (resetting it); nothing without one."""
        if self.session:
            _Client(self.url, self.token, None).call("DELETE", f"/sessions/{self.session}")

    @property
    def journal(self) -> list[dict]:
        return self._client.call("GET", "/journal", query={"limit": 1000})["events"]

    @property
    def ca_path(self) -> str:
        """The remote run's CA certificate, downloaded once to a local file."""
        if self._ca_path is None:
            pem = self._client.call("GET", "/ca.pem")
            handle, path = tempfile.mkstemp(prefix="testbed-ca-", suffix=".pem")
            with os.fdopen(handle, "wb") as f:
                f.write(pem)
            self._ca_path = path
        return self._ca_path

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """For code written against the in-process testbed: nothing runs in a reactor here, so just call."""
        return fn(*args, **kwargs)
