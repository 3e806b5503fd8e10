"""The journal: recording, querying, JSONL export and the per-event file sink."""

import json
import threading

from testbed.journal import FAULT, JSONLWriter, Journal


def test_events_carry_sequence_time_kind_server_and_connection():
    clock = iter([1.0, 2.0])
    journal = Journal(clock=lambda: next(clock))
    journal.record("command", "smtp", 3, command="MAIL")
    event = journal.record("reply", "smtp", 3, code=250)
    assert event == {"seq": 2, "t": 2.0, "kind": "reply", "server": "smtp", "conn": 3, "code": 250}


def test_query_filters_by_kind_server_connection_fields_and_sequence():
    journal = Journal()
    journal.record("command", "smtp", 1, command="MAIL")
    journal.record("command", "http", 1, command="request")
    journal.record(FAULT, "smtp", 2, fired=True)
    journal.record(FAULT, "smtp", 2, fired=False)
    assert [e["seq"] for e in journal.query("command")] == [1, 2]
    assert [e["seq"] for e in journal.query(server="smtp", conn=2)] == [3, 4]
    assert [e["seq"] for e in journal.faults()] == [3]
    assert [e["seq"] for e in journal.query(["command", FAULT], since=2)] == [3, 4]


def test_export_writes_json_lines_with_binary_payloads_as_base64(tmp_path):
    journal = Journal()
    journal.record("data", "http", 1, payload=b"GET / HTTP/1.1\r\n")
    journal.record("data", "dns", 1, payload=b"\xff\x00\x81")
    target = tmp_path / "j.jsonl"
    assert journal.export(str(target)) == 2
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines[0]["payload"] == "GET / HTTP/1.1\r\n"
    assert lines[1]["payload"] == {"base64": "/wCB"}


def test_the_file_sink_has_each_event_on_disk_as_soon_as_it_is_recorded(tmp_path):
    journal = Journal()
    path = tmp_path / "live.jsonl"
    writer = JSONLWriter(str(path))
    journal.add_sink(writer)
    journal.record("command", "smtp", 1, command="HELO")
    assert json.loads(path.read_text())["command"] == "HELO"  # read before close: flushed per event
    writer.close()


def test_clear_keeps_sequence_numbers_growing():
    journal = Journal()
    journal.record("a")
    journal.clear()
    assert len(journal) == 0
    assert journal.record("b")["seq"] == 2


def test_wait_returns_when_another_thread_records():
    journal = Journal()
    started = threading.Event()

    def producer():
        started.wait(5)
        journal.record("stored", "smtp", 1)

    thread = threading.Thread(target=producer)
    thread.start()
    started.set()
    found = journal.wait(lambda: journal.query("stored"), timeout=5)
    thread.join()
    assert len(found) == 1


def test_wait_gives_up_after_the_timeout():
    assert Journal().wait(lambda: [], timeout=0.05) == []
