"""FTP download throughput: the testbed's server against pyftpdlib and stock twisted.protocols.ftp, one 512 MiB RETR each.

Run by hand, never in CI: ``python bench/ftp.py [--size-mib 512] [--client curl|ftplib]``.
Each server runs in its own subprocess (this file with ``--serve KIND --root DIR``) on 127.0.0.1 with
an ephemeral port it prints on stdout; every row comes from the same run, compared with pyftpdlib.
"""

from __future__ import annotations

import os
import sys

# bench/ holds an http.py: drop this folder from sys.path before anything imports the standard
# library's ``http`` package (Twisted does).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("_servers", os.path.join(_HERE, "_servers.py"))
_servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_servers)

import argparse  # noqa: E402
import ftplib  # noqa: E402
import hashlib  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

NAME = "big.bin"

#: kind -> label in the table, in the order they are measured.
SERVERS = {
    "testbed": "testbed ftp (sendfile path)",
    "testbed-chunked": "testbed ftp, sendfile off (256 KiB FileSender)",
    "twisted-stock": "stock twisted FTP (16 KiB FileSender)",
    "pyftpdlib": "pyftpdlib (sendfile)",
}
BASELINE = "pyftpdlib"


# -- the server side (a subprocess) ------------------------------------------------------


def serve(kind: str, root: str) -> None:
    """Start one server on 127.0.0.1:0 serving ``root`` to anonymous, print its port, serve until killed."""
    if kind == "pyftpdlib":
        import logging

        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import FTPServer

        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
        authorizer = DummyAuthorizer()
        authorizer.add_anonymous(root)
        handler = FTPHandler
        handler.authorizer = authorizer
        handler.use_sendfile = True
        server = FTPServer(("127.0.0.1", 0), handler)
        print(server.socket.getsockname()[1], flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.serve_forever(handle_exit=False)
        return

    from twisted.internet import reactor  # the default: epoll on Linux

    if kind.startswith("testbed"):
        from testbed.harness import Testbed

        bed = Testbed({"servers": {"http": {"enabled": False},
                                   "ftp": {"enabled": True, "root": root, "anonymous": True}}}, reactor=reactor)

        def started(bed):
            if kind == "testbed-chunked":
                bed["ftp"].factory.sendfile = False
            print(bed["ftp"].port, flush=True)

        def failed(failure):
            print(failure.getTraceback(), file=sys.stderr, flush=True)
            reactor.stop()

        reactor.callWhenRunning(lambda: bed.start().addCallbacks(started, failed))
    else:
        from twisted.cred import checkers, portal
        from twisted.protocols import ftp

        factory = ftp.FTPFactory(portal.Portal(ftp.FTPRealm(root), [checkers.AllowAnonymousAccess()]))
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        reactor.callWhenRunning(lambda: print(port.getHost().port, flush=True))
    reactor.run()


# -- the driving side ------------------------------------------------------------------------


def start(kind: str, root: str, timeout: float = 20.0):
    """The subprocess serving ``kind`` and its port, read from its first line of stdout."""
    return _servers.start(os.path.abspath(__file__), kind, "--root", root, timeout=timeout)


stop = _servers.stop


def make_file(path: str, size_mib: int) -> str:
    """``size_mib`` MiB of non-repeating-per-MiB data, written in 1 MiB blocks; returns its sha256."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size_mib):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def download_curl(port: int, expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(["curl", "-sS", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download}",
                           f"ftp://127.0.0.1:{port}/{NAME}"], capture_output=True, text=True, timeout=320)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or int(float(done.stdout or 0)) != expect:
        raise RuntimeError(f"curl on port {port}: rc={done.returncode} got {done.stdout!r} {done.stderr[-500:]}")
    return elapsed


def download_ftplib(port: int, expect: int) -> float:
    client = ftplib.FTP(timeout=60)
    client.connect("127.0.0.1", port)
    client.login()
    got = [0]

    def count(chunk: bytes) -> None:
        got[0] += len(chunk)

    started = time.perf_counter()
    client.retrbinary(f"RETR {NAME}", count, blocksize=1 << 20)
    elapsed = time.perf_counter() - started
    client.quit()
    if got[0] != expect:
        raise RuntimeError(f"ftplib on port {port}: got {got[0]} bytes, expected {expect}")
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the file downloaded (default 512)")
    parser.add_argument("--client", choices=("curl", "ftplib"), default="curl" if shutil.which("curl") else "ftplib",
                        help="the downloading client (default curl when installed: a C client is no bottleneck)")
    parser.add_argument("--only", nargs="*", choices=sorted(SERVERS), help="measure only these servers")
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.root)
        return 0
    kinds = [k for k in SERVERS if not args.only or k in args.only]
    download = download_curl if args.client == "curl" else download_ftplib
    size = args.size_mib << 20

    load = os.getloadavg()[0]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ftp-") as root:
        print(f"writing {args.size_mib} MiB ...", file=sys.stderr, flush=True)
        make_file(os.path.join(root, NAME), args.size_mib)
        download_with = (lambda port: download(port, size))
        for kind in kinds:
            proc, port = start(kind, root)
            try:
                print(f"{SERVERS[kind]}: port {port}, downloading with {args.client} ...", file=sys.stderr, flush=True)
                elapsed = download_with(port)
                results[kind] = args.size_mib / elapsed
            finally:
                stop([proc])

    base = results.get(BASELINE)
    print(f"\nFTP RETR of {args.size_mib} MiB over loopback, client {args.client}, one run each "
          f"(load average before: {load:.2f}, {os.cpu_count()} CPUs)\n")
    print(f"{'server':<48} {'MiB/s':>9} {'vs ' + BASELINE:>14}")
    for kind, rate in results.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"{SERVERS[kind]:<48} {rate:>9.0f} {ratio:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
