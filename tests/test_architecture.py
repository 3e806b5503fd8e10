"""The shape of the package: layers, imports that install no reactor, the public facade, the registry's tables."""

from __future__ import annotations

import ast
import json
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import testbed
from testbed import registry

ROOT = pathlib.Path(testbed.__file__).parent
README = ROOT.parent / "README.md"

#: Module prefix -> layer, bottom (0) to top. A module may import its own layer and the ones below.
#: The most specific prefix wins; a module no prefix covers fails the test (place it here).
LAYERS = {
    "testbed.schema": 0, "testbed.journal": 0, "testbed.runtime": 0,
    "testbed.faults.rules": 1,
    "testbed.registry": 2, "testbed.config": 2, "testbed.defaults": 2, "testbed.servers.*.spec": 2,
    "testbed.faults": 3, "testbed.mail": 3, "testbed.tls": 3,
    "testbed.servers": 4,
    "testbed.harness": 5,
    "testbed.pytest_plugin": 6, "testbed.tap": 6, "testbed.testing": 6, "testbed.control": 6,
    "testbed.experiment": 6, "testbed.remote": 6, "testbed.cli": 6, "testbed.checks": 6,
    "testbed.strategies": 6,
}
LAYER_NAMES = ["model", "rules", "data (registry, config, specs)", "mechanisms (faults, mail, tls)",
               "servers", "harness", "faces"]

#: Modules that subclass a Twisted module which itself installs the default reactor at import
#: (twisted.mail.smtp and twisted.protocols.ftp do ``from twisted.internet import reactor``).
#: They are imported only when a server instance of theirs is built, after the reactor is chosen.
INSTALL_A_REACTOR_THROUGH_TWISTED = {
    "testbed.servers.smtp.server": "twisted.mail.smtp",
    "testbed.servers.pop3.server": "twisted.mail.pop3",
    "testbed.servers.ftp.server": "twisted.protocols.ftp",
    "testbed.servers.ftp.data": "twisted.protocols.ftp",
    "testbed.servers.ftp.fs": "twisted.protocols.ftp",
}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(testbed.__path__, "testbed."))


def _path(module: str) -> pathlib.Path:
    relative = pathlib.Path(*module.split(".")[1:])
    package = ROOT / relative / "__init__.py"
    return package if package.exists() else (ROOT / relative).with_suffix(".py")


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 4 and parts[:2] == ["testbed", "servers"] and parts[3] == "spec":
        return LAYERS["testbed.servers.*.spec"]
    for cut in range(len(parts), 1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def _all_imports(module: str) -> set[str]:
    """Every module name ``module`` imports, at the top or inside a function (``from a import b`` gives a and a.b)."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _imports(module: str) -> set[str]:
    """Every testbed module ``module`` imports."""
    return _all_imports(module) & set(_modules())


def test_every_module_has_a_layer():
    unplaced = [m for m in _modules() if m != "testbed" and _layer(m) is None]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module in _modules():
        low = _layer(module)
        for imported in _imports(module):
            high = _layer(imported)
            if low is not None and high is not None and high > low:
                upward.append(f"{module} ({LAYER_NAMES[low]}) imports {imported} ({LAYER_NAMES[high]})")
    assert not upward, "\n".join(upward)


def test_faults_and_journal_import_no_server_harness_or_face():
    for module in _modules():
        if module.startswith("testbed.faults") or module == "testbed.journal":
            bad = [m for m in _imports(module) if m.startswith(("testbed.servers", "testbed.harness"))
                   or (_layer(m) or 0) >= LAYERS["testbed.pytest_plugin"]]
            assert not bad, f"{module} imports {bad}"


def test_protocols_import_no_face():
    for module in _modules():
        if module.startswith("testbed.servers."):
            faces = [m for m in _imports(module) if _layer(m) == LAYERS["testbed.pytest_plugin"]]
            assert not faces, f"{module} imports {faces}"


def test_spec_modules_are_pure_data():
    allowed = {"__future__", "os", "typing", "attrs", "testbed.registry", "testbed.faults.rules", "testbed.schema"}
    for module in registry.SPEC_MODULES:
        tree = ast.parse(_path(module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name in allowed or (name.startswith("testbed.servers.") and name.endswith(".spec")), \
                    f"{module} imports {name}: a spec is pure data"


def test_importing_every_module_installs_no_reactor():
    """Each module in a fresh interpreter (one process for all, in dependency-free order)."""
    exempt = set(INSTALL_A_REACTOR_THROUGH_TWISTED)
    modules = [m for m in _modules() if m not in exempt]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    if 'twisted.internet.reactor' in sys.modules:\n"
            "        print(name); break\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing {result.stdout.strip()} installed a reactor"


@pytest.mark.parametrize("module,twisted_module", sorted(INSTALL_A_REACTOR_THROUGH_TWISTED.items()))
def test_the_exempt_modules_install_a_reactor_only_because_twisted_does(module, twisted_module):
    """If Twisted stops installing a reactor at import, this fails: then drop the exemption."""
    code = f"import sys, {twisted_module}; print('twisted.internet.reactor' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
    assert twisted_module in _all_imports(module)


def test_the_public_facade_is_pinned():
    assert testbed.__all__ == [
        "DNSQuery", "DNSServer", "EchoServer", "FTPServer", "FTPUpload", "FaultRule", "HTTPRequest", "HTTPServer",
        "IMAPServer", "POP3Server", "POP3Session", "Retrieval", "SMTPMessage", "SMTPServer", "Scenario",
        "ScenarioError", "Server", "StoredMessage", "Testbed", "WaitTimeout", "from_dict", "load",
    ]
    code = ("import sys, testbed\n"
            "names = [getattr(testbed, n) for n in testbed.__all__ if n in ('Testbed', 'load', 'ScenarioError', "
            "'WaitTimeout', 'Scenario', 'FaultRule', 'from_dict', 'Server', 'StoredMessage')]\n"
            "print('twisted.internet.reactor' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT.parent)
    assert result.stdout.strip() == "False", result.stderr
    for name in testbed.__all__:
        assert getattr(testbed, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        testbed.Nope  # noqa: B018


def test_every_handle_record_type_gives_json_ready_data():
    for name in ("SMTPMessage", "HTTPRequest", "DNSQuery", "FTPUpload", "POP3Session", "Retrieval",
                 "StoredMessage"):
        assert callable(getattr(getattr(testbed, name), "to_dict", None)), name


def test_the_catalog_comes_from_the_registry_and_is_json():
    catalog = registry.catalog()
    assert list(catalog) == list(registry.protocols())
    smtp = catalog["smtp"]
    assert "RCPT" in smtp["stages"] and "reply" in smtp["stages"]["RCPT"]["actions"]
    assert smtp["actions"]["reply"]["params"] == {"code": "int", "message": "str",
                                                  "then": ["none", "close", "reset", "stall"]}
    assert smtp["actions"]["reset"]["wire"] is True
    assert catalog["imap"]["stages"]["connect"]["actions"].count("preauth") == 1
    assert "preauth" not in catalog["imap"]["stages"]["FETCH"]["actions"]
    json.dumps(catalog)


def test_the_readme_fault_tables_are_the_registrys():
    text = README.read_text(encoding="utf-8")
    begin, end = registry.README_BEGIN, registry.README_END
    assert begin in text and end in text, "README.md lacks the generated fault tables block"
    block = text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"
    assert block == registry.fault_tables_markdown(), (
        "README.md's fault tables disagree with the registry; regenerate them with python3 -m testbed.registry README.md")


def test_each_protocol_is_one_package_with_a_spec_and_one_registry_line():
    for module in registry.SPEC_MODULES:
        package = module.rsplit(".", 1)[0]
        assert (_path(package).parent / "__init__.py").exists()
        spec = registry.protocols()[package.rsplit(".", 1)[1]]
        assert spec.server.startswith(package + ".")
