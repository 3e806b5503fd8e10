"""A parsed mail message as JSON-ready data: headers, text and HTML bodies, attachments, raw source.

Shared by every record that holds a message (SMTP's accepted messages, the
store's messages), so the pytest handles and the control API show one shape.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any


def _text_of(part) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError):  # an unknown charset or a broken part
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def message_dict(message: EmailMessage, raw: bytes) -> dict[str, Any]:
    """The message's headers, first text and HTML bodies, attachments (without content) and raw source."""
    text = html = None
    attachments = []
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        if disposition == "attachment" or (disposition == "inline" and part.get_filename()):
            payload = part.get_payload(decode=True) or b""
            attachments.append({"part": index, "filename": part.get_filename(), "content_type": content_type,
                                "size": len(payload)})
        elif content_type == "text/plain" and text is None:
            text = _text_of(part)
        elif content_type == "text/html" and html is None:
            html = _text_of(part)
    return {
        "subject": message.get("subject"),
        "from": message.get("from"),
        "to": message.get("to"),
        "date": message.get("date"),
        "message_id": message.get("message-id"),
        "headers": [[name, str(value)] for name, value in message.items()],
        "text": text,
        "html": html,
        "attachments": attachments,
        "size": len(raw),
        "raw": raw.decode("utf-8", "replace"),
    }
