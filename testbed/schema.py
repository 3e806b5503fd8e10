"""Checking plain data (TOML, JSON, keyword arguments) against attrs classes and types.

The one place that says "SOURCE: KEY.PATH: expected X, got Y"; the scenario,
fault rules and (later) plans are all built through it.
"""

from __future__ import annotations

import typing
from typing import Any, Mapping

import attrs


class ScenarioError(ValueError):
    """A scenario that cannot run: names the source, the key path and what was expected."""

    def __init__(self, source: str, path: str, expected: str, got: Any = attrs.NOTHING):
        self.source, self.path, self.expected = source, path, expected
        where = f"{source}: {path}" if path else source
        message = f"{where}: expected {expected}"
        if got is not attrs.NOTHING:
            message += f", got {got!r}"
        super().__init__(message)


def choices(*values: str):
    """An attrs field whose value must be one of ``values`` (the first is the default)."""
    return attrs.field(default=values[0], metadata={"choices": values})


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

#: Keys of a model that data never sets (filled in by whoever builds it).
_INTERNAL = ("source", "base_dir")


class Checker:
    """Builds typed values from plain data, failing with a ScenarioError that names ``source``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: Any = attrs.NOTHING) -> typing.NoReturn:
        raise ScenarioError(self.source, path, expected, got)

    def value(self, path: str, tp: Any, raw: Any, field: attrs.Attribute | None = None) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if field is not None and "choices" in field.metadata:
            allowed = field.metadata["choices"]
            if raw not in allowed:
                self.fail(path, "one of " + ", ".join(repr(c) for c in allowed), raw)
            return raw
        if tp is typing.Any or tp is object:
            return raw
        if origin is typing.Union:
            if raw is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)][0]
            return self.value(path, inner, raw)
        if attrs.has(tp):
            return self.structure(path, tp, raw)
        if origin in (list, typing.List):
            if not isinstance(raw, (list, tuple)):
                self.fail(path, "a list", raw)
            return [self.value(f"{path}[{i}]", args[0], v) for i, v in enumerate(raw)]
        if origin in (dict, typing.Dict):
            if not isinstance(raw, Mapping):
                self.fail(path, "a table", raw)
            return {str(k): self.value(f"{path}.{k}", args[1], v) for k, v in raw.items()}
        if tp is float:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                self.fail(path, "a number", raw)
            return float(raw)
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(path, "an integer", raw)
            return raw
        if tp in (str, bool):
            if not isinstance(raw, tp):
                self.fail(path, _TYPE_NAMES[tp], raw)
            return raw
        raise TypeError(f"no rule for {tp!r}")  # a bug in the model, not in the data

    def structure(self, path: str, cls: type, raw: Any, skip: typing.Iterable[str] = ()) -> Any:
        """An instance of the attrs class ``cls`` from a table; ``skip`` names keys handled by the caller."""
        if not isinstance(raw, Mapping):
            self.fail(path or "(top level)", "a table", raw)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in attrs.fields(cls) if f.name not in _INTERNAL}
        skip = set(skip)
        kwargs = {}
        for key, value in raw.items():
            if key in skip:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in fields:
                self.fail(sub, "a known key (this one is not): " + ", ".join(sorted(set(fields) | skip)))
            kwargs[key] = self.value(sub, hints[key], value, fields[key])
        missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in kwargs]
        if missing:
            self.fail(f"{path}.{missing[0]}" if path else missing[0], "a value (this key is required)")
        return cls(**kwargs)
