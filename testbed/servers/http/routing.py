"""HTTP request matching: routes and expectations, what each answers, and why a request matched none.

Pure logic over the server's decoded request view: the server asks ``Routing.answer`` for a response and,
when nothing matched, ``Routing.near_miss`` for the 404 text naming the closest candidates.
"""

from __future__ import annotations

import fnmatch
import json as jsonlib
import re
from typing import Any, Callable, Mapping, Sequence

from testbed.servers.http.spec import Route

Response = tuple  # (status, [(name, value) bytes pairs], body bytes)

#: A JSON criterion left out (``None`` is a JSON value a body may equal).
ANY_JSON = object()


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _matcher(pattern: str):
    """A test for one glob: plain equality when it has no wildcard, else a regex compiled once."""
    if not _is_glob(pattern):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).match


def response_of(response: Mapping[str, Any]) -> Response:
    """(status, encoded headers, body bytes) from a route, expectation or fault response table."""
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    if response.get("json") is not None:
        headers.setdefault("Content-Type", "application/json")
        body = jsonlib.dumps(response["json"]).encode("utf-8")
    else:
        body = response.get("body") or b""
        body = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return int(response.get("status", 200)), encoded, body


def describe_request(record) -> str:
    query = record.raw_query
    return f"{record.method} {record.path}" + (f"?{query}" if query else "")


class Handler:
    """What a request must look like (method, path glob, query, headers, JSON, body text), and its hits."""

    kind = "route"

    def __init__(self, method: str, path: str, query: Mapping[str, str] | str | None = None,
                 headers: Mapping[str, str] | None = None, json: Any = ANY_JSON, body_contains: str | bytes = ""):
        self.hits = 0
        self.method = (method or "*").upper()
        self.path_pattern = path
        self.path = _matcher(path)
        self.query_text = query if isinstance(query, str) else None
        self.query = [] if isinstance(query, str) else [(k, str(p), _matcher(str(p))) for k, p in (query or {}).items()]
        self.headers = [(name.lower(), str(p), _matcher(str(p))) for name, p in (headers or {}).items()]
        self.json = json
        body = body_contains.encode() if isinstance(body_contains, str) else bytes(body_contains)
        self.body_contains = body
        self.label = f"{self.kind} {self.method} {path}"

    # -- matching: ``matches`` is the hot path, ``differences`` explains a miss --------------------

    def available(self) -> bool:
        return True

    def matches(self, request) -> bool:
        if self.method != "*" and self.method != request.method:
            return False
        if not self.path(request.path):
            return False
        if self.query_text is not None and request.raw_query != self.query_text:
            return False
        if self.query:
            query = request.query
            if not all(any(match(v) for v in query.get(key, [])) for key, _, match in self.query):
                return False
        if self.headers:
            headers = request.headers
            for name, _, match in self.headers:
                value = headers.get(name)
                if value is None or not match(value):
                    return False
        if self.body_contains and self.body_contains not in request.body:
            return False
        if self.json is not ANY_JSON and _json_of(request.body) != self.json:
            return False
        return self.available()

    def differences(self, request) -> list[str]:
        """What keeps ``request`` from matching, one phrase per criterion (empty: it matches)."""
        out = []
        if self.method != "*" and self.method != request.method:
            out.append(f"method {request.method} is not {self.method}")
        if not self.path(request.path):
            out.append(f"path {request.path!r} does not match {self.path_pattern!r}")
        if self.query_text is not None and request.raw_query != self.query_text:
            out.append(f"query {request.raw_query!r} is not {self.query_text!r}")
        query = request.query
        for key, pattern, match in self.query:
            values = query.get(key)
            if not values:
                out.append(f"query has no {key!r} (wanted {pattern!r})")
            elif not any(match(v) for v in values):
                out.append(f"query {key}={values[0]!r} does not match {pattern!r}")
        headers = request.headers
        for name, pattern, match in self.headers:
            value = headers.get(name)
            if value is None:
                out.append(f"header {name} is missing (wanted {pattern!r})")
            elif not match(value):
                out.append(f"header {name}: {value!r} does not match {pattern!r}")
        if self.body_contains and self.body_contains not in request.body:
            out.append(f"body does not contain {self.body_contains.decode('utf-8', 'replace')!r}")
        if self.json is not ANY_JSON:
            got = _json_of(request.body)
            if got is _NOT_JSON:
                out.append(f"body is not JSON (wanted {_short(self.json)})")
            elif got != self.json:
                out.append(f"JSON body {_short(got)} is not {_short(self.json)}")
        if not out and not self.available():
            out.append(self.used_up())
        return out

    def used_up(self) -> str:
        return "used up"


_NOT_JSON = object()


def _json_of(body: bytes) -> Any:
    try:
        return jsonlib.loads(body)
    except ValueError:
        return _NOT_JSON


def _short(value: Any) -> str:
    text = jsonlib.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class RouteState(Handler):
    """A route (scenario or ``http_server.route``): its canned response or sequence, and ``hits``."""

    def __init__(self, route: Route, label: str | None = None):
        super().__init__(route.method, route.path, route.query, route.match_headers, body_contains=route.body_contains)
        self.route = route
        if label:
            self.label = label
        self.unexpected_when_used_up = route.exhausted == "unexpected" and bool(route.responses)
        self.fixed = None if route.responses else response_of(
            {"status": route.status, "headers": route.headers, "body": route.body, "json": route.json})

    def available(self) -> bool:
        return not self.unexpected_when_used_up or self.hits < len(self.route.responses)

    def exact(self) -> bool:
        """Whether one method and a literal path decide a match, always answered with the same response."""
        return (self.fixed is not None and self.method != "*" and not _is_glob(self.path_pattern)
                and self.query_text is None and not self.query and not self.headers and not self.body_contains
                and self.json is ANY_JSON)

    def used_up(self) -> str:
        n = len(self.route.responses)
        return f"its {n} response(s) are used up (exhausted = 'unexpected')"

    def next_response(self, request=None, decode: Callable | None = None) -> Response:
        self.hits += 1
        if self.fixed is not None:
            return self.fixed
        responses = self.route.responses
        return response_of(responses[min(self.hits, len(responses)) - 1])

    def __repr__(self) -> str:
        return f"<{self.label}: {self.hits} hit(s)>"


class Expectation(Handler):
    """``http_server.expect(...)``: a request the test expects (``times`` of them, or at least one).

    Answer it with ``respond``, ``respond_sequence`` or ``respond_with``; until then it answers 200
    with an empty body. ``verify()`` names every expectation left unmet.
    """

    kind = "expectation"

    def __init__(self, number: int, method: str = "GET", path: str = "*", *, query=None, headers=None,
                 json: Any = ANY_JSON, body_contains: str | bytes = "", times: int | None = None,
                 ordered: bool = False):
        super().__init__(method, path, query, headers, json, body_contains)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"expect(times=...): a whole number from 1, or None for any number; got {times!r}")
        self.number = number
        self.times = times
        self.ordered = ordered
        criteria = [f"query {query!r}"] if query else []
        criteria += [f"headers {dict(headers)!r}"] if headers else []
        criteria += [f"json {_short(json)}"] if json is not ANY_JSON else []
        criteria += [f"body containing {body_contains!r}"] if body_contains else []
        extra = (" with " + ", ".join(criteria)) if criteria else ""
        how = "" if times is None else f" (times={times})"
        self.label = f"expectation #{number} {self.method} {path}{extra}{how}" + (" [ordered]" if ordered else "")
        self._responses: Sequence[Response] = [response_of({"status": 200})]
        self._callable: Callable | None = None

    def respond(self, status: int = 200, json: Any = None, headers: Mapping[str, str] | None = None,
                body: bytes | str = b"") -> "Expectation":
        """Answer with this response (every time)."""
        self._responses, self._callable = [response_of({"status": status, "json": json, "headers": headers,
                                                         "body": body})], None
        return self

    def respond_sequence(self, responses: Sequence[Mapping[str, Any]]) -> "Expectation":
        """Answer the first request with the first table (status, headers, body or json), and so on; the last repeats."""
        if not responses:
            raise ValueError("respond_sequence(): at least one response")
        self._responses, self._callable = [response_of(r) for r in responses], None
        return self

    def respond_with(self, handler: Callable[[Any], Any]) -> "Expectation":
        """Answer with ``handler(request)``: a table (status, headers, body or json), or bytes/str for a 200 body.

        It runs in the reactor thread; an exception in it is a server error (a 500, and the test fails).
        """
        self._callable = handler
        return self

    @property
    def met(self) -> bool:
        return self.hits >= (self.times or 1)

    def available(self) -> bool:
        return self.times is None or self.hits < self.times

    def used_up(self) -> str:
        return f"already answered its {self.times} request(s)"

    def next_response(self, request, decode: Callable) -> Response:
        self.hits += 1
        if self._callable is not None:
            answer = self._callable(decode(request.raw))
            if isinstance(answer, (bytes, str)):
                return response_of({"body": answer})
            return response_of(answer)
        responses = self._responses
        return responses[min(self.hits, len(responses)) - 1]

    def __repr__(self) -> str:
        return f"<{self.label}: {self.hits} hit(s)>"


class Routing:
    """A server's expectations and routes (runtime ones first, newest first; then the scenario's), in that order.

    It keeps what went wrong (requests that matched nothing, out-of-order
    requests) for ``verify``, at most ``limit`` of them.
    """

    def __init__(self, routes: Sequence[Route], decode: Callable, limit: int = 1000):
        self.scenario = [RouteState(r, f"scenario route #{i + 1} {r.method.upper()} {r.path}")
                         for i, r in enumerate(routes)]
        # The scenario's leading run of exact routes (one method, a path without wildcards, no other
        # criterion, a fixed response), by (method, path): answered by one dict lookup. The routes after
        # the run are still tried in order, so a request answers exactly as the loop over all would.
        self._exact: dict[tuple[str, str], RouteState] = {}
        self._after_exact = 0
        for state in self.scenario:
            if not state.exact():
                break
            self._exact.setdefault((state.method, state.path_pattern), state)
            self._after_exact += 1
        self.runtime: list[RouteState] = []
        self.expectations: list[Expectation] = []
        self.problems: list[str] = []
        self.decode = decode
        self.limit = limit

    def reset(self) -> None:
        self.runtime = []
        self.expectations = []
        self.problems = []
        for state in self.scenario:
            state.hits = 0

    def handlers(self) -> list[Handler]:
        return [*self.expectations, *self.runtime[::-1], *self.scenario]

    def answer(self, request) -> tuple[Response | None, str | None]:
        """The response of the first handler that matches, or (None, None); (500, why) for an out-of-order request."""
        if self.expectations:
            for expectation in self.expectations:
                if expectation.matches(request):
                    early = self._unmet_before(expectation)
                    if early is not None:
                        why = (f"{describe_request(request)} matched {expectation.label} out of order: "
                               f"{early.label} is declared before it and is not met yet")
                        self.problem(why)
                        return (500, [(b"Content-Type", b"text/plain; charset=utf-8")], why.encode() + b"\n"), why
                    return expectation.next_response(request, self.decode), None
        for state in self.runtime[::-1] if self.runtime else ():
            if state.matches(request):
                return state.next_response(request, self.decode), None
        exact = self._exact.get((request.method, request.path))
        if exact is not None:
            exact.hits += 1
            return exact.fixed, None
        for state in self.scenario[self._after_exact:]:
            if state.matches(request):
                return state.next_response(request, self.decode), None
        return None, None

    def _unmet_before(self, expectation: Expectation) -> Expectation | None:
        if not expectation.ordered:
            return None
        for earlier in self.expectations:
            if earlier is expectation:
                return None
            if earlier.ordered and not earlier.met:
                return earlier
        return None

    def near_miss(self, request) -> str:
        """Why ``request`` matched nothing: the closest handlers (up to three) and what differed for each."""
        head = f"no route or expectation matches {describe_request(request)}"
        candidates = [(h, h.differences(request)) for h in self.handlers()]
        if not candidates:
            return head + " (none are declared)"
        # Closest first: a matching path beats any number of other differences, then the fewest differences.
        candidates.sort(key=lambda c: (any(d.startswith("path ") for d in c[1]), len(c[1])))
        lines = [head, "closest:"]
        lines += [f"  {h.label}: " + "; ".join(d) for h, d in candidates[:3]]
        return "\n".join(lines)

    def problem(self, text: str) -> None:
        problems = self.problems
        problems.append(text)
        if len(problems) > self.limit:
            del problems[: len(problems) - self.limit]

    def failures(self) -> list[str]:
        """Every unmet expectation and every request that matched none (or came out of order)."""
        out = []
        for e in self.expectations:
            if not e.met:
                wanted = "at least 1" if e.times is None else str(e.times)
                out.append(f"unmet: {e.label}: {e.hits} of {wanted} request(s) arrived")
        out += [f"unexpected: {p}" for p in self.problems]
        return out
