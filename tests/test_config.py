"""The scenario model: defaults, TOML loading, and errors that name the file, key and expectation."""

import pytest

from testbed import config
from testbed.config import ScenarioError


def test_an_empty_scenario_has_every_default():
    scenario = config.from_dict({})
    assert scenario.seed == 0
    assert scenario.servers.http.listen == "tcp:0:interface=127.0.0.1"
    assert scenario.faults == []


def test_a_full_fault_rule_is_structured():
    scenario = config.from_dict({"seed": 7, "faults": [{
        "server": "http", "on": "request", "match": {"path": "/api/*"}, "after": 1, "times": 2,
        "probability": 0.5, "connection": 3, "direction": "both", "action": "reply", "status": 503,
        "headers": {"Retry-After": "1"}, "body": "busy"}]})
    rule = scenario.faults[0]
    assert (rule.on, rule.after, rule.times, rule.probability) == ("request", 1, 2, 0.5)
    assert rule.connection == [3]
    assert rule.params == {"status": 503, "headers": {"Retry-After": "1"}, "body": "busy"}


def test_a_wire_action_defaults_to_the_connect_stage():
    rule = config.from_dict({"faults": [{"server": "http", "action": "reset"}]}).faults[0]
    assert rule.on == "connect"
    assert rule.param("bytes") == 0


@pytest.mark.parametrize("data, path, expected", [
    ({"servers": {"htp": {}}}, "servers.htp", "a known key"),
    ({"seed": "x"}, "seed", "an integer"),
    ({"servers": {"http": {"listen": "bogus:1"}}}, "servers.http.listen", "a Twisted endpoint string"),
    ({"servers": {"http": {"listen": 8080}}}, "servers.http.listen", "a string"),
    ({"servers": {"smtp": {"tls": "yes"}}}, "servers.smtp.tls", "one of 'starttls', 'none', 'implicit'"),
    ({"faults": [{"server": "http", "action": "explode"}]}, "faults[0].action", "an action for http"),
    ({"faults": [{"server": "gopher", "action": "reset"}]}, "faults[0].server", "one of"),
    ({"faults": [{"server": "http", "action": "delay", "secs": 1}]}, "faults[0].secs", "a key of a http 'delay' fault"),
    ({"faults": [{"server": "http", "action": "delay", "seconds": "1"}]}, "faults[0].seconds", "a number"),
    ({"faults": [{"server": "http", "on": "RCPT", "action": "reset"}]}, "faults[0].on", "a stage of http"),
    ({"faults": [{"server": "http", "action": "reset", "probability": 2}]}, "faults[0].probability", "from 0 to 1"),
    ({"faults": [{"server": "http", "action": "reset", "match": {"colour": "red"}}]}, "faults[0].match.colour", "an attribute"),
    ({"faults": [{"server": "http", "on": "request", "action": "refuse"}]}, "faults[0].on", "'connect' for a 'refuse'"),
    ({"servers": {"http": {"static": "/no/such/dir"}}}, "servers.http.static", "an existing directory"),
    ({"servers": {"http": {"routes": [{"method": "GET"}]}}}, "servers.http.routes[0].path", "this key is required"),
    ({"faults": [{"server": "pop3", "on": "USER", "action": "wrong_size"}]}, "faults[0].on",
     "a stage where a pop3 'wrong_size' fault applies: LIST, RETR, STAT"),
    ({"faults": [{"server": "ftp", "on": "RETR", "action": "wrong_address"}]}, "faults[0].on", "EPSV, PASV"),
    ({"faults": [{"server": "imap", "on": "LOGIN", "action": "preauth"}]}, "faults[0].on", "connect"),
    ({"faults": [{"server": "dns", "on": "datagram", "action": "nodata"}]}, "faults[0].on", "query"),
    ({"servers": {"ftp": {"tls": "none", "require_tls": True}}}, "servers.ftp.require_tls", "tls = 'starttls'"),
    ({"servers": {"imap": {"auth": ["GSSAPI"]}}}, "servers.imap.auth", "PLAIN, LOGIN, CRAM-MD5"),
])
def test_bad_scenarios_name_the_source_key_and_expectation(data, path, expected):
    with pytest.raises(ScenarioError) as info:
        config.from_dict(data, source="scenario.toml")
    message = str(info.value)
    assert message.startswith(f"scenario.toml: {path}: expected"), message
    assert expected in message


def test_toml_files_load_and_resolve_paths_against_their_folder(tmp_path):
    (tmp_path / "site").mkdir()
    path = tmp_path / "s.toml"
    path.write_text('seed = 5\n[servers.http]\nstatic = "site"\n')
    scenario = config.load(str(path))
    assert scenario.seed == 5
    assert scenario.path(scenario.servers.http.static) == str(tmp_path / "site")


def test_a_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("seed = = 1\n")
    with pytest.raises(ScenarioError, match="broken.toml: expected valid TOML"):
        config.load(str(path))


def test_a_missing_file_is_named():
    with pytest.raises(ScenarioError, match="nope.toml: expected an existing scenario file"):
        config.load("nope.toml")


def test_shipped_fixtures_load():
    import pathlib

    for path in sorted(pathlib.Path(__file__).parent.parent.joinpath("fixtures").glob("*.toml")):
        config.load(str(path))


@pytest.mark.parametrize("versions, expected", [
    (["SSLv3"], "servers.smtp.tls_versions: expected versions among TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, got 'SSLv3'"),
    (["TLSv1", "TLSv1.3"], "servers.smtp.tls_versions: expected a contiguous range such as ['TLSv1', 'TLSv1.1'], "
                           "got ['TLSv1', 'TLSv1.3']"),
])
def test_tls_versions_are_known_names_in_one_range(versions, expected):
    with pytest.raises(ScenarioError) as error:
        config.from_dict({"servers": {"smtp": {"tls_versions": versions}}}, source="s.toml")
    assert str(error.value) == f"s.toml: {expected}"


def test_strip_starttls_applies_where_a_client_learns_of_starttls():
    rule = config.from_dict({"faults": [{"server": "pop3", "on": "CAPA", "action": "strip_starttls"}]}).faults[0]
    assert rule.action == "strip_starttls"
    with pytest.raises(ScenarioError, match=r"faults\[0\].*CAPA, connect"):
        config.from_dict({"faults": [{"server": "pop3", "on": "RETR", "action": "strip_starttls"}]})
