"""FTP replies raised from anywhere in a command's handling, and how a client-given name is shown in one."""

from __future__ import annotations

from typing import Any


class FTPReply(Exception):
    """Answer the current command with ``code text`` (raised anywhere in a command's handling)."""

    def __init__(self, code: int, text: str):
        super().__init__(code, text)
        self.code = code
        self.text = text


def show(path: Any) -> str:
    return str(path).replace("\0", "\\0").replace("\r", "\\r").replace("\n", "\\n")
