"""Client-behaviour checks: small pure functions over journal events (dicts, as Journal.query/export give them).

Each returns a ``Verdict`` that is truthy when the client behaved, so it works
in a pytest ``assert`` and as an experiment's ``[[checks]]`` oracle alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping

import attrs

#: Commands that end a session politely (SMTP, POP3, FTP QUIT; IMAP LOGOUT).
QUIT_COMMANDS = frozenset({"QUIT", "LOGOUT"})
#: Commands that send credentials, and those that start TLS on a plain connection.
AUTH_COMMANDS = frozenset({"AUTH", "LOGIN", "USER", "PASS", "APOP", "AUTHENTICATE"})
STARTTLS_COMMANDS = frozenset({"STARTTLS", "STLS"})
#: A fault stage and the command that repeats it (the message stage is retried with a new DATA).
_STAGE_COMMAND = {"message": "DATA"}
#: Wire actions that end a connection from the server's side.
_CUTTING = frozenset({"refuse", "reset", "close", "stall", "truncate"})


@attrs.frozen
class Verdict:
    """A check's outcome: ``ok`` and a sentence saying why, truthy when ok."""

    name: str
    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


#: Every check by name, for plans (``[[checks]] check = "sent_quit"``).
CHECKS: dict[str, Callable[..., Verdict]] = {}


def check(fn: Callable[..., tuple[bool, str]]) -> Callable[..., Verdict]:
    """Register ``fn`` (returning ok and why) as a check returning a Verdict."""

    @functools.wraps(fn)
    def wrapper(events: Iterable[Mapping[str, Any]], *args: Any, **kwargs: Any) -> Verdict:
        ok, detail = fn(list(events), *args, **kwargs)
        return Verdict(fn.__name__, bool(ok), detail)

    CHECKS[fn.__name__] = wrapper
    return wrapper


def _of(events: list, server: str | None, kind: str | None = None) -> list:
    return [e for e in events if (server is None or e.get("server") == server) and (kind is None or e.get("kind") == kind)]


def _command(event: Mapping) -> str:
    return str(event.get("command", "")).upper()


def _code_matches(code: Any, wanted: Any) -> bool:
    """``wanted`` is a code (451), a class as text ("4" or "4xx"), or a list of either."""
    if isinstance(wanted, (list, tuple)):
        return any(_code_matches(code, w) for w in wanted)
    if code is None:
        return False
    text = str(wanted).rstrip("x")
    return str(code) == str(wanted) or (len(text) < 3 and str(code).startswith(text))


def _cut_connections(events: list) -> set:
    """(server, conn) pairs the server ended itself: a cutting wire fault, a reply that closes, a 421 or BYE."""
    cut = set()
    for e in events:
        key = (e.get("server"), e.get("conn"))
        if e.get("kind") == "fault" and e.get("fired"):
            detail = e.get("detail") or {}
            if e.get("action") in _CUTTING or e.get("action") == "silence" or detail.get("then", "none") != "none":
                cut.add(key)
        elif e.get("kind") == "reply" and (e.get("code") == 421 or e.get("silenced") or e.get("status") == "BYE"):
            cut.add(key)
    return cut


def _stored_key(event: Mapping) -> tuple:
    rcpt = event.get("rcpt")
    return (event.get("server"), event.get("mail_from"), tuple(rcpt) if isinstance(rcpt, list) else rcpt,
            event.get("path"), event.get("size"))


@check
def stored_exactly_once(events: list, server: str | None = None) -> tuple[bool, str]:
    """Something was stored, and nothing twice (same sender, recipients, path and size)."""
    stored = _of(events, server, "stored")
    if not stored:
        return False, "nothing was stored"
    counts: dict[tuple, int] = {}
    for e in stored:
        counts[_stored_key(e)] = counts.get(_stored_key(e), 0) + 1
    twice = {k: n for k, n in counts.items() if n > 1}
    if twice:
        key, n = next(iter(twice.items()))
        return False, f"stored {n} times: {key[0]} from {key[1]!r} to {key[2]!r} ({key[4]} bytes)"
    return True, f"{len(stored)} item(s) stored once each"


@check
def retried_after(events: list, server: str, stage: str, code: Any, within: float = 60.0) -> tuple[bool, str]:
    """After each ``code`` reply at ``stage`` the client tried that stage again within ``within`` seconds."""
    command = _STAGE_COMMAND.get(stage, stage.upper())
    mine = _of(events, server)
    last_command: dict[Any, str] = {}
    failures = []
    for i, e in enumerate(mine):
        if e.get("kind") == "command":
            last_command[e.get("conn")] = _command(e)
        if e.get("kind") != "reply" or not _code_matches(e.get("code", e.get("status")), code):
            continue
        at = "CONNECT" if e.get("conn") not in last_command else last_command[e.get("conn")]
        if at != ("CONNECT" if stage == "connect" else command):
            continue
        retry_kind = "connection.open" if stage == "connect" else "command"
        later = [x for x in mine[i + 1:] if x.get("kind") == retry_kind
                 and (stage == "connect" or _command(x) == command) and x["t"] - e["t"] <= within]
        if not later:
            failures.append(e)
    if failures:
        e = failures[0]
        return False, f"no retry of {stage} within {within:g}s after the {e.get('code')} on {server} connection {e.get('conn')}"
    return True, f"every {code} at {stage} was retried within {within:g}s"


@check
def gave_up_after(events: list, n: int, server: str | None = None) -> tuple[bool, str]:
    """The client stopped trying after at most ``n`` connections (no retry storm)."""
    opened = len(_of(events, server, "connection.open"))
    return opened <= n, f"{opened} connection(s), at most {n} allowed"


@check
def sent_quit(events: list, server: str | None = None) -> tuple[bool, str]:
    """Every connection the server did not cut itself ended with QUIT (or LOGOUT)."""
    cut = _cut_connections(events)
    conns: dict[tuple, bool] = {}
    for e in _of(events, server, "command"):
        key = (e.get("server"), e.get("conn"))
        conns[key] = conns.get(key, False) or _command(e) in QUIT_COMMANDS
    rude = [key for key, quit_ in conns.items() if not quit_ and key not in cut]
    if rude:
        return False, f"no QUIT on {rude[0][0]} connection {rude[0][1]} ({len(rude)} such connection(s))"
    return True, f"{len(conns)} connection(s) ended with QUIT or were cut by the server"


@functools.cache
def _tls_listeners() -> frozenset:
    from testbed import registry

    return frozenset(l.label for spec in registry.protocols().values() for l in spec.listeners if l.tls)


@check
def starttls_before_auth(events: list, server: str | None = None) -> tuple[bool, str]:
    """No credentials were sent on a connection before it was encrypted (STARTTLS/STLS or a TLS port)."""
    secure: dict[tuple, bool] = {}
    auths = 0
    for e in _of(events, server):
        key = (e.get("server"), e.get("conn"))
        if e.get("kind") == "connection.open":
            secure[key] = e.get("listener") in _tls_listeners()
        elif e.get("kind") == "command":
            name = _command(e)
            if name in STARTTLS_COMMANDS or (name == "AUTH" and str(e.get("arg", "")).upper().startswith("TLS")):
                secure[key] = True
            elif name in AUTH_COMMANDS:
                auths += 1
                if not secure.get(key, False):
                    return False, f"{name} in clear text on {key[0]} connection {key[1]}"
    return True, f"{auths} authentication command(s), all under TLS"


@check
def no_request_after(events: list, server: str, code: Any, command: str | None = None) -> tuple[bool, str]:
    """After a ``code`` reply (e.g. 550, "5xx") the client sent no further ``command`` (default: any but QUIT/RSET)."""
    seen = None
    for e in _of(events, server):
        if seen is None:
            if e.get("kind") == "reply" and _code_matches(e.get("code", e.get("status")), code):
                seen = e
            continue
        if e.get("kind") != "command":
            continue
        name = _command(e)
        if (command is None and name not in QUIT_COMMANDS | {"RSET"}) or (command is not None and name == command.upper()):
            return False, f"{name} sent on {server} connection {e.get('conn')} after the {seen.get('code', seen.get('status'))}"
    if seen is None:
        return True, f"no {code} reply was sent"
    return True, f"nothing sent after the {code}"


@check
def max_connections(events: list, n: int, server: str | None = None) -> tuple[bool, str]:
    """At most ``n`` connections were open at the same time."""
    open_now, peak = set(), 0
    for e in _of(events, server):
        key = (e.get("server"), e.get("conn"))
        if e.get("kind") == "connection.open":
            open_now.add(key)
            peak = max(peak, len(open_now))
        elif e.get("kind") == "connection.close":
            open_now.discard(key)
    return peak <= n, f"at most {peak} connection(s) open at once, {n} allowed"


def _retry_after(event: Mapping) -> float | None:
    headers = event.get("headers") or (event.get("detail") or {}).get("headers") or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


@check
def honoured_retry_after(events: list, server: str | None = None) -> tuple[bool, str]:
    """After a reply with Retry-After: N the next request came no sooner than N seconds later."""
    mine = _of(events, server)
    asked = 0
    for i, e in enumerate(mine):
        if e.get("kind") not in ("fault", "reply") or (e.get("kind") == "fault" and not e.get("fired")):
            continue
        wait = _retry_after(e)
        if wait is None:
            continue
        asked += 1
        nxt = next((x for x in mine[i + 1:] if x.get("kind") == "command"), None)
        if nxt is not None and nxt["t"] - e["t"] < wait:
            return False, f"retried after {nxt['t'] - e['t']:.2f}s though Retry-After said {wait:g}s"
    return True, f"{asked} Retry-After answer(s), each honoured" if asked else "no Retry-After was sent"


@check
def resumed_transfer(events: list, server: str | None = None) -> tuple[bool, str]:
    """A transfer cut by the server was retried from where it stopped (REST with an offset, or APPE)."""
    cut = _cut_connections(events)
    interrupted: set = set()
    rest: dict[tuple, int] = {}
    resumed = 0
    for e in _of(events, server, "command"):
        key = (e.get("server"), e.get("conn"))
        name, arg = _command(e), str(e.get("arg", ""))
        if name == "REST":
            rest[key] = int(arg) if arg.isdigit() else 0
        elif name in ("RETR", "STOR", "APPE"):
            target = (e.get("server"), arg)
            if target in interrupted:
                if name != "APPE" and rest.get(key, 0) <= 0:
                    return False, f"{name} {arg} restarted from byte 0 after an interrupted transfer"
                resumed += 1
            if key in cut:
                interrupted.add(target)
            rest.pop(key, None)
    return True, f"{resumed} transfer(s) resumed" if resumed else "no transfer was interrupted and retried"
