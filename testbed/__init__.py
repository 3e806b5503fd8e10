"""twisted-testbed: fake SMTP, POP3, IMAP, FTP, HTTP and DNS servers with seeded fault injection.

The public names below are imported on first use, so ``import testbed`` (and
every ``import testbed.x``) installs no reactor and stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> "module:attribute".
_PUBLIC = {
    "Testbed": "testbed.harness:Testbed",
    "load": "testbed.config:load",
    "from_dict": "testbed.config:from_dict",
    "Scenario": "testbed.config:Scenario",
    "ScenarioError": "testbed.schema:ScenarioError",
    "WaitTimeout": "testbed.servers.base:WaitTimeout",
    "FaultRule": "testbed.faults.rules:FaultRule",
    "Server": "testbed.servers.base:Server",
    "HTTPServer": "testbed.servers.http.server:HTTPServer",
    "HTTPRequest": "testbed.servers.http.server:HTTPRequest",
    "SMTPServer": "testbed.servers.smtp.server:SMTPServer",
    "SMTPMessage": "testbed.servers.smtp.server:SMTPMessage",
    "POP3Server": "testbed.servers.pop3.server:POP3Server",
    "POP3Session": "testbed.servers.pop3.server:POP3Session",
    "Retrieval": "testbed.servers.pop3.server:Retrieval",
    "IMAPServer": "testbed.servers.imap.server:IMAPServer",
    "StoredMessage": "testbed.mail.store:StoredMessage",
    "FTPServer": "testbed.servers.ftp.server:FTPServer",
    "FTPUpload": "testbed.servers.ftp.server:FTPUpload",
    "DNSServer": "testbed.servers.dns.server:DNSServer",
    "DNSQuery": "testbed.servers.dns.server:DNSQuery",
    "EchoServer": "testbed.servers.echo.server:EchoServer",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    try:
        module, _, attribute = _PUBLIC[name].partition(":")
    except KeyError:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
