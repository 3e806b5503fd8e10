"""The dashboard's static files (HTML, CSS, JavaScript written for this project, shipped in the package).

Served at ``/`` and ``/static/NAME`` of the control listener; only the files in ``static/`` exist, so no
path can reach anything else, and the page may load nothing from anywhere but its own origin.
"""

from __future__ import annotations

import functools
import mimetypes
import os

from testbed.control.router import ApiError, Raw, Route

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: Scripts, styles, frames and images from the dashboard's own origin only (a mail's remote images stay
#: unloaded; its HTML runs in a sandboxed frame without scripts).
POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self' about:; "
          "object-src 'none'; base-uri 'none'; form-action 'self'")


@functools.cache
def _files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for name in sorted(os.listdir(FOLDER)):
        with open(os.path.join(FOLDER, name), "rb") as f:
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files[name] = (f.read(), kind + ("; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else ""))
    return files


def _serve(name: str) -> Raw:
    try:
        body, kind = _files()[name]
    except KeyError:
        raise ApiError(404, f"no dashboard file {name!r}") from None
    return Raw(body, kind, headers=(("content-security-policy", POLICY), ("x-content-type-options", "nosniff"),
                                    ("cache-control", "no-cache")))


def routes() -> list[Route]:
    return [
        Route("GET", "/", lambda call: _serve("index.html"), "The dashboard", produces="text/html"),
        Route("GET", "/static/{name}", lambda call: _serve(call.params["name"]), "The dashboard's files",
              produces="text/plain"),
    ]
