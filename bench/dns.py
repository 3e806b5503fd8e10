"""DNS queries per second over UDP: the testbed's server against plain twisted.names and dnslib, with dnsperf.

Run by hand, never in CI: ``python bench/dns.py [--duration 10] [--max-qps 100000]``.
Each server runs in its own subprocess (this file with ``--serve KIND``), on
127.0.0.1 with an ephemeral port it prints on stdout, and answers the same A
records; every row is the median of interleaved dnsperf rounds against it and is
compared with plain twisted.names (DNSServerFactory over a FileAuthority).
"""

import os
import sys

# This file is called dns.py: drop its folder from sys.path before anything imports dnspython's ``dns``.
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
import tempfile  # noqa: E402
import time  # noqa: E402

ZONE = "bench.test"
NAMES = [f"host{i}.{ZONE}" for i in range(10)]
ADDRESS = "192.0.2.1"

#: kind -> label in the table, in the order they are measured.
SERVERS = {
    "twisted": "twisted.names (FileAuthority)",
    "testbed": "testbed dns, no faults",
    "testbed-cap0": "testbed dns, payload_cap=0",
    "dnslib": "dnslib DNSServer (threads)",
}
BASELINE = "twisted"


# -- the server side (a subprocess) --------------------------------------------------


def _serve_dnslib():
    from dnslib import QTYPE, RR, A
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    class Fixed(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ADDRESS), ttl=300))
            return reply

    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False, logf=lambda s: None)
    server = DNSServer(Fixed(), address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    print(server.server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


def serve(kind):
    """Start one server, print its port on stdout, and serve until killed."""
    if kind == "dnslib":
        return _serve_dnslib()
    from twisted.internet import reactor  # the default: epoll on Linux

    if kind.startswith("testbed"):
        from testbed.harness import Testbed

        scenario = {"servers": {"http": {"enabled": False},
                                "dns": {"enabled": True, "records": {name: {"A": ADDRESS} for name in NAMES}}}}
        if kind == "testbed-cap0":
            scenario["journal"] = {"payload_cap": 0}
        bed = Testbed(scenario, reactor=reactor)

        def started(bed):
            print(bed["dns"].port, flush=True)

        def failed(failure):
            print(failure.getTraceback(), file=sys.stderr, flush=True)
            reactor.stop()

        reactor.callWhenRunning(lambda: bed.start().addCallbacks(started, failed))
    else:
        from twisted.names import authority, dns, server

        class Authority(authority.FileAuthority):
            def loadFile(self, filename):
                self.soa = (ZONE.encode(), dns.Record_SOA(b"ns." + ZONE.encode(), b"hostmaster." + ZONE.encode(),
                                                          1, 3600, 600, 86400, 300, ttl=300))
                self.records = {ZONE.encode(): [self.soa[1]]}
                for name in NAMES:
                    self.records[name.encode()] = [dns.Record_A(ADDRESS, ttl=300)]

        factory = server.DNSServerFactory(authorities=[Authority(ZONE)])
        protocol = dns.DNSDatagramProtocol(factory)
        protocol.noisy = False
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        reactor.callWhenRunning(lambda: print(port.getHost().port, flush=True))
    reactor.run()


# -- the driving side ------------------------------------------------------------------


def start(kind, timeout=15.0):
    """The subprocess serving ``kind`` and its port, read from its first line of stdout."""
    return _servers.start(os.path.abspath(__file__), kind, timeout=timeout)


stop = _servers.stop


def check(port):
    """One query by hand with dig: every server must answer the same address."""
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", "+short", NAMES[0], "A"],
                          capture_output=True, text=True, timeout=10)
    if done.stdout.split() != [ADDRESS]:
        raise RuntimeError(f"port {port} answered {done.stdout!r} {done.stderr!r}, expected {ADDRESS}")


def parse_dnsperf(output):
    """Queries per second, average latency in ms, and the share of queries lost, from dnsperf's report."""
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", output).group(1))
    latency = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", output).group(1)) * 1e3
    lost = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", output)
    return qps, latency, float(lost.group(1)) if lost else 0.0


def dnsperf(port, datafile, duration, max_qps, outstanding):
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", datafile, "-l", str(duration),
           "-Q", str(max_qps), "-q", str(outstanding), "-t", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed on port {port}: {done.stderr or done.stdout}")
    return done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured dnsperf run (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each measuring every server once; a row shows its median round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of the warm-up run before it (default 1)")
    parser.add_argument("--max-qps", type=int, default=100000, help="dnsperf -Q: the rate it sends at most")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q: queries in flight (default 100)")
    parser.add_argument("--only", action="append", choices=sorted(SERVERS), help="measure only these (repeatable)")
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    for tool in ("dnsperf", "dig"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (Debian: apt-get install dnsperf bind9-dnsutils)")
    kinds = [k for k in SERVERS if not args.only or k in args.only]

    with tempfile.NamedTemporaryFile("w", suffix=".queries", delete=False) as f:
        f.writelines(f"{name} A\n" for name in NAMES)
        datafile = f.name
    procs = []
    try:
        ports = {}
        for kind in kinds:
            proc, port = start(kind)
            procs.append(proc)
            ports[kind] = port
            check(port)
        for kind in kinds:
            dnsperf(ports[kind], datafile, args.warmup, args.max_qps, args.outstanding)
        runs = _servers.interleaved(kinds, args.rounds, lambda kind, _: parse_dnsperf(
            dnsperf(ports[kind], datafile, args.duration, args.max_qps, args.outstanding)))
        results = {kind: _servers.median(kind_runs) for kind, kind_runs in runs.items()}
    finally:
        stop(procs)
        os.unlink(datafile)

    base = results.get(BASELINE, (None,))[0]
    print(f"dnsperf -l {args.duration} -Q {args.max_qps} -q {args.outstanding}, A lookups over UDP on 127.0.0.1, "
          f"median of {max(1, args.rounds)} interleaved rounds")
    print(f"{'server':<34} {'qps':>10} {'vs twisted':>11} {'avg ms':>8} {'lost':>7}")
    for kind in kinds:
        qps, latency, lost = results[kind]
        ratio = f"{qps / base:.2f}x" if base else "-"
        print(f"{SERVERS[kind]:<34} {qps:>10.0f} {ratio:>11} {latency:>8.2f} {lost:>6.2f}%")


if __name__ == "__main__":
    sys.exit(main())
