"""HTTP throughput and latency: the testbed's server against plain twisted.web and pytest-httpserver, with wrk.

Run by hand, never in CI: ``python bench/http.py [--duration 8] [--connections 32]``.
Each server runs in its own subprocess (this file with ``--serve KIND``), on
127.0.0.1 with an ephemeral port it prints on stdout; every row comes from the
same run and is compared with plain twisted.web with its access log off.
"""

import os
import sys

# This file is called http.py: drop its folder from sys.path before anything
# imports the standard library's ``http`` package (twisted.web and werkzeug do).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("_servers", os.path.join(_HERE, "_servers.py"))
_servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_servers)

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

#: The same 13 bytes from every server.
BODY = b"Hello, world!"
PATH = "/hello"

#: kind -> label in the table, in the order they are measured.
SERVERS = {
    "twisted-quiet": "twisted.web Site (log off)",
    "twisted-stock": "twisted.web Site (stock log)",
    "testbed": "testbed http, no faults",
    "testbed-cap0": "testbed http, payload_cap=0",
    "httpserver": "pytest-httpserver (werkzeug)",
}
BASELINE = "twisted-quiet"


# -- the server side (a subprocess) --------------------------------------------------


def _testbed_scenario(payload_cap=None):
    scenario = {"servers": {"http": {"tls_listen": "", "routes": [{"path": PATH, "body": BODY.decode()}]}}}
    if payload_cap is not None:
        scenario["journal"] = {"payload_cap": payload_cap}
    return scenario


def serve(kind):
    """Start one server, print its port on stdout, and serve until killed."""
    if kind == "httpserver":
        from pytest_httpserver import HTTPServer

        server = HTTPServer(host="127.0.0.1", port=0)
        server.expect_request(PATH).respond_with_data(BODY)
        server.start()
        print(server.port, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        finally:
            server.stop()
        return

    from twisted.internet import reactor  # the default: epoll on Linux

    if kind in ("testbed", "testbed-cap0"):
        from testbed.harness import Testbed

        bed = Testbed(_testbed_scenario(0 if kind == "testbed-cap0" else None), reactor=reactor)

        def started(bed):
            from testbed.tap import settle

            settle()  # as `twistd testbed` does once its servers listen
            print(bed["http"].port, flush=True)

        def failed(failure):
            print(failure.getTraceback(), file=sys.stderr, flush=True)
            reactor.stop()

        reactor.callWhenRunning(lambda: bed.start().addCallbacks(started, failed))
    else:
        from twisted.web import resource, server

        class Hello(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                return BODY

        if kind == "twisted-quiet":
            class Site(server.Site):
                noisy = False

                def log(self, request):
                    pass
        else:
            Site = server.Site
        port = reactor.listenTCP(0, Site(Hello()), interface="127.0.0.1")
        reactor.callWhenRunning(lambda: print(port.getHost().port, flush=True))
    reactor.run()


# -- the driving side ------------------------------------------------------------------


def start(kind, timeout=15.0):
    """The subprocess serving ``kind`` and its port, read from its first line of stdout."""
    return _servers.start(os.path.abspath(__file__), kind, timeout=timeout)


stop = _servers.stop


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output):
    """Requests per second, p50 and p99 in ms, and any errors from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.M))
    errors = []
    for pattern in (r"Socket errors:.*", r"Non-2xx or 3xx responses:.*"):
        found = re.search(pattern, output)
        if found:
            errors.append(found.group(0).strip())
    return rps, _ms(latency["50"]), _ms(latency["99"]), errors


def wrk(url, duration, connections, threads, latency=True):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s"]
    if latency:
        cmd.append("--latency")
    done = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {done.stderr or done.stdout}")
    return done.stdout


def check(url):
    """One request by hand: the body must be the same 13 bytes everywhere."""
    from urllib.request import urlopen

    with urlopen(url, timeout=5) as response:
        body = response.read()
    if body != BODY:
        raise RuntimeError(f"{url} answered {body!r}, expected {BODY!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds of each measured wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each measuring every server once; a row shows its median round (default 3)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of the warm-up run before it (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")
    duration = max(1, round(args.duration))
    warmup = max(1, round(args.warmup))

    load = os.getloadavg()[0]  # other work on the machine skews every row; say how much there was
    procs = []
    results = {}
    try:
        ports = {}
        for kind in SERVERS:  # start them all first: start-up is most of a subprocess's life
            proc, ports[kind] = start(kind)
            procs.append(proc)

        def measure(kind, round_number):
            url = f"http://127.0.0.1:{ports[kind]}{PATH}"
            if round_number == 1:
                check(url)
                wrk(url, warmup, args.connections, args.threads, latency=False)
            run = parse_wrk(wrk(url, duration, args.connections, args.threads))
            rps, p50, p99, errors = run
            print(f"  round {round_number}: {SERVERS[kind]}: {rps:,.0f} req/s"
                  + (f"  [{'; '.join(errors)}]" if errors else ""), file=sys.stderr, flush=True)
            return run

        for kind, runs in _servers.interleaved(SERVERS, args.rounds, measure).items():
            results[kind] = _servers.median(runs, key=lambda run: run[0])
    finally:
        stop(procs)

    base = results[BASELINE][0]
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{duration}s --latency (after a {warmup}s warm-up), "
          f"median of {max(1, args.rounds)} interleaved rounds, "
          f"GET {PATH} -> {len(BODY)} bytes, 127.0.0.1, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {load:.2f} before the run")
    header = f"{'server':<32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for kind, label in SERVERS.items():
        rps, p50, p99, errors = results[kind]
        print(f"{label:<32} {rps:>9,.0f} {p50:>8.2f} {p99:>8.2f} {rps / base:>6.2f}" + ("  *" if errors else ""))
    if any(r[3] for r in results.values()):
        print("* wrk reported errors for this row (see above)")
    print("ratio: req/s against twisted.web Site with its access log off, from this one run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
