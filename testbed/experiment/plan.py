"""The experiment plan: scenario, client, named fault plans, axes, seeds, repeats, checks; and its cells.

Validated like a scenario, through testbed.schema's Checker (errors name the
file, the key path and what was expected); ``Plan.cells()`` expands the matrix.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import tomllib
import typing
from typing import Any, Mapping

import attrs

from testbed import checks as checks_module
from testbed import config as config_module
from testbed.faults.rules import RULE_KEYS, build_rule
from testbed.schema import Checker, ScenarioError

#: Checks on the client itself rather than the journal: their keys and types.
CLIENT_CHECKS: dict[str, dict[str, type]] = {
    "exit": {"status": int},
    "stdout": {"matches": str, "absent": str},
    "stderr": {"matches": str, "absent": str},
    "duration": {"max": float},
}
#: Axis keys that sweep a rule's own settings rather than an action parameter.
RULE_AXES = ("probability", "times", "after")
_ANNOTATIONS = {"int": int, "float": float, "str": str, "str | None": typing.Optional[str]}


@attrs.frozen
class Client:
    """What runs in each cell: a command (with a timeout) or a ``module:function`` given the testbed."""

    command: typing.Optional[typing.List[str]] = None
    callable: str = ""
    timeout: float = 60.0
    env: typing.Dict[str, str] = attrs.Factory(dict)
    #: The command's working folder, relative to the plan file (default: the plan's folder).
    cwd: str = ""


@attrs.frozen
class CheckSpec:
    """One oracle of ``[[checks]]``: a client check or a journal check from testbed.checks, with parameters."""

    check: str
    params: typing.Dict[str, typing.Any] = attrs.Factory(dict)

    def label(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.check}({args})"


@attrs.frozen
class NamedPlan:
    name: str
    faults: typing.List[dict]
    #: Axes of this plan alone (on top of the plan file's ``[axes]``).
    axes: typing.Dict[str, typing.List[typing.Any]] = attrs.Factory(dict)


@attrs.frozen
class Cell:
    """One run: a plan's fault rules (with axis values applied), a seed and a repeat."""

    plan: str
    faults: typing.List[dict]
    axes: typing.Dict[str, typing.Any]
    seed: int
    repeat: int

    @property
    def group(self) -> str:
        """The cell without its repeat: repeats of one group must agree, or it is flaky."""
        axes = ",".join(f"{k}={v}" for k, v in self.axes.items())
        return f"{self.plan}" + (f"[{axes}]" if axes else "") + f"/seed={self.seed}"

    @property
    def id(self) -> str:
        return f"{self.group}/r{self.repeat}"

    def to_dict(self) -> dict:
        return {"cell": self.id, "group": self.group, "plan": self.plan, "faults": self.faults,
                "axes": self.axes, "seed": self.seed, "repeat": self.repeat}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Cell":
        return cls(data["plan"], list(data["faults"]), dict(data["axes"]), data["seed"], data["repeat"])


@attrs.frozen
class Plan:
    source: str
    base_dir: str
    #: The plan as read (workers rebuild it from this) and its scenario, validated.
    raw: typing.Dict[str, typing.Any]
    scenario: Any
    client: Client
    plans: typing.List[NamedPlan]
    axes: typing.Dict[str, typing.List[typing.Any]]
    seeds: typing.List[int]
    repeats: int
    control: bool
    explore: bool
    budget: int
    checks: typing.List[CheckSpec]

    def path(self, relative: str) -> str:
        return relative if os.path.isabs(relative) else os.path.normpath(os.path.join(self.base_dir, relative))

    def with_plans(self, plans: list[NamedPlan]) -> "Plan":
        return attrs.evolve(self, plans=list(self.plans) + list(plans))

    def cells(self) -> list[Cell]:
        """The matrix: (control +) each plan x its axes' product x seeds x repeats."""
        out = []
        named = ([NamedPlan("control", [])] if self.control or self.explore else []) + list(self.plans)
        for named_plan in named:
            for axes, faults in expand_axes(named_plan.faults, {**self.axes, **named_plan.axes}):
                for seed in self.seeds:
                    for repeat in range(self.repeats):
                        out.append(Cell(named_plan.name, faults, axes, seed, repeat))
        return out


def axis_applies(key: str, rule: Mapping) -> bool:
    if key in RULE_AXES:
        return True
    action, _, param = key.rpartition(".")
    return (not action or rule.get("action") == action) and (bool(action) or param in rule)


def expand_axes(faults: list[dict], axes: Mapping[str, list]) -> list[tuple[dict, list[dict]]]:
    """(axis values, rules with them applied) for the product of the axes that touch at least one rule."""
    keys = [k for k in axes if faults and any(axis_applies(k, r) for r in faults)]
    if not keys:
        return [({}, [dict(r) for r in faults])]
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        chosen = dict(zip(keys, values))
        rules = []
        for rule in faults:
            rule = dict(rule)
            for key, value in chosen.items():
                if axis_applies(key, rule):
                    rule[key.rpartition(".")[2]] = value
            rules.append(rule)
        out.append((chosen, rules))
    return out


# -- building it from data ----------------------------------------------------------


def _check_spec(checker: Checker, path: str, raw: Any) -> CheckSpec:
    if not isinstance(raw, Mapping) or "check" not in raw:
        checker.fail(path, "a table with check = \"NAME\"", raw)
    name = raw["check"]
    params = {k: v for k, v in raw.items() if k != "check"}
    if name in CLIENT_CHECKS:
        schema = CLIENT_CHECKS[name]
        required = [] if name.startswith("std") else list(schema)
        typed = {k: (v, None) for k, v in schema.items()}
    elif name in checks_module.CHECKS:
        signature = inspect.signature(checks_module.CHECKS[name])
        parameters = list(signature.parameters.values())[1:]
        required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
        typed = {p.name: (_ANNOTATIONS.get(str(p.annotation), typing.Any), p.default) for p in parameters}
    else:
        checker.fail(f"{path}.check", "one of " + ", ".join(sorted(set(CLIENT_CHECKS) | set(checks_module.CHECKS))), name)
    for key, value in params.items():
        if key not in typed:
            checker.fail(f"{path}.{key}", f"a parameter of {name}: " + (", ".join(typed) or "none"))
        params[key] = checker.value(f"{path}.{key}", typed[key][0], value)
    for key in required:
        if key not in params:
            checker.fail(f"{path}.{key}", f"a value (the {name} check needs it)")
    if name in ("stdout", "stderr"):
        if not params:
            checker.fail(path, "matches = REGEX or absent = REGEX")
        for key, pattern in params.items():
            try:
                re.compile(pattern)
            except re.error as e:
                checker.fail(f"{path}.{key}", f"a regular expression ({e})", pattern)
    return CheckSpec(name, params)


def _client(checker: Checker, raw: Any) -> Client:
    client = checker.structure("client", Client, raw)
    if bool(client.command) == bool(client.callable):
        checker.fail("client", "exactly one of command = [...] or callable = \"module:function\"")
    if client.callable and not re.fullmatch(r"[\w.]+:\w+", client.callable):
        checker.fail("client.callable", "\"module:function\"", client.callable)
    if client.timeout <= 0:
        checker.fail("client.timeout", "a number of seconds above 0", client.timeout)
    return client


def _scenario(checker: Checker, raw: Any, base_dir: str):
    if isinstance(raw, str):
        path = raw if os.path.isabs(raw) else os.path.join(base_dir, raw)
        return config_module.load(path)
    if not isinstance(raw, Mapping):
        checker.fail("scenario", "a scenario file name or an inline table", raw)
    return config_module.from_dict(raw, source=f"{checker.source}: scenario", base_dir=base_dir)


def from_dict(data: Mapping[str, Any], source: str = "<plan>", base_dir: str = ".") -> Plan:
    """Build and validate a plan from plain data (as TOML would give it)."""
    checker = Checker(source)
    if not isinstance(data, Mapping):
        checker.fail("", "a table", data)
    known = {"scenario", "client", "plans", "axes", "seeds", "repeats", "control", "explore", "budget", "checks"}
    for key in data:
        if key not in known:
            checker.fail(str(key), "a known key (this one is not): " + ", ".join(sorted(known)))
    scenario = _scenario(checker, data.get("scenario", {}), base_dir)
    if "client" not in data:
        checker.fail("client", "a value (this key is required): command = [...] or callable = \"module:function\"")
    client = _client(checker, data["client"])
    targets = scenario.servers.targets()
    plans = []
    raw_plans = data.get("plans", [])
    if not isinstance(raw_plans, list):
        checker.fail("plans", "a list of plan tables ([[plans]])", raw_plans)
    names = set()
    for i, raw in enumerate(raw_plans):
        path = f"plans[{i}]"
        if not isinstance(raw, Mapping):
            checker.fail(path, "a table with name and [[plans.faults]]", raw)
        name = raw.get("name")
        if not isinstance(name, str) or not name or name in names or name == "control":
            checker.fail(f"{path}.name", "a unique name other than 'control'", name)
        names.add(name)
        extra = set(raw) - {"name", "faults", "axes"}
        if extra:
            checker.fail(f"{path}.{sorted(extra)[0]}", "a known key: name, faults, axes")
        faults = raw.get("faults", [])
        if not isinstance(faults, list):
            checker.fail(f"{path}.faults", "a list of fault tables ([[plans.faults]])", faults)
        for j, rule in enumerate(faults):
            build_rule(checker, f"{path}.faults[{j}]", rule, targets)
        own = _axes(checker, f"{path}.axes", raw.get("axes", {}), [dict(rule) for rule in faults], targets)
        plans.append(NamedPlan(name, [dict(rule) for rule in faults], own))
    axes = _axes(checker, "axes", data.get("axes", {}), [r for p in plans for r in p.faults], targets)
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            checker.fail("seeds", "a count of 1 or more, or a list of seeds", seeds)
        seeds = list(range(1, seeds + 1))
    seeds = checker.value("seeds", typing.List[int], seeds)
    repeats = checker.value("repeats", int, data.get("repeats", 1))
    if repeats < 1:
        checker.fail("repeats", "1 or more", repeats)
    budget = checker.value("budget", int, data.get("budget", 50))
    explore = checker.value("explore", bool, data.get("explore", False))
    control = checker.value("control", bool, data.get("control", True))
    if not plans and not explore and not control:
        checker.fail("plans", "at least one [[plans]] entry, explore = true or the control column")
    raw_checks = data.get("checks", [])
    if not isinstance(raw_checks, list):
        checker.fail("checks", "a list of check tables ([[checks]])", raw_checks)
    check_specs = [_check_spec(checker, f"checks[{i}]", c) for i, c in enumerate(raw_checks)]
    if not any(c.check == "exit" for c in check_specs):
        check_specs.insert(0, CheckSpec("exit", {"status": 0}))
    return Plan(source=source, base_dir=base_dir, raw=dict(data), scenario=scenario, client=client, plans=plans,
                axes=axes, seeds=seeds, repeats=repeats, control=control, explore=explore, budget=budget,
                checks=check_specs)


def _axes(checker: Checker, path: str, raw: Any, rules: list[dict], targets) -> dict:
    """Validated axes: each key touches some rule, and every value makes a valid rule."""
    if not isinstance(raw, Mapping):
        checker.fail(path, "a table of key = [values]", raw)
    axes = _flatten(raw)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            checker.fail(f"{path}.{key}", "a non-empty list of values", values)
        if not any(axis_applies(key, rule) for rule in rules):
            checker.fail(f"{path}.{key}", "a rule key (probability, times, after) or ACTION.PARAM of a rule it sweeps")
        for value in values:
            for rule in rules:
                if axis_applies(key, rule):
                    try:
                        build_rule(Checker(checker.source), "", {**rule, key.rpartition(".")[2]: value}, targets)
                    except ScenarioError as e:
                        checker.fail(f"{path}.{key}", e.expected, value)
    return axes


def _flatten(axes: Mapping, prefix: str = "") -> dict:
    """``delay.seconds = [...]`` reads as {"delay": {"seconds": [...]}} from TOML: back to dotted keys."""
    out = {}
    for key, value in axes.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load(path: str) -> Plan:
    """Read and validate a TOML plan file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(path, "", "an existing plan file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"valid TOML ({e})") from None
    return from_dict(data, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


__all__ = ["Plan", "Client", "CheckSpec", "Cell", "NamedPlan", "from_dict", "load", "expand_axes", "RULE_KEYS"]
