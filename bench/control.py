"""HTTP throughput with the control API on and one Server-Sent Events subscriber connected, against the API off.

Run by hand, never in CI: ``python bench/control.py [--duration 8] [--rounds 2]``. Both testbeds run in
subprocesses (bench/http.py's harness), measured with wrk in alternating rounds of the same run.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import importlib.util  # noqa: E402


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_servers = _load("_servers")
_http = _load("http")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402

KINDS = {"off": "testbed http, control API off",
         "on": "API on, 1 SSE subscriber (every event)",
         "dashboard": "API on, 1 SSE subscriber (the dashboard's kinds)"}

#: What the dashboard subscribes to (testbed/control/static/app.js): no data events.
DASHBOARD_KINDS = "connection.open,connection.close,stored,fault,command"


def serve(kind):
    """A testbed serving GET /hello (as bench/http.py's), with the control API when ``kind`` is "on"."""
    from twisted.internet import reactor

    from testbed.harness import Testbed

    bed = Testbed(_http._testbed_scenario(), reactor=reactor)
    if kind != "off":
        from testbed import control

        control.attach(bed, "tcp:0:interface=127.0.0.1")

    def started(bed):
        from testbed.tap import settle

        settle()
        print(bed["http"].port, flush=True)
        if bed.control is not None:
            print(bed.control.port.getHost().port, flush=True)

    def failed(failure):
        print(failure.getTraceback(), file=sys.stderr, flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: bed.start().addCallbacks(started, failed))
    reactor.run()


def subscribe(port, kinds=None):
    """One SSE client (of ``kinds``, or every event): curl, writing what it receives to a file (C, so the
    client's own CPU use stays small next to the server's); returns the process and the file."""
    import subprocess
    import tempfile

    sink = tempfile.TemporaryFile()
    query = f"?kind={kinds}" if kinds else ""
    proc = subprocess.Popen(["curl", "-sN", f"http://127.0.0.1:{port}/api/v1/events{query}"], stdout=sink)
    return proc, sink


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds of each measured wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating measured runs per server (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--serve", choices=sorted(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")
    duration, warmup = max(1, round(args.duration)), max(1, round(args.warmup))
    load = os.getloadavg()[0]
    procs, ports = [], {}
    subscribers = {}
    try:
        for kind in KINDS:
            proc, ports[kind] = _servers.start(os.path.abspath(__file__), kind)
            procs.append(proc)
            if kind != "off":
                subscribers[kind] = subscribe(int(proc.stdout.readline()),
                                              DASHBOARD_KINDS if kind == "dashboard" else None)
        for kind in KINDS:
            url = f"http://127.0.0.1:{ports[kind]}{_http.PATH}"
            _http.check(url)
            _http.wrk(url, warmup, args.connections, 1, latency=False)

        def measure(kind, round_number):
            url = f"http://127.0.0.1:{ports[kind]}{_http.PATH}"
            rps = _http.parse_wrk(_http.wrk(url, duration, args.connections, 1))[0]
            print(f"  round {round_number}, {KINDS[kind]}: {rps:,.0f} req/s", file=sys.stderr, flush=True)
            return rps

        rates = _servers.interleaved(KINDS, args.rounds, measure)
    finally:
        _servers.stop(procs)
        for subscriber, _ in subscribers.values():
            subscriber.terminate()
            subscriber.wait(5)
    off = statistics.median(rates["off"])
    print(f"\nwrk -t1 -c{args.connections} -d{duration}s, {args.rounds} alternating rounds, GET {_http.PATH}, "
          f"127.0.0.1, {os.cpu_count()} CPUs, load average {load:.2f} before the run")
    for kind, label in KINDS.items():
        rate = statistics.median(rates[kind])
        received = ""
        if kind in subscribers:
            sink = subscribers[kind][1]
            sink.seek(0, os.SEEK_END)
            received = f"  (subscriber got {sink.tell() / 1e6:,.1f} MB)"
        print(f"{label:<52} {rate:>10,.0f} req/s  {rate / off:.2f}{received}")

if __name__ == "__main__":
    main()
