"""Replay identity: what of a fired fault must be the same when a cell is run again.

The sequence of (server, connection, stage, rule, action) decisions; times and
peer ports are allowed to differ.
"""

from __future__ import annotations

KEYS = ("server", "conn", "on", "rule", "action")


def fault_sequence(fired: list[dict]) -> list[tuple]:
    return [tuple(f.get(k) for k in KEYS) for f in fired]


def same_faults(first: list[dict], second: list[dict]) -> bool:
    return fault_sequence(first) == fault_sequence(second)
