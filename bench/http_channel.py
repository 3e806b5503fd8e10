"""What TestbedChannel's bad-input checks cost per request against Twisted's HTTPChannel, in process.

Feeds the same keep-alive GETs to a Site on each channel over a StringTransport (no sockets, no wrk), in
interleaved rounds, and prints requests per CPU second and the ratio from this one run.
"""

from __future__ import annotations

import os
import sys

# This folder holds an http.py: drop it from sys.path before anything imports the standard library's ``http``.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import time  # noqa: E402

from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.web import http, resource, server  # noqa: E402

from testbed.servers.http.server import TestbedChannel  # noqa: E402

REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello, world\n"


def run(channel_class, requests: int) -> float:
    """CPU seconds to parse and answer ``requests`` pipelined one at a time on one connection."""
    site = server.Site(Hello())
    site.log = lambda request: None
    channel = channel_class()
    channel.site = site
    channel.requestFactory = site.requestFactory
    channel.timeOut = None
    transport = StringTransport()
    channel.makeConnection(transport)
    start = time.process_time()
    for _ in range(requests):
        channel.dataReceived(REQUEST)
        transport.clear()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args()
    totals = {"twisted.web HTTPChannel": 0.0, "testbed TestbedChannel": 0.0}
    for _ in range(args.rounds):
        totals["twisted.web HTTPChannel"] += run(http.HTTPChannel, args.requests)
        totals["testbed TestbedChannel"] += run(TestbedChannel, args.requests)
    baseline = args.requests * args.rounds / totals["twisted.web HTTPChannel"]
    print(f"{'channel':<28}{'req/CPU s':>12}{'ratio':>8}")
    for name, seconds in totals.items():
        rate = args.requests * args.rounds / seconds
        print(f"{name:<28}{rate:>12,.0f}{rate / baseline:>8.2f}")
    print("ratio: requests per CPU second against Twisted's HTTPChannel, from this one run")


if __name__ == "__main__":
    main()
