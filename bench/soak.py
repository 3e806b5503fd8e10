"""Memory soak: HTTP and DNS at full speed against one `twistd testbed` daemon with the defaults; RSS over time.

Run by hand, never in CI: ``python bench/soak.py [--duration 60] [--interval 5]``.
The daemon runs the embedded default scenario (every server, its journal and
record bounds as shipped), with each listener moved to an ephemeral loopback
port. ``wrk`` (GET, keep-alive) and ``dnsperf`` (A lookups over UDP) load it at
once for the whole duration while this script samples the daemon's resident
set size; with every record list bounded, RSS climbs while the bounds fill,
then plateaus.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed import registry  # noqa: E402

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
NAMES = ["www.example.test A", "mail.example.test A", "example.test MX", "www.example.test AAAA"]


def start_daemon(workdir: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """The daemon on ephemeral ports, and its listeners ({"HTTP": "http://127.0.0.1:PORT", ...})."""
    ports = []
    for option in registry.endpoint_options():
        ports += [f"--{option}", "tcp:0:interface=127.0.0.1"]
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile", "", "testbed", *ports], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls = {}
    for line in proc.stdout:
        match = re.match(r"twisted-testbed: (\S+)\s+(\S+://\S+)", line)
        if match:
            urls[match.group(1)] = match.group(2)
        if line.strip() == "twisted-testbed: ready":
            break
    else:
        raise RuntimeError("the daemon exited before it was ready")
    # Keep reading its output so a chatty daemon never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, urls


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    args = parser.parse_args(argv)
    for tool in ("wrk", "dnsperf"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (Debian: apt-get install wrk dnsperf)")

    with tempfile.TemporaryDirectory() as workdir:
        queries = os.path.join(workdir, "queries")
        with open(queries, "w") as f:
            f.write("\n".join(NAMES) + "\n")
        daemon, urls = start_daemon(workdir)
        http = re.match(r"http://([^:]+):(\d+)", urls["HTTP"])
        dns = re.match(r"\w+://([^:]+):(\d+)", urls["DNS/UDP"])
        loads = []
        try:
            start_rss = rss_mib(daemon.pid)
            loads.append(subprocess.Popen(
                ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", f"http://{http[1]}:{http[2]}/soak"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            loads.append(subprocess.Popen(
                ["dnsperf", "-s", dns[1], "-p", dns[2], "-d", queries, "-l", str(args.duration), "-q", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            began = time.monotonic()
            print(f"{'t (s)':>6} {'RSS (MiB)':>10}")
            print(f"{0:>6.0f} {start_rss:>10.1f}", flush=True)
            samples = [start_rss]
            while any(p.poll() is None for p in loads):
                time.sleep(args.interval)  # a sampling period, not a wait for a condition
                samples.append(rss_mib(daemon.pid))
                print(f"{time.monotonic() - began:>6.0f} {samples[-1]:>10.1f}", flush=True)
            wrk_out, dnsperf_out = (p.communicate()[0] for p in loads)
        finally:
            for p in loads:
                if p.poll() is None:
                    p.kill()
            daemon.send_signal(signal.SIGINT)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
    requests = re.search(r"(\d+) requests in", wrk_out)
    answered = re.search(r"Queries completed:\s+(\d+)", dnsperf_out)
    half = samples[len(samples) // 2]
    print(f"HTTP requests: {requests[1] if requests else '?'}; DNS queries: {answered[1] if answered else '?'}; "
          f"RSS {samples[0]:.1f} -> {samples[-1]:.1f} MiB (at half time {half:.1f}, peak {max(samples):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
