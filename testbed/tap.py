"""The ``twistd testbed`` face: options, and the service that runs a scenario's servers.

The service is the ``Testbed`` itself: its servers listen in
``privilegedStartService``, so that a port in use or a bad scenario stops
twistd at once, with the reason, instead of a half-started daemon.
"""

from __future__ import annotations

import copy
import gc
import sys

from twisted.application import service
from twisted.python import usage

from testbed import config as config_module
from testbed import registry
from testbed.defaults import default_scenario_data

#: ``--OPTION ENDPOINT`` -> (server, scenario key it sets), from the registry's listeners.
ENDPOINT_OPTIONS = registry.endpoint_options()


class Options(usage.Options):
    synopsis = "[--config FILE] [--seed N] [--journal FILE] [--ca-out FILE] [--<server> ENDPOINT ...]"
    longdesc = (
        "Runs fake SMTP, POP3, IMAP, FTP, HTTP and DNS servers (plain and TLS) for client code to talk to, "
        "records what crosses them and injects faults on a seeded schedule. Without --config it runs the "
        "embedded default scenario on fixed loopback ports (HTTP 8080, HTTPS 8443, ...). "
        "ENDPOINT is a Twisted endpoint string such as tcp:9000:interface=127.0.0.1 (port 0: any free port); "
        "an empty string turns that listener off."
    )
    optParameters = [
        ["config", "c", None, "A TOML scenario file (default: the embedded default scenario)."],
        ["seed", "s", None, "Seed for every fault decision (default: the scenario's).", int],
        ["journal", "j", None, "Append every journal event to FILE as one JSON line, flushed per event."],
        ["ca-out", None, None, "Write the run's CA certificate (PEM) to FILE, for clients to trust."],
        ["control", None, None, "Endpoint of the control API (scenario key control.listen; the embedded "
                                "default scenario uses tcp:2580:interface=127.0.0.1)."],
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
            return control.listen
        import attrs

        config_module.check_control(config_module.Checker("--control"), attrs.evolve(control, listen=self["control"]),
                                    key="--control")
        return self["control"]

    def load_scenario(self) -> config_module.Scenario:
        if self["config"]:
            scenario = config_module.load(self["config"])
            data, source, base_dir = None, scenario.source, scenario.base_dir
        else:
            data, source, base_dir = default_scenario_data(), "<embedded default scenario>", "."
        overrides = {name: self[name] for name in ENDPOINT_OPTIONS if self[name] is not None}
        if data is None and not overrides:
            return scenario
        if data is None:
            import tomllib

            with open(self["config"], "rb") as f:
                data = tomllib.load(f)
        data = copy.deepcopy(data)
        for name, endpoint in overrides.items():
            server, key = ENDPOINT_OPTIONS[name]
            table = data.setdefault("servers", {}).setdefault(server, {})
            table[key] = endpoint
            if endpoint:
                table["enabled"] = True
        return config_module.from_dict(data, source=source, base_dir=base_dir)


class Announcer(service.Service):
    """The last child of the daemon's testbed: once every server listens, say where, then ``ready``."""

    def __init__(self, bed, options: Options):
        self.bed = bed
        self.options = options

    def startService(self):
        super().startService()
        options, bed = self.options, self.bed
        if options["ca-out"]:
            bed.tls.write_ca(options["ca-out"])
        out = sys.__stdout__
        out.write(f"twisted-testbed: scenario {options.scenario.source}, seed {bed.seed}\n")
        for line in bed.describe():
            out.write(f"twisted-testbed: {line}\n")
        if options["ca-out"]:
            out.write(f"twisted-testbed: CA certificate written to {options['ca-out']}\n")
        out.write("twisted-testbed: ready\n")  # scripts driving the daemon wait for this line
        out.flush()
        settle()


def settle() -> None:
    """Once every server listens: move start-up's objects out of the collector's sight.

    A daemon's full collections otherwise walk every function, type and module
    dict of Twisted and the testbed: 20-50 ms pauses, the p99 of a busy HTTP
    server. After ``gc.freeze()`` they took 5-8 ms and throughput rose 16%.
    """
    gc.freeze()


def makeService(options: Options) -> service.IService:
    """The testbed itself (a MultiService of its servers), announcing itself once it listens."""
    from testbed.harness import Testbed

    bed = Testbed(options.scenario, seed=options["seed"])
    if options["journal"]:
        bed.write_journal(options["journal"])
    if options.control_listen:
        from testbed import control

        control.attach(bed, options.control_listen)
    Announcer(bed, options).setServiceParent(bed)
    return bed
