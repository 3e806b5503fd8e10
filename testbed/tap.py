"""The ``twistd testbed`` face: options, and the service that runs a scenario's servers.

The service is the ``Testbed`` itself: its servers listen in
``privilegedStartService``, so that a port in use or a bad scenario stops
twistd at once, with one line naming the port and who asked for it, instead
of a half-started daemon.
"""

from __future__ import annotations

import gc
import html
import json
import os
import sys

from twisted.application import service
from twisted.python import usage

from testbed import config as config_module
from testbed import registry
from testbed.defaults import default_scenario_data, with_daemon_ports
from testbed.harness import Testbed
from testbed.servers.base import ListenError

#: ``--OPTION ENDPOINT`` -> (server, scenario key it sets), from the registry's listeners.
ENDPOINT_OPTIONS = registry.endpoint_options()


class Options(usage.Options):
    synopsis = ("[--config FILE] [--seed N] [--journal FILE] [--ca-out FILE] [--ports-out FILE] "
                "[--<server> ENDPOINT ...]")
    longdesc = (
        "Runs fake SMTP, POP3, IMAP, FTP, HTTP and DNS servers (plain and TLS) for client code to talk to, "
        "records what crosses them and injects faults on a seeded schedule. Without --config it runs the "
        "embedded default scenario; with it, the file's. Either way a listener nobody sets is on its "
        "well-known loopback port (HTTP 8080, HTTPS 8443, ...). "
        "ENDPOINT is a Twisted endpoint string such as tcp:9000:interface=127.0.0.1 (port 0: any free port); "
        "an empty string turns that listener off."
    )
    optParameters = [
        ["config", "c", None, "A TOML scenario file (default: the embedded default scenario)."],
        ["seed", "s", None, "Seed for every fault decision (default: the scenario's).", int],
        ["journal", "j", None, "Append every journal event to FILE as one JSON line, flushed per event."],
        ["ca-out", None, None, "Write the run's CA certificate (PEM) to FILE, for clients to trust "
                               "(default: a fresh temporary file, named in the ready output)."],
        ["ports-out", None, None, "Once listening, write every listener (server, protocol, label, host, port, "
                                  "url, tls), the CA file and the seed to FILE as JSON."],
        ["control", None, None, "Endpoint of the control API and dashboard (scenario key control.listen; the "
                                "embedded default scenario uses tcp:2580:interface=127.0.0.1, a file none unless "
                                "it sets one; an empty string turns it off)."],
    ] + [
        [name, None, None, f"Listen endpoint of the {server.upper()} server's "
                           + ("implicit-TLS listener" if key == "tls_listen" else "plain listener")
                           + f" (scenario key servers.{server}.{key})."]
        for name, (server, key) in ENDPOINT_OPTIONS.items()
    ]

    def postOptions(self):
        from twisted.internet.endpoints import serverFromString

        for name in ENDPOINT_OPTIONS:
            endpoint = self[name]
            if endpoint:
                try:
                    serverFromString(None, endpoint)
                except Exception as e:
                    raise usage.UsageError(f"--{name}: expected a Twisted endpoint string such as "
                                           f"tcp:9000:interface=127.0.0.1, got {endpoint!r} ({e})")
        try:
            self.scenario = self.load_scenario()
            self.control_listen = self.control_endpoint()
        except config_module.ScenarioError as e:
            raise usage.UsageError(str(e))

    def control_endpoint(self) -> str:
        """Where the control API listens ("" for nowhere): --control, else the scenario's [control] listen."""
        control = self.scenario.control
        if self["control"] is None:
            self.origins.setdefault(("control", "listen"), f"control.listen in {self['config']}")
            return control.listen
        import attrs

        config_module.check_control(config_module.Checker("--control"), attrs.evolve(control, listen=self["control"]),
                                    key="--control")
        self.origins[("control", "listen")] = "--control"
        return self["control"]

    def load_scenario(self) -> config_module.Scenario:
        """The scenario with its well-known ports filled in and the endpoint options applied.

        Also sets ``self.origins``: (server, key) -> who asked for that
        listener, for the one-line error when its port is taken.
        """
        origins: dict[tuple[str, str], str] = {}
        if self["config"]:
            source = self["config"]
            data, filled = with_daemon_ports(config_module.read(source))
            base_dir = os.path.dirname(os.path.abspath(source))
            servers = data.get("servers") if isinstance(data.get("servers"), dict) else {}
            for name, table in servers.items():
                for key in table if isinstance(table, dict) else ():
                    origins[(name, key)] = f"servers.{name}.{key} in {source}"
        else:
            data, source, base_dir = default_scenario_data(), "<embedded default scenario>", "."
            filled = [(name, key) for name, table in data["servers"].items() for key in table] + [("control", "listen")]
        options = {(server, key): name for name, (server, key) in ENDPOINT_OPTIONS.items()}
        options[("control", "listen")] = "control"
        for server, key in filled:
            if (server, key) in options:
                table = "" if server == "control" else "servers."
                origins[(server, key)] = (f"the well-known port of {table}{server}.{key} "
                                          f"(choose another with --{options[server, key]} ENDPOINT)")
        for name, endpoint in ((name, self[name]) for name in ENDPOINT_OPTIONS if self[name] is not None):
            server, key = ENDPOINT_OPTIONS[name]
            table = data.setdefault("servers", {}).setdefault(server, {})
            table[key] = endpoint
            if endpoint:
                table["enabled"] = True
            origins[(server, key)] = f"--{name}"
        self.origins = origins
        return config_module.from_dict(data, source=source, base_dir=base_dir)


class ListenFailed(Exception):
    """The daemon could not bind a listener; printed as its one line, without a traceback.

    twistd lets an exception from ``privilegedStartService`` reach the
    interpreter once it has removed its PID file (and told a daemonizing
    parent); an ``Exception``, not ``SystemExit``, keeps that clean-up, and
    the hook below prints it as the line it is.
    """


def _one_line_hook(previous):
    def hook(kind, value, tb):
        if issubclass(kind, ListenFailed):
            sys.__stderr__.write(f"{value}\n")
            sys.__stderr__.flush()
        else:
            previous(kind, value, tb)

    return hook


class Announcer(service.Service):
    """The last child of the daemon's testbed: once every server listens, say where, then ``ready``."""

    def __init__(self, bed, options: Options):
        self.bed = bed
        self.options = options

    def startService(self):
        super().startService()
        options, bed = self.options, self.bed
        ca = bed.tls.write_ca(options["ca-out"]) if options["ca-out"] else bed.ca_path
        index = index_page(bed, ca)
        for server in bed.servers.values():
            if server.context.protocol == "http":
                server.index = index
        if options["ports-out"]:
            write_ports(options["ports-out"], bed, ca)
        out = sys.__stdout__
        out.write(f"twisted-testbed: scenario {options.scenario.source}, seed {bed.seed}\n")
        for line in bed.describe():
            out.write(f"twisted-testbed: {line}\n")
        # Clients verify every TLS listener against this file: curl --cacert, cafile=...
        out.write(f"twisted-testbed: CA      {ca}\n")
        out.write("twisted-testbed: ready\n")  # scripts driving the daemon wait for this line
        out.flush()
        settle()


def write_ports(path: str, bed, ca: str) -> None:
    """``--ports-out``: the listeners, the CA file and the seed as one JSON object, written whole."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump({"listeners": bed.listener_records(), "ca": os.path.abspath(ca), "seed": bed.seed}, f, indent=2)
        f.write("\n")
    os.replace(partial, path)  # a script polling for the file never reads half of it


def index_page(bed, ca: str) -> bytes:
    """What ``GET /`` answers on the daemon's HTTP servers when no route or static file does: the servers."""
    rows = "".join(f"<tr><td>{html.escape(r['server'])}</td><td>{html.escape(r['label'])}</td>"
                   f"<td>{html.escape(r['url'])}</td></tr>\n" for r in bed.listener_records())
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>twisted-testbed</title></head><body>\n"
            "<h1>twisted-testbed</h1>\n<table>\n<tr><th>server</th><th>listener</th><th>address</th></tr>\n"
            f"{rows}</table>\n<p>CA certificate: {html.escape(os.path.abspath(ca))}</p>\n"
            "</body></html>\n").encode("utf-8")


class Daemon(Testbed):
    """The daemon's testbed: a port that cannot bind is one line naming who asked for it."""

    def __init__(self, options: Options):
        super().__init__(options.scenario, seed=options["seed"])
        self.options = options

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except ListenError as e:
            origin = self.options.origins.get((e.server, e.key), f"servers.{e.server}.{e.key}")
            sys.excepthook = _one_line_hook(sys.excepthook)
            raise ListenFailed(f"twisted-testbed: cannot listen on {e.address} ({e.reason}), "
                               f"asked for by {origin}") from None


def settle() -> None:
    """Once every server listens: move start-up's objects out of the collector's sight.

    A daemon's full collections otherwise walk every function, type and module
    dict of Twisted and the testbed: 20-50 ms pauses, the p99 of a busy HTTP
    server. After ``gc.freeze()`` they took 5-8 ms and throughput rose 16%.
    """
    gc.freeze()


def makeService(options: Options) -> service.IService:
    """The testbed itself (a MultiService of its servers), announcing itself once it listens."""
    bed = Daemon(options)
    if options["journal"]:
        bed.write_journal(options["journal"])
    if options.control_listen:
        from testbed import control

        control.attach(bed, options.control_listen)
    Announcer(bed, options).setServiceParent(bed)
    return bed
