"""Captures what Twisted logs as an error (an "Unhandled Error", a failure) while a test runs.

``with errors_logged() as logged:`` collects every error event from twisted.logger's global publisher.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from twisted.logger import formatEvent, globalLogPublisher


def _is_error(event: dict) -> bool:
    return bool(event.get("log_failure") is not None or event.get("isError"))


def describe(event: dict) -> str:
    """One line naming what was logged, with the failure's exception when there is one."""
    failure = event.get("log_failure")
    text = formatEvent(event)
    if failure is not None:
        text += f" ({failure.type.__name__}: {failure.getErrorMessage()})"
    return text


@contextlib.contextmanager
def errors_logged() -> Iterator[list[dict]]:
    """The error events logged inside the block (the list fills as they come)."""
    logged: list[dict] = []

    def observe(event: dict) -> None:
        if _is_error(event):
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield logged
    finally:
        globalLogPublisher.removeObserver(observe)
