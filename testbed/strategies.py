"""Hypothesis strategies over the fault catalogue: lists of valid fault rules for property tests.

Needs the extra ``twisted-testbed[hypothesis]``; Hypothesis then shrinks a failing fault plan and keeps it.
"""

from __future__ import annotations

from typing import Any, Iterable

from hypothesis import strategies as st

from testbed import registry

#: Parameter values: small and quick, so a property test's examples run fast.
_NUMBERS = {"seconds": st.floats(0, 0.2), "jitter": st.floats(0, 0.05), "interval": st.floats(0, 0.02),
            "rate": st.floats(0, 0.2), "bytes": st.integers(0, 4096), "bytes_per_second": st.integers(256, 65536),
            "size": st.integers(1, 64), "copies": st.integers(1, 3)}


def _params(protocol: str, action: str, stage: str, schema: dict) -> st.SearchStrategy[dict]:
    spec = registry.protocol(protocol)
    fields: dict[str, st.SearchStrategy] = {}
    for key, tp in schema.items():
        if key in _NUMBERS:
            fields[key] = _NUMBERS[key]
        elif isinstance(tp, tuple):
            fields[key] = st.sampled_from(tp)
        elif action == "reply" and spec.replies is not None and key == spec.replies.code_key:
            codes = sorted(c for c in spec.replies.texts if isinstance(c, int) and c >= 400)
            if codes:
                fields[key] = st.sampled_from(codes)
    return st.fixed_dictionaries({}, optional=fields)


def fault_rule(server: str, protocol: str | None = None, stages: Iterable[str] | None = None,
               actions: Iterable[str] | None = None) -> st.SearchStrategy[dict]:
    """One ``[[faults]]`` table aimed at ``server``: a stage, an action allowed there, its parameters, times."""
    surface = registry.protocol(protocol or server).faults
    all_actions = surface.all_actions()
    wanted_actions = set(actions) if actions is not None else set(all_actions)
    wanted_stages = set(stages) if stages is not None else set(surface.stages)
    pairs = sorted((stage, action) for action in all_actions if action in wanted_actions
                   for stage in surface.stages_for(action) if stage in wanted_stages)
    if not pairs:
        raise ValueError(f"no action of {sorted(wanted_actions)} applies at {sorted(wanted_stages)} on {server}")

    def build(pair: tuple[str, str]) -> st.SearchStrategy[dict]:
        stage, action = pair
        base = {"server": server, "on": stage, "action": action}
        return st.builds(lambda params, times: {**base, **params, "times": times},
                         _params(protocol or server, action, stage, all_actions[action]), st.integers(1, 3))

    return st.sampled_from(pairs).flatmap(build)


def fault_plans(servers: Any = ("smtp",), stages: Iterable[str] | None = None, actions: Iterable[str] | None = None,
                min_size: int = 0, max_size: int = 4) -> st.SearchStrategy[list[dict]]:
    """Lists of fault rules drawn from the catalogue: ``servers`` (names, or name -> protocol), stages, actions."""
    targets = dict(servers) if isinstance(servers, dict) else {name: name for name in servers}
    rule = st.one_of([fault_rule(name, protocol, stages, actions) for name, protocol in targets.items()])
    return st.lists(rule, min_size=min_size, max_size=max_size)
