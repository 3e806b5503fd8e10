"""A testbed with its control API on a free loopback port, and a small JSON client for it (tests only)."""

import json
import urllib.error
import urllib.request

from testbed import control, runtime
from testbed.harness import Testbed
from testbed.registry import EPHEMERAL


def start(scenario=None, listen=EPHEMERAL):
    from twisted.internet import reactor

    bed = Testbed(scenario, reactor=reactor)
    control.attach(bed, listen)
    runtime.call(reactor, bed.start)
    return bed


def stop(bed):
    runtime.call(bed.reactor, bed.stop)


class Api:
    """Calls one control API: ``get``/``post``/``put``/``delete`` give (status, decoded body)."""

    def __init__(self, base, headers=None):
        self.base = base.rstrip("/")
        self.headers = dict(headers or {})

    def call(self, method, path, body=None, headers=None, raw=False, timeout=15):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, content, kind = response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, content, kind = e.code, e.read(), e.headers.get("content-type", "")
        if raw or not kind.startswith("application/json"):
            return status, content
        return status, json.loads(content)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, {} if body is None else body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)
