"""The fault engine: decides, rule by rule, whether a fault fires at an event, from a seed.

Rules are evaluated in order and the first that fires decides. Every random
draw comes from a generator derived with SHA-256 from (seed, server,
connection number, rule), so the same seed and the same traffic give the same
faults whatever the interleaving of connections; counters (``after``,
``times``) count matches in the order the servers see them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
from typing import Any, Callable, Iterable, Mapping

import attrs

from testbed.faults.rules import FaultRule
from testbed.journal import FAULT, Journal


def stable_random(*parts: Any) -> random.Random:
    """A generator seeded from ``parts`` with a hash that is the same in every process."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def glob_matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, (list, tuple)):
        return any(glob_matches(p, value) for p in pattern)
    if isinstance(pattern, Mapping):
        if not isinstance(value, Mapping):
            return False
        lowered = {str(k).lower(): v for k, v in value.items()}
        return all(k.lower() in lowered and glob_matches(p, lowered[k.lower()]) for k, p in pattern.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(glob_matches(pattern, v) for v in value)
    if isinstance(pattern, bool) or isinstance(value, bool):
        return pattern == value
    if isinstance(pattern, (int, float)) and not isinstance(value, str):
        return pattern == value
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return fnmatch.fnmatchcase(str(value).lower(), str(pattern).lower())


#: Attributes left out of a decision's journal event: a message body would make every event as large as the mail.
UNJOURNALED = frozenset({"body"})


def journaled_attributes(attributes: Mapping[str, Any]) -> dict:
    return {k: v for k, v in attributes.items() if k not in UNJOURNALED}


def rule_matches(rule: FaultRule, attributes: Mapping[str, Any]) -> bool:
    return all(glob_matches(p, attributes.get(k)) for k, p in rule.match.items())


@attrs.define(eq=False)
class _RuleState:
    rule: FaultRule
    key: str
    matches: int = 0
    fired: int = 0
    #: Matches per connection number: the index of a probability draw, so
    #: draws do not depend on how connections interleave.
    per_connection: dict = attrs.Factory(dict)


@attrs.frozen
class Fault:
    """A fault that fired: the rule, and the connection's own generator for its randomness."""

    rule: FaultRule
    rng: random.Random = attrs.field(repr=False)

    @property
    def action(self) -> str:
        return self.rule.action

    @property
    def wire(self) -> bool:
        return self.rule.wire

    def param(self, key: str, default: Any = None) -> Any:
        return self.rule.param(key, default)


class FaultEngine:
    """The rules of a run (from the scenario, plus those added at runtime) and their counters."""

    def __init__(self, seed: int, journal: Journal, rules: Iterable[FaultRule] = (),
                 build_rule: Callable[..., FaultRule] | None = None):
        self.seed = seed
        #: Validates the keys of a runtime rule against the running servers (``add(**kwargs)``).
        self._build_rule = build_rule
        self.journal = journal
        self._scenario = [_RuleState(r, f"scenario:{i}") for i, r in enumerate(rules)]
        self._runtime: list[_RuleState] = []
        self._added = 0
        self._connections: dict[str, int] = {}
        self._aimed: frozenset[tuple[str, str]] = frozenset()
        self._index()

    def _index(self) -> None:
        self._aimed = frozenset((s.rule.server, s.rule.on) for s in self._scenario + self._runtime)

    def wants(self, server: str, on: str) -> bool:
        """Whether any rule is aimed at this stage (callers skip building attributes when not)."""
        return (server, on) in self._aimed

    # -- the rule set -----------------------------------------------------

    @property
    def rules(self) -> list[FaultRule]:
        return [s.rule for s in self._scenario + self._runtime]

    def add(self, rule: FaultRule | None = None, **kwargs: Any) -> FaultRule:
        """Add a rule at runtime (a FaultRule, or the keys of a ``[[faults]]`` entry)."""
        if rule is None:
            if self._build_rule is None:
                raise TypeError("this engine was built without a rule builder: pass a FaultRule")
            rule = self._build_rule(**kwargs)
        self._added += 1
        self._runtime.append(_RuleState(rule, f"runtime:{self._added}"))
        self._index()
        return rule

    def key_of(self, rule: FaultRule) -> str | None:
        """The key ``stats`` and the journal give ``rule`` (the last added, for equal rules)."""
        for state in reversed(self._scenario + self._runtime):
            if state.rule is rule:
                return state.key
        return None

    def remove(self, key: str) -> bool:
        """Remove the runtime rule ``key`` ("runtime:3", as ``stats`` names it); whether there was one."""
        kept = [s for s in self._runtime if s.key != key]
        removed = len(kept) != len(self._runtime)
        self._runtime = kept
        self._index()
        return removed

    def clear(self) -> None:
        """Remove the rules added at runtime; scenario rules stay."""
        self._runtime = []
        self._index()

    def reset(self) -> None:
        """Between tests: runtime rules gone, counters and connection numbers from zero."""
        self._runtime = []
        self._added = 0
        self._connections = {}
        self._index()
        for state in self._scenario:
            state.matches = state.fired = 0
            state.per_connection = {}

    def stats(self) -> list[dict]:
        """Each rule with how often it matched and fired."""
        return [dict(s.rule.describe(), key=s.key, matches=s.matches, fired=s.fired)
                for s in self._scenario + self._runtime]

    # -- decisions --------------------------------------------------------

    def next_connection(self, server: str) -> int:
        """Number a new connection (or UDP peer) of ``server``, from 1."""
        n = self._connections.get(server, 0) + 1
        self._connections[server] = n
        return n

    def decide(self, server: str, on: str, conn: int, attributes: Mapping[str, Any] | None = None) -> Fault | None:
        """The fault that fires for this event, or None. Journals every decision a rule made."""
        if (server, on) not in self._aimed:
            return None
        attributes = attributes or {}
        for state in self._scenario + self._runtime:
            rule = state.rule
            if rule.server != server or rule.on != on:
                continue
            if rule.connection is not None and conn not in rule.connection:
                continue
            if not rule_matches(rule, attributes):
                continue
            state.matches += 1
            nth_here = state.per_connection[conn] = state.per_connection.get(conn, 0) + 1
            if state.matches <= rule.after:
                continue
            if rule.times is not None and state.fired >= rule.times:
                continue
            rng = stable_random(self.seed, server, conn, state.key, "rng", nth_here)
            if rule.probability < 1.0:
                draw = stable_random(self.seed, server, conn, state.key, "p", nth_here).random()
                if draw >= rule.probability:
                    # With the attributes, a rule that never fires (an explore probe) still shows the point reached.
                    self.journal.record(FAULT, server, conn, on=on, rule=state.key, action=rule.action,
                                        fired=False, draw=round(draw, 6), seed=self.seed,
                                        attributes=journaled_attributes(attributes))
                    continue
            state.fired += 1
            self.journal.record(FAULT, server, conn, on=on, rule=state.key, action=rule.action,
                                fired=True, seed=self.seed, detail=rule.describe(),
                                attributes=journaled_attributes(attributes))
            return Fault(rule, rng)
        return None
