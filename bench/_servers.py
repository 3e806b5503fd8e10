"""Servers under measurement, each in its own subprocess: start one and read its port, stop them all;
measure them in interleaved rounds.

Shared by the benches in this folder; a server subprocess prints its port as its first line of stdout.
"""

from __future__ import annotations

import select
import subprocess
import sys
import tempfile
import time


def start(script: str, kind: str, *args: str, timeout: float = 15.0):
    """Run ``script --serve KIND ARGS...``; return the process and the port it printed."""
    errors = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads would stall a chatty server
    proc = subprocess.Popen([sys.executable, script, "--serve", kind, *args],
                            stdout=subprocess.PIPE, stderr=errors, text=True)
    proc.errors = errors
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        errors.seek(0)
        told = errors.read()[-2000:]
        stop([proc])
        raise RuntimeError(f"{kind}: no port within {timeout}s (got {line!r}); stderr:\n{told}")
    return proc, int(line)


def stop(procs, timeout: float = 3.0) -> None:
    """Terminate every subprocess, then kill what is still there after ``timeout`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)
        proc.stdout.close()
        proc.errors.close()


def interleaved(kinds, rounds: int, measure) -> dict:
    """{kind: [one result per round]}, from ``measure(kind, round_number)`` (rounds count from 1).

    Every round measures each kind once, in turn: a burst of other work on this shared machine
    lands on one round of every kind rather than on one kind's whole measurement.
    """
    runs = {kind: [] for kind in kinds}
    for number in range(1, max(1, rounds) + 1):
        for kind in kinds:
            runs[kind].append(measure(kind, number))
    return runs


def median(runs, key=None):
    """The median run (the upper one of an even count), by ``key``."""
    return sorted(runs, key=key)[len(runs) // 2]
