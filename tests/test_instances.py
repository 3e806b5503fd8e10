"""Server instances: two SMTP servers in one scenario, each with its own port, handle, faults and journal entries."""

import smtplib

import pytest

from testbed import config

SCENARIO = {
    "servers": {
        "inbound": {"protocol": "smtp", "tls": "none", "tls_listen": ""},
        "outbound": {"protocol": "smtp", "tls": "none", "tls_listen": "", "hostname": "out.testbed.test"},
        "http": {"enabled": False}, "pop3": {"enabled": False}, "imap": {"enabled": False},
        "ftp": {"enabled": False}, "dns": {"enabled": False},
    },
    "faults": [{"server": "outbound", "on": "RCPT", "action": "reply", "code": 451}],
}


@pytest.fixture
def testbed_scenario():
    return SCENARIO


def send(server, rcpt="alice@example.test"):
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        return client.sendmail("app@example.test", [rcpt], b"Subject: hi\r\n\r\nbody\r\n")


def test_each_instance_has_its_own_port_handle_faults_and_journal(testbed):
    inbound, outbound = testbed["inbound"], testbed["outbound"]
    assert {inbound.name, outbound.name} == {"inbound", "outbound"}
    assert len({inbound.port, outbound.port, testbed["smtp"].port}) == 3

    assert send(inbound) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(outbound)
    assert refused.value.recipients["alice@example.test"][0] == 451

    assert [m.rcpt_to for m in inbound.messages] == [["alice@example.test"]]
    assert outbound.messages == []
    assert [f["on"] for f in outbound.faults.fired()] == ["RCPT"]
    assert inbound.faults.fired() == []
    greeting = testbed.journal.query("reply", server="outbound", code=220)[0]
    assert greeting["message"].startswith("out.testbed.test")
    assert testbed.journal.query("stored", server="inbound")
    assert not testbed.journal.query("stored", server="outbound")


def test_a_runtime_fault_aims_at_one_instance(testbed):
    testbed["inbound"].faults.add(on="MAIL", action="reply", code=421)
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(testbed["inbound"])
    assert send(testbed["smtp"]) == {}
    rule = testbed.faults.rules[-1]
    assert (rule.server, rule.protocol) == ("inbound", "smtp")


def test_a_table_without_a_protocol_must_be_named_after_one():
    with pytest.raises(config.ScenarioError, match=r"servers\.mx: expected a known key \(a protocol: http, smtp"):
        config.from_dict({"servers": {"mx": {"listen": "tcp:0"}}})
    with pytest.raises(config.ScenarioError, match=r"servers\.mx\.protocol: expected a protocol: one of"):
        config.from_dict({"servers": {"mx": {"protocol": "smtpx"}}})
    with pytest.raises(config.ScenarioError, match=r"faults\[0\]\.server: expected one of .*outbound"):
        config.from_dict({"servers": {"outbound": {"protocol": "smtp"}}, "faults": [{"server": "mx", "action": "reset"}]})


def test_an_instance_takes_its_protocols_keys_and_faults():
    scenario = config.from_dict({"servers": {"outbound": {"protocol": "smtp", "max_recipients": 3}},
                                 "faults": [{"server": "outbound", "on": "RCPT", "action": "silence"}]})
    entry = scenario.servers["outbound"]
    assert (entry.protocol, entry.config.max_recipients) == ("smtp", 3)
    assert scenario.servers.smtp.max_recipients == 100
    with pytest.raises(config.ScenarioError, match=r"faults\[0\]\.on: expected a stage of outbound"):
        config.from_dict({"servers": {"outbound": {"protocol": "smtp"}},
                          "faults": [{"server": "outbound", "on": "RETR", "action": "reset"}]})
