"""The API's routing on twisted.web: a table of (method, path template, handler), guarded and JSON-encoded.

One table serves the requests and writes the OpenAPI document, so the two cannot disagree.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer
from twisted.python import log
from twisted.web import resource, server

from testbed.journal import jsonable

#: Methods that change the testbed: refused from another site's pages.
MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})


class ApiError(Exception):
    """An answer other than 2xx: a status and a reason (and, for a time-out, what arrived)."""

    def __init__(self, status: int, reason: str, **extra: Any):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


@attrs.frozen
class Raw:
    """A non-JSON body (PEM, TOML, JSON Lines, HTML, Prometheus text)."""

    body: bytes
    content_type: str
    status: int = 200
    headers: tuple = ()


@attrs.frozen
class Route:
    method: str
    #: "/faults/{id}": literal segments and {name} captures of one segment ({name*}: the rest of the path).
    template: str
    handler: Callable[..., Any]
    summary: str
    #: Query parameters the handler reads (documented in the OpenAPI document).
    query: tuple[str, ...] = ()
    #: What a success answers with: "json", or a media type.
    produces: str = "application/json"
    #: Answers with journal data (which holds what clients sent): known passwords are taken out.
    scrub: bool = False

    def match(self, segments: list[str]) -> dict[str, str] | None:
        parts = [p for p in self.template.split("/") if p]
        captured = {}
        for i, part in enumerate(parts):
            if part.startswith("{") and part.endswith("*}"):
                captured[part[1:-2]] = "/".join(segments[i:])
                return captured if i < len(segments) else None
            if i >= len(segments):
                return None
            if part.startswith("{"):
                captured[part[1:-1]] = segments[i]
            elif part != segments[i]:
                return None
        return captured if len(parts) == len(segments) else None


class Call:
    """What a handler gets: the request, its path captures, its query and its JSON body."""

    def __init__(self, request: server.Request, params: dict[str, str]):
        self.request = request
        self.params = params
        self.args = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                     for k, vs in request.args.items()}

    def arg(self, name: str, default: Any = None, kind: type = str) -> Any:
        values = self.args.get(name)
        if not values or values[0] == "":
            return default
        try:
            return kind(values[0])
        except ValueError:
            raise ApiError(400, f"query parameter {name}: expected {kind.__name__}, got {values[0]!r}") from None

    def body(self) -> Any:
        raw = self.request.content.read() if self.request.content is not None else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, f"request body: expected JSON ({e})") from None

    def raw_body(self) -> bytes:
        return self.request.content.read() if self.request.content is not None else b""

    def header(self, name: str) -> str | None:
        value = self.request.getHeader(name)
        return value if value is None else str(value)


#: The cookie a browser keeps the token in, once it opened the dashboard as ``/?token=TOKEN``.
COOKIE = b"testbed-token"


class Guard:
    """Who may call: a bearer token when one is set; no cross-site browser request may change anything.

    A browser cannot send the header from the dashboard's EventSource, so opening ``/?token=TOKEN`` stores
    the token in a same-site, script-less cookie that later requests carry instead.
    """

    def __init__(self, token: str = ""):
        self.token = token

    def _is_token(self, given: bytes | str | None) -> bool:
        if isinstance(given, str):
            given = given.encode("utf-8")
        return given is not None and hmac.compare_digest(given, self.token.encode("utf-8"))

    def check(self, request: server.Request) -> None:
        if self.token:
            bearer = request.getHeader("authorization") or ""
            if not (bearer.startswith("Bearer ") and self._is_token(bearer[7:])) \
                    and not self._is_token(request.getCookie(COOKIE)):
                offered = (request.args.get(b"token") or [None])[0]
                if request.path != b"/" or not self._is_token(offered):
                    raise ApiError(401, "this control API needs 'Authorization: Bearer TOKEN' ([control] token); "
                                        "a browser opens /?token=TOKEN once")
                request.addCookie(COOKIE, self.token.encode("utf-8"), path=b"/", httpOnly=True, sameSite="strict")
        if request.method.decode("ascii", "replace") in MUTATING and not same_origin(request):
            raise ApiError(403, "cross-site requests may not change the testbed (Origin or Sec-Fetch-Site "
                                "names another site)")


def same_origin(request: server.Request) -> bool:
    """No Origin (a script, curl) or the API's own origin; a browser page of another site is refused."""
    site = request.getHeader("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.getHeader("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.netloc == (request.getHeader("host") or "") and parts.scheme in ("http", "https")


class Scrubber:
    """Takes every known password (and its AUTH PLAIN/LOGIN encodings) out of an answer's bytes."""

    def __init__(self, secrets: Callable[[], dict[str, str | None]]):
        self._secrets = secrets
        #: The forms of the users and passwords they were last computed from (users change rarely;
        #: every API answer and every SSE batch is scrubbed).
        self._cache: tuple[tuple, list[bytes]] = ((), [])

    def forms(self) -> list[bytes]:
        """Every way a known password shows in journal data, longest first."""
        secrets = tuple(sorted(self._secrets().items(), key=lambda item: item[0]))
        if secrets == self._cache[0]:
            return self._cache[1]
        forms = self._forms(secrets)
        self._cache = (secrets, forms)
        return forms

    @staticmethod
    def _forms(secrets: tuple) -> list[bytes]:
        import base64

        forms = set()
        for user, password in secrets:
            if not password:
                continue
            forms.add(password.encode("utf-8"))
            for blob in (f"\0{user}\0{password}", f"{user}\0{user}\0{password}", password):
                forms.add(base64.b64encode(blob.encode("utf-8")))
        return sorted(forms, key=len, reverse=True)

    def __call__(self, data: bytes) -> bytes:
        for form in self.forms():
            data = data.replace(form, b"[password]")
        return data


def encode(data: Any) -> bytes:
    return json.dumps(jsonable(data), separators=(",", ":")).encode("utf-8")


class Router(resource.Resource):
    """Dispatches every request under its mount point to the first route that matches method and path."""

    isLeaf = True

    def __init__(self, routes: list[Route], guard: Guard, scrub: Callable[[bytes], bytes]):
        super().__init__()
        self.routes = routes
        self.guard = guard
        self.scrub = scrub

    def render(self, request: server.Request):
        route = None
        try:
            self.guard.check(request)
            route, params = self.resolve(request)
            result = route.handler(Call(request, params))
        except ApiError as e:
            return self.fail(request, e, route)
        except Exception:
            log.err(None, "control API handler failed")
            return self.fail(request, ApiError(500, "internal error (see the daemon's log)"))
        if result is server.NOT_DONE_YET:
            return result
        if isinstance(result, defer.Deferred):
            gone = []
            request.notifyFinish().addErrback(gone.append)

            def done(value):
                if not gone:
                    request.write(self.answer(request, value, route))
                    request.finish()

            def failed(failure):
                if not gone:
                    error = failure.value if failure.check(ApiError) else ApiError(500, "internal error")
                    if not failure.check(ApiError):
                        log.err(failure, "control API handler failed")
                    request.write(self.fail(request, error, route))
                    request.finish()

            result.addCallbacks(done, failed)
            return server.NOT_DONE_YET
        return self.answer(request, result, route)

    def resolve(self, request: server.Request) -> tuple[Route, dict[str, str]]:
        segments = [s.decode("utf-8", "replace") for s in request.postpath if s]
        method = request.method.decode("ascii", "replace")
        allowed = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            request.setHeader("allow", ", ".join(sorted(set(allowed))))
            raise ApiError(405, f"{method} is not allowed here (allowed: {', '.join(sorted(set(allowed)))})")
        raise ApiError(404, f"no such endpoint: /{'/'.join(segments)}")

    def _scrubbed(self, body: bytes, route: Route | None) -> bytes:
        return self.scrub(body) if route is not None and route.scrub else body

    def answer(self, request: server.Request, value: Any, route: Route | None = None) -> bytes:
        if isinstance(value, Raw):
            request.setResponseCode(value.status)
            request.setHeader("content-type", value.content_type)
            for name, header in value.headers:
                request.setHeader(name, header)
            return self._scrubbed(value.body, route)
        request.setHeader("content-type", "application/json")
        return self._scrubbed(encode(value), route)

    def fail(self, request: server.Request, error: ApiError, route: Route | None = None) -> bytes:
        request.setResponseCode(error.status)
        request.setHeader("content-type", "application/json")
        return self._scrubbed(encode({"error": error.reason, "status": error.status, **error.extra}), route)
