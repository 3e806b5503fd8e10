"""Tests for testbed.mail.store: users, mailboxes, flags, folders and the Maildir persistence."""

from __future__ import annotations

import mailbox as pymailbox
import os
import threading

import pytest

from testbed.mail import store as mailstore
from testbed.mail.store import INBOX, InvalidNameError, MailStore, StoredMessage


def make_raw(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: sender@example.org\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\n{body}"
    ).encode()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "maildir"])
def store(request, tmp_path):
    maildir = None if request.param == "memory" else str(tmp_path / "mail")
    return MailStore(
        maildir=maildir,
        users={"Alice@Example.com": "secret", "bob@example.com": "hunter2"},
        clock=FakeClock(),
    )


def snapshot(store: MailStore) -> dict:
    """Everything that must survive a restart, in comparable form."""
    result = {}
    for user in sorted(store.users):
        boxes = {}
        for name in store.list_mailboxes(user):
            box = store.mailbox(user, name)
            boxes[name] = (
                box.uid_validity,
                box.uid_next,
                [(m.uid, m.raw, frozenset(m.flags), m.internal_date) for m in box.messages],
            )
        result[user] = (boxes, store.subscriptions(user))
    return result


# -- users -------------------------------------------------------------------


def test_users_and_passwords(store):
    assert store.users == {"alice@example.com": "secret", "bob@example.com": "hunter2"}
    assert store.has_user("ALICE@example.com")
    assert not store.has_user("carol@example.com")
    assert store.check_password("alice@EXAMPLE.com", "secret")
    assert not store.check_password("alice@example.com", "wrong")
    assert not store.check_password("carol@example.com", "secret")
    assert store.password("Alice@Example.com") == "secret"
    assert store.password("carol@example.com") is None

    store.add_user("Carol@Example.com", "pw")
    assert store.users["carol@example.com"] == "pw"
    assert store.list_mailboxes("carol@example.com") == [INBOX]
    store.users["mallory"] = "x"  # a copy: does not add a user
    assert not store.has_user("mallory")


def test_accept_unknown_on_creates_login_less_user():
    store = MailStore(accept_unknown=True, users={"alice@example.com": "secret"})
    assert store.resolve_recipient("Alice@Example.COM") == "alice@example.com"
    assert store.resolve_recipient("New@Example.com") == "new@example.com"
    assert store.has_user("new@example.com")
    assert store.password("new@example.com") is None
    assert not store.check_password("new@example.com", "")
    assert not store.check_password("new@example.com", None)
    store.deliver("other@example.com", make_raw("auto"))
    assert len(store.mailbox("other@example.com").messages) == 1


def test_accept_unknown_off_refuses():
    store = MailStore(accept_unknown=False, users={"alice@example.com": "secret"})
    assert store.resolve_recipient("alice@example.com") == "alice@example.com"
    assert store.resolve_recipient("stranger@example.com") is None
    assert not store.has_user("stranger@example.com")
    with pytest.raises(KeyError):
        store.deliver("stranger@example.com", make_raw("nope"))
    assert store.all_messages() == []


# -- delivery and reading ----------------------------------------------------


def test_deliver_and_read_back(store):
    raw = make_raw("Greetings")
    message = store.deliver("ALICE@example.com", raw)
    assert isinstance(message, StoredMessage)
    inbox = store.mailbox("alice@example.com")
    assert inbox.messages == [message]
    assert store.mailbox("alice@example.com", "inbox") is inbox
    assert message.raw == raw
    assert message.size == len(raw)
    assert message.uid == 1
    assert message.flags == set()
    assert message.internal_date == 1_700_000_000.0
    assert message.user == "alice@example.com"
    assert message.mailbox_name == INBOX
    assert message.recent
    assert message.message["Subject"] == "Greetings"
    assert message.message is message.message  # parsed once, cached
    assert message.message.get_content().strip() == "Hello."
    assert inbox.get(1) is message
    assert inbox.get(2) is None
    assert inbox.unseen_count == 1
    assert inbox.first_unseen == 1
    assert store.mailbox("bob@example.com").messages == []
    assert store.all_messages() == [message]


def test_deliver_with_flags_and_date(store):
    message = store.deliver("bob@example.com", make_raw("x"), flags=["\\seen", "$Label1"], internal_date=1234.5)
    assert message.flags == {"\\Seen", "$Label1"}
    assert message.internal_date == 1234.5
    assert store.mailbox("bob@example.com").unseen_count == 0


def test_all_messages_in_delivery_order_across_users(store):
    first = store.deliver("bob@example.com", make_raw("1"))
    second = store.deliver("alice@example.com", make_raw("2"))
    third = store.deliver("bob@example.com", make_raw("3"))
    store.mailbox("alice@example.com").append(make_raw("appended"))
    assert store.all_messages() == [first, second, third]
    store.mailbox("bob@example.com").delete([first.uid])
    assert store.all_messages() == [first, second, third]  # a journal of deliveries


def test_uids_strictly_increasing_and_never_reused(store):
    inbox = store.mailbox("alice@example.com")
    uids = [store.deliver("alice@example.com", make_raw(f"m{i}")).uid for i in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    assert inbox.uid_next == 6
    inbox.set_flags(5, ["\\Deleted"])
    inbox.expunge()
    assert store.deliver("alice@example.com", make_raw("later")).uid == 6
    assert [m.uid for m in inbox.messages] == [1, 2, 3, 4, 6]
    assert inbox.sequence_number(6) == 5
    assert inbox.sequence_number(5) is None
    assert inbox.sequence_number(1) == 1


def test_uid_validity_distinct_and_bumpable(store):
    store.create_mailbox("alice@example.com", "Sent")
    inbox = store.mailbox("alice@example.com")
    sent = store.mailbox("alice@example.com", "Sent")
    assert inbox.uid_validity >= 1
    assert sent.uid_validity != inbox.uid_validity
    store.deliver("alice@example.com", make_raw("a"))
    before = inbox.uid_validity
    new = inbox.bump_uid_validity()
    assert new == inbox.uid_validity > before
    assert [m.uid for m in inbox.messages] == [1]


# -- flags -------------------------------------------------------------------


def test_flags(store):
    inbox = store.mailbox("alice@example.com")
    message = store.deliver("alice@example.com", make_raw("f"))
    inbox.set_flags(1, ["\\SEEN", "\\Flagged", "\\Recent", "Work"])
    assert message.flags == {"\\Seen", "\\Flagged", "Work"}
    assert message.keywords == {"Work"}
    assert inbox.unseen_count == 0
    assert inbox.first_unseen is None
    inbox.add_flags(1, ["\\Answered"])
    inbox.remove_flags(1, ["\\Flagged", "Work"])
    assert message.flags == {"\\Seen", "\\Answered"}
    inbox.set_flags(1, "\\Draft")  # a single string is one flag, not its characters
    assert message.flags == {"\\Draft"}
    with pytest.raises(KeyError):
        inbox.set_flags(99, ["\\Seen"])
    with pytest.raises(ValueError):
        inbox.set_flags(1, ["two words"])
    with pytest.raises(ValueError):
        inbox.set_flags(1, [""])
    assert message.flags == {"\\Draft"}


def test_expunge_returns_descending_sequence_numbers(store):
    inbox = store.mailbox("alice@example.com")
    for i in range(5):
        store.deliver("alice@example.com", make_raw(f"m{i}"))
    inbox.set_flags(2, ["\\Deleted"])
    inbox.set_flags(4, ["\\Deleted", "\\Seen"])
    assert inbox.expunge() == [4, 2]
    assert [m.uid for m in inbox.messages] == [1, 3, 5]
    assert inbox.get(2) is None and inbox.get(4) is None
    assert inbox.expunge() == []


def test_delete_for_pop3(store):
    inbox = store.mailbox("bob@example.com")
    for i in range(4):
        store.deliver("bob@example.com", make_raw(f"m{i}"))
    inbox.delete([1, 3, 42])
    assert [m.uid for m in inbox.messages] == [2, 4]
    inbox.delete([])
    assert [m.uid for m in inbox.messages] == [2, 4]


def test_removal_does_not_mutate_list_seen_by_readers(store):
    inbox = store.mailbox("alice@example.com")
    for i in range(3):
        store.deliver("alice@example.com", make_raw(f"m{i}"))
    seen_by_reader = inbox.messages
    inbox.delete([2])
    assert [m.uid for m in seen_by_reader] == [1, 2, 3]
    assert [m.uid for m in inbox.messages] == [1, 3]


def test_messages_readable_from_another_thread(store):
    inbox = store.mailbox("alice@example.com")
    store.deliver("alice@example.com", make_raw("threaded"))
    found = []
    reader = threading.Thread(target=lambda: found.extend(m.raw for m in inbox.messages))
    reader.start()
    reader.join()
    assert found == [make_raw("threaded")]


# -- listeners ---------------------------------------------------------------


def test_listeners(store):
    inbox = store.mailbox("alice@example.com")
    events = []

    def listener(event, box, message):
        events.append((event, box, message.uid if message is not None else None, len(store.all_messages())))

    def broken(event, box, message):
        raise RuntimeError("listener bug must not break delivery")

    inbox.add_listener(broken)
    inbox.add_listener(listener)
    store.deliver("alice@example.com", make_raw("1"))
    inbox.append(make_raw("2"))
    inbox.set_flags(1, ["\\Deleted"])
    inbox.set_flags(1, ["\\Deleted"])  # no change, no event
    inbox.set_flags(2, ["\\Deleted"])
    inbox.expunge()
    assert events == [
        ("append", inbox, 1, 1),  # the delivery journal is updated before listeners run
        ("append", inbox, 2, 1),
        ("flags", inbox, 1, 1),
        ("flags", inbox, 2, 1),
        ("expunge", inbox, 2, 1),
        ("expunge", inbox, 1, 1),
    ]
    inbox.remove_listener(listener)
    inbox.remove_listener(listener)  # harmless
    store.deliver("alice@example.com", make_raw("3"))
    assert len(events) == 6
    store.mailbox("bob@example.com").add_listener(listener)
    store.deliver("alice@example.com", make_raw("4"))
    assert len(events) == 6


def test_listener_may_remove_itself(store):
    inbox = store.mailbox("alice@example.com")
    calls = []

    def once(event, box, message):
        calls.append(event)
        box.remove_listener(once)

    inbox.add_listener(once)
    store.deliver("alice@example.com", make_raw("1"))
    store.deliver("alice@example.com", make_raw("2"))
    assert calls == ["append"]


# -- folders and subscriptions -----------------------------------------------


def test_folders(store):
    user = "alice@example.com"
    assert store.list_mailboxes(user) == [INBOX]
    sent = store.create_mailbox(user, "Sent")
    assert sent.name == "Sent" and sent.user == user
    assert store.mailbox(user, "Sent") is sent
    with pytest.raises(ValueError):
        store.create_mailbox(user, "Sent")
    with pytest.raises(ValueError):
        store.create_mailbox(user, "inbox")
    store.create_mailbox(user, "Archive/2024/Q1")  # superiors are created too
    store.create_mailbox(user, "Trash/")  # trailing separator dropped
    store.create_mailbox(user, "dotted.name")
    assert store.list_mailboxes(user) == [
        INBOX,
        "Archive",
        "Archive/2024",
        "Archive/2024/Q1",
        "Sent",
        "Trash",
        "dotted.name",
    ]
    with pytest.raises(KeyError):
        store.mailbox(user, "Nope")
    with pytest.raises(KeyError):
        store.mailbox("nobody@example.com")
    with pytest.raises(KeyError):
        store.list_mailboxes("nobody@example.com")

    archived = store.mailbox(user, "Archive/2024/Q1").append(make_raw("old"), ["\\Seen"])
    store.rename_mailbox(user, "Archive", "Old/Stuff")
    assert store.list_mailboxes(user) == [
        INBOX,
        "Old",
        "Old/Stuff",
        "Old/Stuff/2024",
        "Old/Stuff/2024/Q1",
        "Sent",
        "Trash",
        "dotted.name",
    ]
    q1 = store.mailbox(user, "Old/Stuff/2024/Q1")
    assert q1.messages == [archived]
    assert archived.mailbox_name == "Old/Stuff/2024/Q1"
    with pytest.raises(ValueError):
        store.rename_mailbox(user, "Missing", "Other")
    with pytest.raises(ValueError):
        store.rename_mailbox(user, "Sent", "Trash")
    with pytest.raises(ValueError):
        store.rename_mailbox(user, "Sent", "Sent/Inner")
    with pytest.raises(ValueError):
        store.rename_mailbox(user, "Sent", "INBOX")

    store.delete_mailbox(user, "Sent")
    assert sent.deleted
    assert "Sent" not in store.list_mailboxes(user)
    with pytest.raises(ValueError):
        sent.append(make_raw("too late"))
    with pytest.raises(ValueError):
        store.delete_mailbox(user, "Sent")
    with pytest.raises(ValueError):
        store.delete_mailbox(user, "INBOX")
    with pytest.raises(ValueError):
        store.delete_mailbox(user, "Inbox")
    store.delete_mailbox(user, "Old")  # inferiors stay
    assert "Old/Stuff" in store.list_mailboxes(user)
    assert store.list_mailboxes("bob@example.com") == [INBOX]


def test_rename_inbox_moves_messages(store):
    user = "alice@example.com"
    store.deliver(user, make_raw("one"), flags=["\\Seen"], internal_date=10.0)
    store.deliver(user, make_raw("two"))
    inbox = store.mailbox(user)
    store.rename_mailbox(user, "INBOX", "Saved")
    assert inbox.messages == []
    assert store.mailbox(user) is inbox
    saved = store.mailbox(user, "Saved")
    assert [(m.uid, m.raw, m.flags) for m in saved.messages] == [
        (1, make_raw("one"), {"\\Seen"}),
        (2, make_raw("two"), set()),
    ]
    assert saved.messages[0].internal_date == 10.0
    assert store.deliver(user, make_raw("three")).uid == 3  # INBOX UIDs are not reused


def test_subscriptions(store):
    user = "alice@example.com"
    assert store.subscriptions(user) == [INBOX]
    store.create_mailbox(user, "Lists/python")
    store.subscribe(user, "Lists/python")
    store.subscribe(user, "Lists/python")
    store.subscribe(user, "NotYetCreated")
    assert store.subscriptions(user) == [INBOX, "Lists/python", "NotYetCreated"]
    store.rename_mailbox(user, "Lists", "Groups")
    assert store.subscriptions(user) == [INBOX, "Groups/python", "NotYetCreated"]
    store.unsubscribe(user, "NotYetCreated")
    store.unsubscribe(user, "NeverSubscribed")
    store.unsubscribe(user, "inbox")
    assert store.subscriptions(user) == ["Groups/python"]
    store.delete_mailbox(user, "Groups/python")
    assert store.subscriptions(user) == ["Groups/python"]  # RFC 3501: not removed unilaterally
    assert store.subscriptions("bob@example.com") == [INBOX]


# -- POP3 maildrop lock ------------------------------------------------------


def test_maildrop_lock(store):
    assert store.lock_maildrop("alice@example.com")
    assert not store.lock_maildrop("ALICE@example.com")
    assert store.lock_maildrop("bob@example.com")
    store.unlock_maildrop("alice@example.com")
    assert store.lock_maildrop("alice@example.com")
    store.unlock_maildrop("alice@example.com")
    store.unlock_maildrop("alice@example.com")  # harmless
    assert store.lock_maildrop("alice@example.com")


# -- reset -------------------------------------------------------------------


def test_reset(store):
    old_inbox = store.mailbox("alice@example.com")
    store.deliver("alice@example.com", make_raw("a"))
    store.deliver("stranger@example.com", make_raw("b"))
    store.create_mailbox("alice@example.com", "Sent")
    store.subscribe("alice@example.com", "Sent")
    store.add_user("alice@example.com", "changed")
    store.lock_maildrop("bob@example.com")
    store.reset()
    assert store.users == {"alice@example.com": "secret", "bob@example.com": "hunter2"}
    assert store.list_mailboxes("alice@example.com") == [INBOX]
    assert store.subscriptions("alice@example.com") == [INBOX]
    assert store.mailbox("alice@example.com").messages == []
    assert store.mailbox("alice@example.com") is not old_inbox
    assert old_inbox.deleted
    assert store.all_messages() == []
    assert store.lock_maildrop("bob@example.com")
    assert store.deliver("alice@example.com", make_raw("c")).uid == 1


def test_reset_empties_maildir_tree(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    store.deliver("alice@example.com", make_raw("a"))
    store.deliver("stranger@example.com", make_raw("b"))
    store.create_mailbox("alice@example.com", "Sent")
    (root / "README").write_text("not ours")
    store.reset()
    assert sorted(os.listdir(root)) == ["README", "alice@example.com"]
    alice = root / "alice@example.com"
    assert not (alice / ".Sent").exists()
    assert os.listdir(alice / "new") == [] and os.listdir(alice / "cur") == []
    reopened = MailStore(maildir=str(root))
    assert list(reopened.users) == ["alice@example.com"]
    assert reopened.mailbox("alice@example.com").messages == []
    assert reopened.list_mailboxes("alice@example.com") == [INBOX]


# -- Maildir persistence -----------------------------------------------------


def test_maildir_restart_round_trip(tmp_path):
    root = str(tmp_path / "mail")
    clock = FakeClock()
    store = MailStore(maildir=root, users={"alice@example.com": "pw"}, clock=clock)
    user = "alice@example.com"
    inbox = store.mailbox(user)
    for i in range(6):
        clock.now += 1.25
        store.deliver(user, make_raw(f"m{i}"))
    inbox.set_flags(1, ["\\Seen", "\\Answered", "Work", "$Important"])
    inbox.set_flags(2, ["\\Deleted"])
    inbox.set_flags(3, ["Later"])  # keyword only: stays in new/
    inbox.set_flags(5, ["\\Flagged", "\\Draft"])
    assert inbox.expunge() == [2]
    inbox.delete([6])
    store.deliver("stranger@example.com", make_raw("for a stranger"), flags=["\\Seen"])
    store.create_mailbox(user, "Archive/2024")
    store.create_mailbox(user, "a.b%c")
    sent = store.create_mailbox(user, "Sent")
    sent.append(make_raw("sent one"), ["\\Seen"], internal_date=42.0)
    sent.append(make_raw("sent two"))
    sent.set_flags(1, ["\\Seen", "\\Deleted"])
    sent.expunge()
    sent.bump_uid_validity()
    store.subscribe(user, "Sent")
    store.rename_mailbox(user, "Archive", "Old")
    before = snapshot(store)
    delivered_before = [(m.user, m.uid, m.raw) for m in store.all_messages() if m.mailbox_name == INBOX]

    reopened = MailStore(maildir=root, users={"alice@example.com": "pw"}, clock=FakeClock(0.0))
    assert snapshot(reopened) == before
    assert reopened.list_mailboxes(user) == [INBOX, "Old", "Old/2024", "Sent", "a.b%c"]
    assert reopened.users == {"alice@example.com": "pw", "stranger@example.com": None}
    assert reopened.mailbox(user).get(1).flags == {"\\Seen", "\\Answered", "Work", "$Important"}
    assert reopened.mailbox(user).get(3).recent  # still in new/
    assert not reopened.mailbox(user).get(1).recent
    # The journal after a restart: INBOX messages on disk, by internal date.
    survivors = [
        (m.user, m.uid, m.raw)
        for m in reopened.all_messages()
    ]
    assert sorted(survivors) == sorted(
        (u, uid, raw)
        for (u, uid, raw) in delivered_before
        if reopened.mailbox(u).get(uid) is not None
    )

    # New deliveries continue the UID sequence, and a third opening still agrees.
    assert reopened.deliver(user, make_raw("after restart")).uid == 7
    reopened.mailbox(user, "Old/2024").append(make_raw("archived"))
    again = snapshot(reopened)
    assert snapshot(MailStore(maildir=root, users={"alice@example.com": "pw"})) == again


def test_unconfigured_users_on_disk_come_back_without_password(tmp_path):
    root = str(tmp_path / "mail")
    store = MailStore(maildir=root, users={"alice@example.com": "pw"})
    store.deliver("alice@example.com", make_raw("a"))
    reopened = MailStore(maildir=root, accept_unknown=False)
    assert reopened.has_user("alice@example.com")
    assert reopened.password("alice@example.com") is None
    assert not reopened.check_password("alice@example.com", "pw")
    assert reopened.resolve_recipient("alice@example.com") == "alice@example.com"
    assert len(reopened.mailbox("alice@example.com").messages) == 1


def test_foreign_messages_get_new_uids_on_load(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    store.deliver("alice@example.com", make_raw("ours 1"))
    store.deliver("alice@example.com", make_raw("ours 2"))
    validity = store.mailbox("alice@example.com").uid_validity

    other_tool = pymailbox.Maildir(str(root / "alice@example.com"), create=False)
    foreign = pymailbox.MaildirMessage(make_raw("dropped in"))
    foreign.set_flags("S")
    foreign.set_subdir("cur")
    other_tool.add(foreign)
    other_tool.add(pymailbox.MaildirMessage(make_raw("dropped in, unread")))

    inbox = MailStore(maildir=str(root)).mailbox("alice@example.com")
    assert inbox.uid_validity == validity
    assert [m.uid for m in inbox.messages] == [1, 2, 3, 4]
    assert inbox.get(1).raw == make_raw("ours 1")
    assert inbox.get(2).raw == make_raw("ours 2")
    # (mailbox.Maildir writes "\n" line endings, so compare parsed subjects)
    by_subject = {m.message["Subject"]: m for m in inbox.messages[2:]}
    assert set(by_subject) == {"dropped in", "dropped in, unread"}
    assert by_subject["dropped in"].flags == {"\\Seen"}
    assert by_subject["dropped in, unread"].flags == set()
    assert by_subject["dropped in, unread"].recent
    assert inbox.uid_next == 5
    # ... and they keep those UIDs from now on.
    assert [(m.uid, m.raw) for m in MailStore(maildir=str(root)).mailbox("alice@example.com").messages] == [
        (m.uid, m.raw) for m in inbox.messages
    ]


def test_messages_removed_by_other_tools_disappear(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    first = store.deliver("alice@example.com", make_raw("1"))
    store.deliver("alice@example.com", make_raw("2"))
    os.unlink(first.path)
    inbox = MailStore(maildir=str(root)).mailbox("alice@example.com")
    assert [m.uid for m in inbox.messages] == [2]
    assert inbox.uid_next == 3


def test_readable_by_python_mailbox_maildir(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    user = "alice@example.com"
    store.deliver(user, make_raw("unread"))
    store.deliver(user, make_raw("read"))
    store.mailbox(user).set_flags(2, ["\\Seen", "\\Flagged", "\\Answered", "Keyword"])
    store.create_mailbox(user, "Lists/python")
    store.mailbox(user, "Lists/python").append(make_raw("list mail"), ["\\Deleted", "\\Draft"])

    md = pymailbox.Maildir(str(root / user), factory=None, create=False)
    messages = {m["Subject"]: m for m in md}
    assert set(messages) == {"unread", "read"}
    assert messages["unread"].get_subdir() == "new"
    assert messages["unread"].get_flags() == ""
    assert messages["read"].get_subdir() == "cur"
    assert messages["read"].get_flags() == "FRS"
    key = next(k for k in md.keys() if md[k]["Subject"] == "read")
    assert md.get_bytes(key) == make_raw("read")

    assert sorted(md.list_folders()) == ["Lists", "Lists.python"]
    folder = md.get_folder("Lists.python")
    (folder_message,) = list(folder)
    assert folder_message["Subject"] == "list mail"
    assert folder_message.get_flags() == "DT"
    assert (root / user / ".Lists.python" / "maildirfolder").exists()


def test_delivered_message_is_on_disk_when_deliver_returns(tmp_path, monkeypatch):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"}, clock=FakeClock(1_600_000_000.0))
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(mailstore.os, "fsync", recording_fsync)
    raw = make_raw("durable", body="x" * 10000 + "\r\n")
    message = store.deliver("alice@example.com", raw)

    path = message.path
    assert path is not None and os.path.isfile(path)
    assert os.path.dirname(path) == str(root / "alice@example.com" / "new")
    with open(path, "rb") as f:
        assert f.read() == raw
    assert os.listdir(root / "alice@example.com" / "tmp") == []
    assert os.path.getmtime(path) == pytest.approx(1_600_000_000.0)
    file_stat = os.stat(path)
    new_dir_stat = os.stat(root / "alice@example.com" / "new")
    assert (file_stat.st_dev, file_stat.st_ino) in synced
    if os.name != "nt":
        assert (new_dir_stat.st_dev, new_dir_stat.st_ino) in synced

    flagged = store.deliver("alice@example.com", make_raw("seen already"), flags=["\\Seen"])
    assert os.path.dirname(flagged.path) == str(root / "alice@example.com" / "cur")
    assert flagged.path.endswith(":2,S")
    with open(flagged.path, "rb") as f:
        assert f.read() == make_raw("seen already")

    appended = store.mailbox("alice@example.com").append(make_raw("appended"))
    assert os.path.isfile(appended.path)


def test_flag_changes_rename_files(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    inbox = store.mailbox("alice@example.com")
    message = store.deliver("alice@example.com", make_raw("x"))
    old_path = message.path
    inbox.set_flags(message.uid, ["\\Seen", "\\Deleted"])
    assert not os.path.exists(old_path)
    assert message.path.endswith(":2,ST")
    assert os.path.basename(os.path.dirname(message.path)) == "cur"
    inbox.set_flags(message.uid, [])
    assert message.path.endswith(":2,")
    inbox.set_flags(message.uid, ["\\Deleted"])
    path = message.path
    inbox.expunge()
    assert not os.path.exists(path)
    assert os.listdir(root / "alice@example.com" / "cur") == []


def test_unknown_info_letters_are_preserved(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    message = store.deliver("alice@example.com", make_raw("x"), flags=["\\Seen"])
    os.rename(message.path, message.path.replace(":2,S", ":2,PS"))  # "passed", set by another tool
    inbox = MailStore(maildir=str(root)).mailbox("alice@example.com")
    inbox.set_flags(1, ["\\Seen", "\\Flagged"])
    assert inbox.get(1).path.endswith(":2,FPS")


def test_uid_list_survives_torn_tail_and_compaction(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    inbox = store.mailbox("alice@example.com")
    for i in range(5):
        store.deliver("alice@example.com", make_raw(f"m{i}"))
    for _ in range(60):  # many keyword changes: the uid list gets compacted along the way
        inbox.set_flags(3, ["Toggle"])
        inbox.set_flags(3, [])
    inbox.set_flags(4, ["Keep"])
    uidlist = root / "alice@example.com" / mailstore.UIDLIST_NAME
    assert len(uidlist.read_text().splitlines()) < 100
    with open(uidlist, "a") as f:
        f.write("9\tgarbage-without-newline")
    reopened = MailStore(maildir=str(root)).mailbox("alice@example.com")
    assert [m.uid for m in reopened.messages] == [1, 2, 3, 4, 5]
    assert reopened.get(4).flags == {"Keep"}
    assert reopened.get(3).flags == set()
    assert reopened.uid_next == 6


def test_uid_validity_persists_and_recreated_mailbox_differs(tmp_path):
    root = str(tmp_path / "mail")
    clock = FakeClock(1000.0)
    store = MailStore(maildir=root, users={"alice@example.com": "pw"}, clock=clock)
    trash = store.create_mailbox("alice@example.com", "Trash")
    validity = trash.uid_validity
    store.delete_mailbox("alice@example.com", "Trash")
    recreated = store.create_mailbox("alice@example.com", "Trash")
    assert recreated.uid_validity > validity
    reopened = MailStore(maildir=root, clock=FakeClock(0.0))
    assert reopened.mailbox("alice@example.com", "Trash").uid_validity == recreated.uid_validity


# -- names that could escape the root -----------------------------------------

BAD_MAILBOX_NAMES = [
    "",
    "/",
    "/etc",
    "..",
    "../escape",
    "a/../../b",
    "a..b",
    "a//b",
    "a\x00b",
    "a\\b",
    "..\\x",
    "line\nbreak",
]
BAD_USER_NAMES = [
    "",
    ".",
    "..",
    "../evil@example.com",
    "a/b@example.com",
    "/abs@example.com",
    ".hidden@example.com",
    "nul\x00@example.com",
    "back\\slash@example.com",
    "x" * 300,
]


@pytest.mark.parametrize("name", BAD_MAILBOX_NAMES)
def test_bad_mailbox_names_rejected(tmp_path, name):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    user = "alice@example.com"
    with pytest.raises(ValueError):
        store.create_mailbox(user, name)
    with pytest.raises(ValueError):
        store.rename_mailbox(user, INBOX, name)
    with pytest.raises(ValueError):
        store.delete_mailbox(user, name)
    with pytest.raises(ValueError):
        store.subscribe(user, name)
    with pytest.raises(KeyError):  # InvalidNameError is both
        store.mailbox(user, name)
    with pytest.raises(InvalidNameError):
        store.mailbox(user, name)
    assert store.list_mailboxes(user) == [INBOX]
    assert sorted(os.listdir(tmp_path)) == ["mail"]
    assert sorted(os.listdir(root)) == ["alice@example.com"]


def test_user_names_past_the_cache_bound_are_still_checked():
    bound = mailstore._user_key.cache_info().maxsize
    names = [f"U{i}@x.test" for i in range(bound + 2)] + ["U0@x.test", f"U{bound + 1}@x.test"]
    assert [mailstore.normalize_user(n) for n in names] == [n.lower() for n in names]
    assert mailstore._user_key.cache_info().currsize == bound
    for _ in range(2):
        with pytest.raises(InvalidNameError):
            mailstore.normalize_user("../a@x.test")


@pytest.mark.parametrize("name", BAD_USER_NAMES)
def test_bad_user_names_rejected(tmp_path, name):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), accept_unknown=True)
    with pytest.raises(ValueError):
        store.add_user(name, "pw")
    assert store.resolve_recipient(name) is None
    with pytest.raises(KeyError):
        store.deliver(name, make_raw("x"))
    assert not store.has_user(name)
    assert store.password(name) is None
    with pytest.raises(KeyError):
        store.mailbox(name)
    assert sorted(os.listdir(tmp_path)) == ["mail"]
    assert os.listdir(root) == []
    with pytest.raises(ValueError):
        MailStore(users={name: "pw"})


def test_odd_but_safe_names_stay_inside_root(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    for name in [".hidden", "a.b", "100%", "x/.y", "Ünïcödé", "INBOX/Sub"]:
        box = store.create_mailbox("alice@example.com", name)
        assert os.path.dirname(box.path) == str(root / "alice@example.com")
    assert sorted(os.listdir(tmp_path)) == ["mail"]
    reopened = MailStore(maildir=str(root))
    assert reopened.list_mailboxes("alice@example.com") == store.list_mailboxes("alice@example.com")
    assert "INBOX/Sub" in reopened.list_mailboxes("alice@example.com")
    assert reopened.mailbox("alice@example.com", "inbox/Sub").name == "INBOX/Sub"


def test_no_reactor_or_twisted_mail_import():
    import subprocess
    import sys

    code = (
        "import sys, testbed.mail.store; "
        "bad = [m for m in sys.modules if m.startswith(('twisted.mail', 'twisted.internet.reactor'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_uid_of_removed_last_message_is_not_reused_after_restart(tmp_path):
    root = str(tmp_path / "mail")
    store = MailStore(maildir=root, users={"alice@example.com": "pw"})
    for i in range(3):
        store.deliver("alice@example.com", make_raw(f"m{i}"))
    store.mailbox("alice@example.com").delete([2, 3])
    reopened = MailStore(maildir=root)
    assert reopened.mailbox("alice@example.com").uid_next == 4
    assert reopened.deliver("alice@example.com", make_raw("next")).uid == 4
    assert MailStore(maildir=root).mailbox("alice@example.com").uid_next == 5


def test_deleted_folder_leaves_nothing_on_disk(tmp_path):
    root = tmp_path / "mail"
    store = MailStore(maildir=str(root), users={"alice@example.com": "pw"})
    store.create_mailbox("alice@example.com", "Junk").append(make_raw("spam"))
    store.delete_mailbox("alice@example.com", "Junk")
    user_dir = root / "alice@example.com"
    assert not any(entry.startswith(".") for entry in os.listdir(user_dir))
    assert os.listdir(user_dir / "tmp") == []
    assert MailStore(maildir=str(root)).list_mailboxes("alice@example.com") == [INBOX]


def test_clearing_recent_moves_maildir_files_from_new_to_cur_and_survives_a_restart(tmp_path):
    store = MailStore(maildir=str(tmp_path), users={"alice@example.test": "pw"})
    first = store.deliver("alice@example.test", b"Subject: one\r\n\r\n1\r\n")
    second = store.deliver("alice@example.test", b"Subject: two\r\n\r\n2\r\n")
    box = store.mailbox("alice@example.test")
    box.clear_recent([first.uid])
    assert not first.recent and second.recent
    assert os.path.dirname(first.path).endswith("cur") and os.path.dirname(second.path).endswith("new")
    reopened = MailStore(maildir=str(tmp_path), users={"alice@example.test": "pw"}).mailbox("alice@example.test")
    assert [m.recent for m in reopened.messages] == [False, True]
    assert [m.raw for m in reopened.messages] == [first.raw, second.raw]


@pytest.mark.parametrize("on_disk", [False, True])
def test_remove_user_forgets_password_mailboxes_and_maildir(tmp_path, on_disk):
    store = MailStore(maildir=tmp_path / "md" if on_disk else None, users={"carol@example.test": "pw"})
    store.deliver("carol@example.test", b"Subject: x\r\n\r\nbody\r\n")
    store.create_mailbox("carol@example.test", "Archive")
    store.remove_user("Carol@example.test")
    assert not store.has_user("carol@example.test")
    with pytest.raises(KeyError):
        store.mailbox("carol@example.test")
    if on_disk:
        assert not (tmp_path / "md" / "carol@example.test").exists()
    with pytest.raises(KeyError):
        store.remove_user("carol@example.test")
    store.reset()
    assert store.has_user("carol@example.test") and store.mailbox("carol@example.test").messages == []
