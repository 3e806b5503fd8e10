"""Messages per second accepted over smtplib: the testbed's SMTP server against plain twisted.mail and aiosmtpd.

Run by hand, never in CI:  python bench/smtp.py [--messages 2000]

Each server runs in its own subprocess on 127.0.0.1 (ephemeral port); the
clients are smtplib, one session sending N messages, then 4 sessions in 4
processes sending N/4 each, in interleaved rounds (each figure is the median
of its rounds). One run, same message, ratios printed.
"""

from __future__ import annotations

import os
import sys

# bench/ holds http.py and friends, which shadow the standard library when bench/ is sys.path[0]:
# put the repository root there instead (it is also where this checkout's testbed package lives).
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path[0] = os.path.dirname(_HERE)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import multiprocessing  # noqa: E402
import smtplib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

MESSAGE = (
    "From: Sender <sender@example.test>\r\n"
    "To: Alice <alice@example.test>\r\n"
    "Subject: benchmark message\r\n"
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <bench@example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    + "".join(f"Line {i:02d} of the body, long enough to look like prose in a real message.\r\n" for i in range(16))
).encode()

SERVERS = ("testbed", "twisted", "aiosmtpd")

_spec = importlib.util.spec_from_file_location("_servers", os.path.join(_HERE, "_servers.py"))
_servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_servers)


# -- the servers (each runs in its own process) ----------------------------------------------


def serve_testbed() -> None:
    from twisted.internet import reactor

    from testbed.harness import Testbed

    bed = Testbed({"servers": {"smtp": {"enabled": True, "tls": "none", "tls_listen": ""},
                               "http": {"enabled": False}}}, reactor=reactor)

    def started(_):
        print("PORT", bed["smtp"].port, flush=True)

    def failed(failure):
        failure.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: bed.start().addCallbacks(started, failed))
    reactor.run()


def serve_twisted() -> None:
    """twisted.mail's ESMTP as it comes, with the smallest delivery that keeps the message."""
    from twisted.internet import reactor
    from twisted.mail import smtp
    from zope.interface import implementer

    received = []

    @implementer(smtp.IMessage)
    class Message:
        def __init__(self):
            self.lines = []

        def lineReceived(self, line):
            self.lines.append(line)

        def eomReceived(self):
            received.append(b"\r\n".join(self.lines))
            return smtp.defer.succeed(None)

        def connectionLost(self):
            pass

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo, origin, recipients):
            return None

        def validateFrom(self, helo, origin):
            return origin

        def validateTo(self, user):
            return Message

    class Factory(smtp.SMTPFactory):
        protocol = smtp.ESMTP

        def buildProtocol(self, addr):
            p = super().buildProtocol(addr)
            p.delivery = Delivery()
            return p

    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


def serve_aiosmtpd() -> None:
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content)
            return "250 OK"

    with socket.socket() as s:  # aiosmtpd's Controller connects to its own port to check it: give it a real one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print("PORT", port, flush=True)
    try:
        sys.stdin.read()  # until the bench closes our stdin
    finally:
        controller.stop()


# -- the clients --------------------------------------------------------------------------------


def send(port: int, count: int, barrier=None) -> tuple[float, float]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        if barrier is not None:
            barrier.wait()
        start = time.monotonic()
        for _ in range(count):
            client.sendmail("sender@example.test", ["alice@example.test"], MESSAGE)
        return start, time.monotonic()


_BARRIER = None


def _init(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _pool_send(args) -> tuple[float, float]:
    port, count = args
    return send(port, count, _BARRIER)


def parallel(port: int, total: int, sessions: int) -> float:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(sessions)
    with context.Pool(sessions, initializer=_init, initargs=(barrier,)) as pool:
        spans = pool.map(_pool_send, [(port, total // sessions)] * sessions)
    return (total // sessions * sessions) / (max(end for _, end in spans) - min(start for start, _ in spans))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def start(kind: str) -> tuple[subprocess.Popen, int]:
    """A server subprocess of ``kind`` and its port, warmed up with 100 messages."""
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().split()
    if not line or line[0] != "PORT":
        stop(server)
        raise RuntimeError(f"{kind} server did not start")
    port = int(line[1])
    send(port, 100)
    return server, port


def stop(server: subprocess.Popen) -> None:
    server.stdin.close()
    server.terminate()
    server.wait(10)


def measure(server: subprocess.Popen, port: int, messages: int, sessions: int) -> tuple[float, float, float]:
    """One round against a running server: msgs/s of one session, of ``sessions`` at once, CPU µs/msg of the first."""
    cpu = cpu_seconds(server.pid)
    start_time, end = send(port, messages)
    cpu = cpu_seconds(server.pid) - cpu
    return messages / (end - start_time), parallel(port, messages, sessions), cpu / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per case (default 2000)")
    parser.add_argument("--sessions", type=int, default=4, help="parallel sessions in the second case (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every server (default 3)")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        {"testbed": serve_testbed, "twisted": serve_twisted, "aiosmtpd": serve_aiosmtpd}[args.serve]()
        return
    servers = {}
    try:
        for kind in SERVERS:
            servers[kind] = start(kind)
        rounds = _servers.interleaved(SERVERS, args.rounds,
                                      lambda kind, _: measure(*servers[kind], args.messages, args.sessions))
    finally:
        for server, _ in servers.values():
            stop(server)
    # Each figure is the median of its rounds.
    results = {kind: [_servers.median(column) for column in zip(*runs)] for kind, runs in rounds.items()}
    print(f"{args.messages} messages of {len(MESSAGE)} bytes per case, smtplib clients, msgs/s, "
          f"median of {max(1, args.rounds)} interleaved rounds (one run)")
    print(f"{'case':<22}{'testbed':>10}{'twisted':>10}{'aiosmtpd':>10}{'tb/twisted':>12}{'tb/aiosmtpd':>13}")
    for i, case in enumerate(("1 session", f"{args.sessions} parallel sessions")):
        tb, tw, aio = (results[k][i] for k in SERVERS)
        print(f"{case:<22}{tb:>10.0f}{tw:>10.0f}{aio:>10.0f}{tb / tw:>12.2f}{tb / aio:>13.2f}")
    tb, tw, aio = (results[k][2] for k in SERVERS)
    print(f"{'server CPU us/msg':<22}{tb:>10.0f}{tw:>10.0f}{aio:>10.0f}{tb / tw:>12.2f}{tb / aio:>13.2f}"
          "   (1 session; lower is better)")
    print(f"({os.cpu_count()} CPUs: clients and server share them)")


if __name__ == "__main__":
    main()
