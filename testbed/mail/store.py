"""Users, mailboxes and messages shared by the fake SMTP, POP3 and IMAP servers (as in GreenMail).
Kept in memory, or durably in a real Maildir++ tree that survives restarts and stays readable by other Maildir tools."""

from __future__ import annotations

import bisect
import datetime
import email
import email.policy
import functools
import hmac
import itertools
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from typing import Any

import attrs

__all__ = [
    "INBOX",
    "SEPARATOR",
    "SYSTEM_FLAGS",
    "InvalidNameError",
    "MailStore",
    "Mailbox",
    "StoredMessage",
    "normalize_flags",
    "normalize_mailbox_name",
    "normalize_user",
]

log = logging.getLogger(__name__)

INBOX = "INBOX"
#: Hierarchy separator of mailbox names in this API (on disk Maildir++ uses ".").
SEPARATOR = "/"
#: Per-folder file mapping Maildir file names to UIDs (plus UIDVALIDITY, UIDNEXT, keywords, dates).
UIDLIST_NAME = "testbed-uidlist"
#: Per-user file listing subscribed mailbox names, one a line (the name Dovecot uses).
SUBSCRIPTIONS_NAME = "subscriptions"

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_FLAG_TO_LETTER = {
    "\\Seen": "S",
    "\\Answered": "R",
    "\\Flagged": "F",
    "\\Deleted": "T",
    "\\Draft": "D",
}
_LETTER_TO_FLAG = {letter: flag for flag, letter in _FLAG_TO_LETTER.items()}
_CANONICAL_FLAG = {flag.lower(): flag for flag in SYSTEM_FLAGS}

_UIDLIST_MAGIC = "testbed-uidlist 1"
_MAX_NAME_BYTES = 255
_FORBIDDEN_CHARS = ("\x00", "\r", "\n", "\\")
_name_counter = itertools.count(1)
_deleted_counter = itertools.count(1)


class InvalidNameError(ValueError, KeyError):
    """A user or mailbox name that is malformed or could escape the maildir root.

    A ``ValueError`` as documented, and also a ``KeyError`` so that code looking a
    mailbox up with ``except KeyError`` treats a bad name like a missing mailbox.
    """

    __str__ = BaseException.__str__


# ---------------------------------------------------------------------------
# Names and flags


def normalize_user(address: str) -> str:
    """Return the user key for ``address`` (lower-cased), or raise `InvalidNameError`.

    Also the user's directory name under the maildir root, so anything that could
    escape it or hide in it ("/", "\\", "..", a leading ".", NUL, CR, LF) is refused.
    A name a client logs in with goes through `testbed.mail.credentials.login_user`
    first, which documents the whole user-name rule.
    """
    if not isinstance(address, str) or not address:
        raise InvalidNameError(f"invalid user name {address!r}")
    return _user_key(address)


@functools.lru_cache(maxsize=1024)
def _user_key(address: str) -> str:
    """`normalize_user` for a non-empty str, remembered per exact string (a refusal is not remembered).

    Every SMTP recipient and every login asks again for the same few names.
    """
    user = address.lower()
    if (
        user.startswith(".")
        or ".." in user
        or "/" in user
        or any(c in user for c in _FORBIDDEN_CHARS)
        or (os.sep in user)
        or (os.altsep is not None and os.altsep in user)
    ):
        raise InvalidNameError(f"invalid user name {address!r}")
    try:
        encoded = user.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid user name {address!r}") from None
    if len(encoded) > _MAX_NAME_BYTES:
        raise InvalidNameError(f"user name too long: {address!r}")
    return user


def normalize_mailbox_name(name: str) -> str:
    """Return the canonical form of mailbox ``name`` or raise `InvalidNameError`.

    "INBOX" is case-insensitive (also as the first level of a hierarchy: "inbox/x" is
    "INBOX/x"); one trailing "/" is dropped (IMAP CREATE "foo/"). Refused: empty names or
    levels, a leading "/", "..", NUL, CR, LF, backslash, and names too long for one
    Maildir++ directory entry.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"invalid mailbox name {name!r}")
    if len(name) > 1 and name.endswith(SEPARATOR):
        name = name[:-1]
    if (
        not name
        or name.startswith(SEPARATOR)
        or ".." in name
        or any(c in name for c in _FORBIDDEN_CHARS)
        or (os.sep != SEPARATOR and os.sep in name)
        or (os.altsep is not None and os.altsep != SEPARATOR and os.altsep in name)
    ):
        raise InvalidNameError(f"invalid mailbox name {name!r}")
    parts = name.split(SEPARATOR)
    if any(not part for part in parts):
        raise InvalidNameError(f"invalid mailbox name {name!r} (empty hierarchy level)")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    name = SEPARATOR.join(parts)
    if name != INBOX:
        try:
            encoded = _folder_dirname(name).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidNameError(f"invalid mailbox name {name!r}") from None
        if len(encoded) > _MAX_NAME_BYTES:
            raise InvalidNameError(f"mailbox name too long: {name!r}")
    return name


def normalize_flags(flags: Iterable[str]) -> set[str]:
    """Return IMAP ``flags`` as a set: system flags in canonical case, "\\Recent" dropped.

    ``\\Recent`` is session state (see `StoredMessage.recent`), not a stored flag.
    Flags must be non-empty strings without whitespace or control characters.
    """
    if isinstance(flags, str):
        flags = (flags,)
    result: set[str] = set()
    for flag in flags:
        if (
            not isinstance(flag, str)
            or not flag
            or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in flag)
        ):
            raise ValueError(f"invalid flag {flag!r}")
        lowered = flag.lower()
        if lowered == "\\recent":
            continue
        result.add(_CANONICAL_FLAG.get(lowered, flag))
    return result


def _escape_level(level: str) -> str:
    return level.replace("%", "%25").replace(".", "%2E")


_UNESCAPE = re.compile(r"%(25|2[Ee])")


def _unescape_level(level: str) -> str:
    return _UNESCAPE.sub(lambda m: "%" if m.group(1) == "25" else ".", level)


def _folder_dirname(name: str) -> str:
    """Maildir++ directory for mailbox ``name``: "A/b.c" -> ".A.b%2Ec"."""
    return "." + ".".join(_escape_level(level) for level in name.split(SEPARATOR))


def _name_from_dirname(dirname: str) -> str | None:
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        name = SEPARATOR.join(_unescape_level(level) for level in dirname[1:].split("."))
        name = normalize_mailbox_name(name)
    except ValueError:
        return None
    if name == INBOX:
        return None
    return name


def _letters(flags: Iterable[str], extra: str = "") -> str:
    """Maildir info letters for ``flags``, in ASCII order as the Maildir spec requires."""
    letters = {_FLAG_TO_LETTER[f] for f in flags if f in _FLAG_TO_LETTER}
    letters.update(extra)
    return "".join(sorted(letters))


def _split_info(filename: str) -> tuple[str, str | None]:
    base, sep, info = filename.partition(":")
    return base, (info if sep else None)


def _as_timestamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value)


def _sort_key_mailbox_names(name: str) -> tuple[int, str]:
    return (0 if name == INBOX else 1, name)


# ---------------------------------------------------------------------------
# Small durable file helpers


def _fsync_dir(path: str) -> None:
    if os.name == "nt":  # directories cannot be opened (or need not be synced) there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _atomic_write(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: write a temporary file, fsync, os.replace, fsync the dir."""
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        _write_all(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(directory)


def _append_durably(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        _write_all(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _hostname() -> str:
    host = socket.gethostname() or "localhost"
    return host.replace("/", r"\057").replace(":", r"\072")


def _unique_basename(size: int) -> str:
    """A Maildir unique name (time.MusecPpidQn.host) with the Maildir++ ",S=size" suffix."""
    now = time.time()
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_name_counter)}.{_hostname()},S={size}"


def _remove_tree(path: str, trash_dir: str) -> None:
    """Make ``path`` vanish atomically (rename into ``trash_dir``), then delete it."""
    trash = os.path.join(trash_dir, f".testbed-deleted.{os.getpid()}.{next(_deleted_counter)}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(path))
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------
# Messages


@attrs.define(eq=False)
class StoredMessage:
    """One message in one mailbox. Compared by identity.

    Treat ``flags`` as read-only and change it through `Mailbox.set_flags` (which also
    persists it and notifies listeners); it is replaced, never mutated in place, so other
    threads can read it safely. ``recent`` is the IMAP \\Recent state: True for messages
    delivered/appended since the store started (or found in new/ on load); the IMAP server
    may clear it.
    """

    uid: int
    raw: bytes = attrs.field(repr=lambda raw: f"<{len(raw)} bytes>")
    flags: set[str] = attrs.field(factory=set, converter=set)
    internal_date: float = attrs.field(factory=time.time)
    mailbox_name: str = INBOX
    user: str = ""
    recent: bool = False
    # Maildir bookkeeping: file name relative to the folder ("new/..." or "cur/...:2,FS").
    _filename: str | None = attrs.field(default=None, init=False, repr=False)
    # Info letters found on disk that have no IMAP meaning here (e.g. "P"), kept on rename.
    _extra_letters: str = attrs.field(default="", init=False, repr=False)
    _mailbox: Mailbox | None = attrs.field(default=None, init=False, repr=False)
    _parsed: EmailMessage | None = attrs.field(default=None, init=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def message(self) -> EmailMessage:
        """The message parsed with ``email.policy.default`` (lazily, then cached)."""
        if self._parsed is None:
            self._parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        return self._parsed

    @property
    def path(self) -> str | None:
        """Absolute path of the message file with a maildir, else None."""
        mailbox = self._mailbox
        if mailbox is None or mailbox.path is None or self._filename is None:
            return None
        return os.path.join(mailbox.path, self._filename)

    @property
    def keywords(self) -> set[str]:
        """The flags that are not IMAP system flags."""
        return {f for f in self.flags if f not in _FLAG_TO_LETTER}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: where it is, its flags and date, with the parsed message (headers, bodies, attachments, raw)."""
        from testbed.mail.render import message_dict

        return {"uid": self.uid, "user": self.user, "mailbox": self.mailbox_name, "flags": sorted(self.flags),
                "internal_date": self.internal_date, "recent": self.recent, **message_dict(self.message, self.raw)}


# ---------------------------------------------------------------------------
# Mailboxes


Listener = Callable[[str, "Mailbox", "StoredMessage | None"], Any]


class Mailbox:
    """One folder of one user: messages ordered by UID (IMAP sequence number = index + 1).

    Get these from `MailStore.mailbox`; do not construct them directly. ``messages`` is
    appended to in place and replaced (copy on write) on removal, so another thread can
    read it at any time. With a maildir ``path`` is the folder's Maildir directory.
    """

    def __init__(
        self,
        store: MailStore,
        user: str,
        name: str,
        path: str | None = None,
        uid_validity: int = 1,
        uid_next: int = 1,
    ) -> None:
        self._store = store
        self.user = user
        self.name = name
        self.path = path
        self.uid_validity = uid_validity
        self.uid_next = uid_next
        self.messages: list[StoredMessage] = []
        self._by_uid: dict[int, StoredMessage] = {}
        self._listeners: list[Listener] = []
        #: True once the mailbox was deleted (or the store reset); it then refuses appends.
        self.deleted = False
        self._uidlist_records = 0

    def __repr__(self) -> str:
        return (
            f"<Mailbox {self.user}:{self.name} uidvalidity={self.uid_validity} "
            f"uidnext={self.uid_next} messages={len(self.messages)}>"
        )

    # -- reading

    def get(self, uid: int) -> StoredMessage | None:
        return self._by_uid.get(uid)

    def sequence_number(self, uid: int) -> int | None:
        """IMAP sequence number (1-based) of the message with ``uid``, or None."""
        messages = self.messages
        index = bisect.bisect_left(messages, uid, key=lambda m: m.uid)
        if index < len(messages) and messages[index].uid == uid:
            return index + 1
        return None

    @property
    def unseen_count(self) -> int:
        return sum(1 for m in self.messages if "\\Seen" not in m.flags)

    @property
    def recent_count(self) -> int:
        return sum(1 for m in self.messages if m.recent)

    @property
    def first_unseen(self) -> int | None:
        """Sequence number of the first message without \\Seen (IMAP SELECT [UNSEEN n])."""
        for index, message in enumerate(self.messages):
            if "\\Seen" not in message.flags:
                return index + 1
        return None

    # -- changing

    def append(self, raw: bytes, flags: Iterable[str] = (), internal_date: float | None = None) -> StoredMessage:
        """Add a message with the next UID; with a maildir it is durable before this returns.

        ``internal_date`` is a POSIX timestamp (or an aware datetime); default: the store's clock.
        """
        message = self._add(raw, flags, internal_date)
        self._notify("append", message)
        return message

    def set_flags(self, uid: int, flags: Iterable[str]) -> None:
        """Replace the flags of message ``uid`` (KeyError if there is none).

        System flags go into the Maildir file name (":2,DFRST"), keywords into the uid list.
        Notifies "flags" listeners when something changed.
        """
        message = self._by_uid.get(uid)
        if message is None:
            raise KeyError(uid)
        new_flags = normalize_flags(flags)
        if new_flags == message.flags:
            return
        if self.path is not None:
            self._persist_flags(message, new_flags)
        message.flags = new_flags
        self._compact_if_large()
        self._notify("flags", message)

    def clear_recent(self, uids: Iterable[int]) -> None:
        """A read-write session has seen these messages: they are no longer \\Recent.

        With a maildir their files move from new/ to cur/, the Maildir way of
        saying "seen by a client", so the state survives a restart.
        """
        moved = False
        for uid in uids:
            message = self._by_uid.get(uid)
            if message is None or not message.recent:
                continue
            message.recent = False
            if self.path is not None and message._filename is not None:
                sub, name = os.path.split(message._filename)
                if sub == "new":
                    base, _ = _split_info(name)
                    relative = os.path.join("cur", f"{base}:2,{_letters(message.flags, message._extra_letters)}")
                    os.rename(os.path.join(self.path, message._filename), os.path.join(self.path, relative))
                    message._filename = relative
                    moved = True
        if moved:
            _fsync_dir(os.path.join(self.path, "cur"))
            _fsync_dir(os.path.join(self.path, "new"))

    def add_flags(self, uid: int, flags: Iterable[str]) -> None:
        """IMAP STORE +FLAGS."""
        message = self._by_uid.get(uid)
        if message is None:
            raise KeyError(uid)
        self.set_flags(uid, message.flags | normalize_flags(flags))

    def remove_flags(self, uid: int, flags: Iterable[str]) -> None:
        """IMAP STORE -FLAGS."""
        message = self._by_uid.get(uid)
        if message is None:
            raise KeyError(uid)
        self.set_flags(uid, message.flags - normalize_flags(flags))

    def expunge(self) -> list[int]:
        """Remove the messages flagged \\Deleted.

        Returns their sequence numbers (as they were before the expunge) in DESCENDING
        order, which is also a valid order for untagged "* n EXPUNGE" responses since
        removing a higher number first does not renumber the lower ones. Listeners get one
        "expunge" event per removed message, in the same order, after all were removed.
        """
        doomed = [(index + 1, m) for index, m in enumerate(self.messages) if "\\Deleted" in m.flags]
        if not doomed:
            return []
        self._remove([m for _, m in doomed])
        doomed.reverse()
        for _, message in doomed:
            self._notify("expunge", message)
        return [seq for seq, _ in doomed]

    def delete(self, uids: Iterable[int]) -> None:
        """Remove messages ``uids`` whatever their flags (POP3 QUIT); unknown UIDs are ignored.

        Listeners get "expunge" events in descending UID order.
        """
        wanted = set(uids)
        doomed = [m for m in self.messages if m.uid in wanted]
        if not doomed:
            return
        self._remove(doomed)
        for message in reversed(doomed):
            self._notify("expunge", message)

    def bump_uid_validity(self) -> int:
        """Fault hook: give the mailbox a new, larger UIDVALIDITY (UIDs are kept). Returns it."""
        self.uid_validity = self._store._next_uid_validity(at_least=self.uid_validity + 1)
        if self.path is not None:
            self._write_uidlist()
        return self.uid_validity

    # -- listeners

    def add_listener(self, callback: Listener) -> None:
        """``callback(event, mailbox, message_or_None)`` on "append", "expunge" and "flags"."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        """Remove ``callback`` (no error if it is not registered)."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    def _notify(self, event: str, message: StoredMessage | None) -> None:
        for callback in tuple(self._listeners):
            try:
                callback(event, self, message)
            except Exception:
                log.exception("mailbox listener %r failed on %r", callback, event)

    # -- internals

    def _add(self, raw: bytes, flags: Iterable[str], internal_date: float | None) -> StoredMessage:
        if self.deleted:
            raise ValueError(f"mailbox {self.name!r} of {self.user!r} was deleted")
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError(f"message must be bytes, not {type(raw).__name__}")
        raw = bytes(raw)
        flag_set = normalize_flags(flags)
        date = _as_timestamp(self._store.clock() if internal_date is None else internal_date)
        message = StoredMessage(
            uid=self.uid_next,
            raw=raw,
            flags=flag_set,
            internal_date=date,
            mailbox_name=self.name,
            user=self.user,
            recent=True,
        )
        message._mailbox = self
        if self.path is not None:
            message._filename = self._write_message_file(raw, flag_set, date)
            self._log_records([self._uidlist_line(message)])
        self.uid_next = message.uid + 1
        self.messages.append(message)
        self._by_uid[message.uid] = message
        self._compact_if_large()
        return message

    def _remove(self, doomed: list[StoredMessage]) -> None:
        if self.path is not None:
            touched = set()
            for message in doomed:
                assert message._filename is not None
                try:
                    os.unlink(os.path.join(self.path, message._filename))
                except FileNotFoundError:
                    pass
                touched.add(os.path.dirname(message._filename))
            for sub in touched:
                _fsync_dir(os.path.join(self.path, sub))
            self._log_records([f"-\t{m.uid}\n" for m in doomed])
        gone = {id(m) for m in doomed}
        self.messages = [m for m in self.messages if id(m) not in gone]
        self._by_uid = {m.uid: m for m in self.messages}
        self._compact_if_large()

    def _mark_deleted(self) -> None:
        self.deleted = True

    # Maildir

    def _write_message_file(self, raw: bytes, flags: set[str], date: float) -> str:
        assert self.path is not None
        basename = _unique_basename(len(raw))
        tmp = os.path.join(self.path, "tmp", basename)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            _write_all(fd, raw)
            try:
                if os.utime in os.supports_fd:
                    os.utime(fd, (date, date))
                else:  # pragma: no cover
                    os.utime(tmp, (date, date))
            except (OSError, OverflowError, ValueError):
                pass  # the mtime is a courtesy to other tools; the uid list holds the date
            os.fsync(fd)
        finally:
            os.close(fd)
        letters = _letters(flags)
        relative = os.path.join("cur", f"{basename}:2,{letters}") if letters else os.path.join("new", basename)
        try:
            os.rename(tmp, os.path.join(self.path, relative))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.join(self.path, os.path.dirname(relative)))
        return relative

    def _persist_flags(self, message: StoredMessage, new_flags: set[str]) -> None:
        assert self.path is not None and message._filename is not None
        old_relative = message._filename
        old_sub, old_name = os.path.split(old_relative)
        base, _ = _split_info(old_name)
        letters = _letters(new_flags, message._extra_letters)
        if letters or old_sub == "cur":
            new_relative = os.path.join("cur", f"{base}:2,{letters}")
        else:
            new_relative = os.path.join("new", base)
        if new_relative != old_relative:
            os.rename(os.path.join(self.path, old_relative), os.path.join(self.path, new_relative))
            message._filename = new_relative
            _fsync_dir(os.path.join(self.path, os.path.dirname(new_relative)))
            if os.path.dirname(new_relative) != old_sub:
                _fsync_dir(os.path.join(self.path, old_sub))
        new_keywords = {f for f in new_flags if f not in _FLAG_TO_LETTER}
        if new_keywords != message.keywords:
            self._log_records([self._uidlist_line(message, new_flags)])

    @staticmethod
    def _uidlist_line(message: StoredMessage, flags: set[str] | None = None) -> str:
        assert message._filename is not None
        base, _ = _split_info(os.path.basename(message._filename))
        flags = message.flags if flags is None else flags
        keywords = " ".join(sorted(f for f in flags if f not in _FLAG_TO_LETTER))
        return f"{message.uid}\t{base}\t{message.internal_date!r}\t{keywords}\n"

    def _uidlist_path(self) -> str:
        assert self.path is not None
        return os.path.join(self.path, UIDLIST_NAME)

    def _write_uidlist(self) -> None:
        """Rewrite (compact) the uid list atomically: header, then one record per message."""
        lines = [f"{_UIDLIST_MAGIC}\n", f"uidvalidity {self.uid_validity}\n", f"uidnext {self.uid_next}\n"]
        lines.extend(self._uidlist_line(m) for m in self.messages)
        _atomic_write(self._uidlist_path(), "".join(lines))
        self._uidlist_records = len(self.messages)

    def _log_records(self, records: list[str]) -> None:
        """Append records to the uid list durably (later records for a UID win, "-" removes).

        Appending keeps delivery O(1); `_compact_if_large` rewrites the file atomically
        once it holds many stale records, a torn last line (no newline) is ignored on
        load, and loading always rewrites the file.
        """
        _append_durably(self._uidlist_path(), "".join(records))
        self._uidlist_records += len(records)

    def _compact_if_large(self) -> None:
        if self.path is not None and self._uidlist_records > 2 * len(self.messages) + 64:
            self._write_uidlist()

    def _load(self) -> None:
        """Read the folder's Maildir: known files keep their UIDs, new ones get fresh UIDs."""
        assert self.path is not None
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        state = _read_uidlist(self._uidlist_path())
        if state is None:
            uid_validity = self._store._next_uid_validity()
            uid_next = 1
            records: dict[str, tuple[int, float | None, set[str]]] = {}
        else:
            uid_validity, uid_next, records = state
            self._store._note_uid_validity(uid_validity)

        known: list[tuple[int, str, str, float | None, set[str]]] = []
        unknown: list[tuple[float, str, str]] = []
        seen_bases: set[str] = set()
        for sub in ("new", "cur"):
            directory = os.path.join(self.path, sub)
            for filename in sorted(os.listdir(directory)):
                if filename.startswith(".") or "\n" in filename or "\t" in filename:
                    continue
                full = os.path.join(directory, filename)
                if not os.path.isfile(full):
                    continue
                base, _ = _split_info(filename)
                if base in seen_bases:
                    log.warning("ignoring duplicate Maildir message %s", full)
                    continue
                seen_bases.add(base)
                record = records.get(base)
                if record is not None:
                    uid, date, keywords = record
                    known.append((uid, sub, filename, date, keywords))
                else:
                    unknown.append((os.stat(full).st_mtime, sub, filename))

        if known:
            uid_next = max(uid_next, max(k[0] for k in known) + 1)
        known.sort(key=lambda entry: entry[0])
        unknown.sort()  # by mtime, then name
        entries = list(known)
        for _mtime, sub, filename in unknown:
            entries.append((uid_next, sub, filename, None, set()))
            uid_next += 1

        messages = []
        for uid, sub, filename, date, keywords in entries:
            full = os.path.join(self.path, sub, filename)
            with open(full, "rb") as f:
                raw = f.read()
            if date is None:
                date = os.stat(full).st_mtime
            flags = set(keywords)
            extra = ""
            _, info = _split_info(filename)
            if sub == "cur" and info is not None and info.startswith("2,"):
                for letter in info[2:]:
                    if letter in _LETTER_TO_FLAG:
                        flags.add(_LETTER_TO_FLAG[letter])
                    elif letter not in extra:
                        extra += letter
            message = StoredMessage(
                uid=uid,
                raw=raw,
                flags=flags,
                internal_date=date,
                mailbox_name=self.name,
                user=self.user,
                recent=(sub == "new"),
            )
            message._filename = os.path.join(sub, filename)
            message._extra_letters = extra
            message._mailbox = self
            messages.append(message)

        self.uid_validity = uid_validity
        self.uid_next = uid_next
        self.messages = messages
        self._by_uid = {m.uid: m for m in messages}
        self._write_uidlist()


def _read_uidlist(path: str) -> tuple[int, int, dict[str, tuple[int, float | None, set[str]]]] | None:
    """Parse a uid list: (uidvalidity, uidnext, {basename: (uid, date, keywords)}), None if unusable."""
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        log.warning("unreadable uid list %s; UIDs will be reassigned", path)
        return None
    lines.pop()  # the text after the last newline: empty, or a torn record
    if len(lines) < 3 or lines[0] != _UIDLIST_MAGIC:
        return None
    try:
        key1, value1 = lines[1].split(" ")
        key2, value2 = lines[2].split(" ")
        if (key1, key2) != ("uidvalidity", "uidnext"):
            return None
        uid_validity, uid_next = int(value1), int(value2)
    except ValueError:
        return None
    by_uid: dict[int, tuple[str, float | None, set[str]]] = {}
    for line in lines[3:]:
        fields = line.split("\t")
        try:
            if fields[0] == "-" and len(fields) == 2:
                uid = int(fields[1])
                by_uid.pop(uid, None)
            elif len(fields) == 4:
                uid = int(fields[0])
                date = float(fields[2]) if fields[2] else None
                by_uid[uid] = (fields[1], date, set(fields[3].split()))
            else:
                continue
        except ValueError:
            continue
        # Every UID ever recorded was handed out, even if removed since: never reuse it.
        uid_next = max(uid_next, uid + 1)
    records = {}
    for uid in sorted(by_uid):
        base, date, keywords = by_uid[uid]
        records.setdefault(base, (uid, date, keywords))
    return uid_validity, uid_next, records


# ---------------------------------------------------------------------------
# The store


class MailStore:
    """Users and their mailboxes, shared by the SMTP, POP3 and IMAP servers.

    ``maildir=None`` keeps everything in memory. Otherwise ``maildir`` is the root of a
    Maildir tree: ``<maildir>/<user>/`` is the user's Maildir (its INBOX, with cur/ new/
    tmp/), folders are Maildir++ subfolders ``<maildir>/<user>/.Name`` (API "A/b" is
    ".A.b" on disk; "." and "%" inside a level are written "%2E" and "%25"), each folder
    has a ``testbed-uidlist`` file, each user a ``subscriptions`` file. Reopening the same
    path restores users, folders, messages, UIDs, UIDVALIDITY, flags and subscriptions;
    passwords are not stored, so users found on disk but absent from ``users`` come back
    without a password (they cannot log in), like ``accept_unknown`` users.

    Names: user names are lower-cased addresses; "INBOX" is case-insensitive; names that
    could escape the root raise `InvalidNameError` (a ValueError and KeyError).

    Single-threaded (the reactor's thread); other threads may read ``Mailbox.messages``
    and `all_messages`.
    """

    def __init__(
        self,
        maildir: str | os.PathLike[str] | None = None,
        accept_unknown: bool = True,
        users: Mapping[str, str] = {},
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.maildir: str | None = os.path.abspath(os.fspath(maildir)) if maildir is not None else None
        self.accept_unknown = accept_unknown
        self.clock = clock
        self._configured: dict[str, str | None] = {normalize_user(a): p for a, p in dict(users).items()}
        self._passwords: dict[str, str | None] = {}
        self._mailboxes: dict[str, dict[str, Mailbox]] = {}
        self._subscriptions: dict[str, list[str]] = {}
        self._locks: set[str] = set()
        self._delivered: list[StoredMessage] = []
        self._last_uid_validity = 0
        if self.maildir is not None:
            os.makedirs(self.maildir, exist_ok=True)
            self._load_tree()
        for user, password in self._configured.items():
            self.add_user(user, password)

    def __repr__(self) -> str:
        where = self.maildir if self.maildir is not None else "memory"
        return f"<MailStore {where} users={len(self._passwords)}>"

    # -- users

    @property
    def users(self) -> dict[str, str]:
        """A copy of address -> password (None for users that cannot log in)."""
        return dict(self._passwords)  # type: ignore[arg-type]

    def add_user(self, address: str, password: str | None) -> None:
        """Add a user (or change an existing user's password); creates the INBOX."""
        user = normalize_user(address)
        self._passwords[user] = password
        if user not in self._mailboxes:
            self._open_user(user)

    def remove_user(self, address: str) -> None:
        """Forget a user: password, mailboxes, messages and subscriptions (and its Maildir); KeyError if unknown.

        A user the scenario configured comes back at the next `reset`.
        """
        user = self._user_key(address)
        for mailbox in self._mailboxes.pop(user).values():
            mailbox._mark_deleted()
        if self.maildir is not None:
            _remove_tree(self._user_path(user), self.maildir)
        self._passwords.pop(user, None)
        self._subscriptions.pop(user, None)
        self._locks.discard(user)

    def has_user(self, address: str) -> bool:
        try:
            return normalize_user(address) in self._passwords
        except ValueError:
            return False

    def check_password(self, address: str, password: str) -> bool:
        stored = self.password(address)
        if stored is None or not isinstance(password, str):
            return False
        return hmac.compare_digest(stored.encode("utf-8"), password.encode("utf-8"))

    def password(self, address: str) -> str | None:
        """The cleartext password (for APOP / CRAM-MD5), None for unknown or login-less users."""
        try:
            return self._passwords.get(normalize_user(address))
        except ValueError:
            return None

    def resolve_recipient(self, address: str) -> str | None:
        """The user for an SMTP recipient, or None to refuse it.

        Unknown addresses are created on the fly (password None: cannot log in) when
        ``accept_unknown``, else refused; addresses unusable as a user name are refused too.
        """
        try:
            user = normalize_user(address)
        except ValueError:
            return None
        if user in self._passwords:
            return user
        if not self.accept_unknown:
            return None
        self.add_user(user, None)
        return user

    def deliver(
        self,
        recipient: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
    ) -> StoredMessage:
        """Put ``raw`` into the recipient's INBOX (durable before returning with a maildir).

        ``recipient`` goes through `resolve_recipient`; KeyError if it is refused.
        One call per recipient: each gets its own `StoredMessage`.
        """
        user = self.resolve_recipient(recipient)
        if user is None:
            raise KeyError(f"unknown recipient {recipient!r}")
        mailbox = self._mailboxes[user][INBOX]  # ``user`` is a key already: ``mailbox()`` would check it again
        message = mailbox._add(raw, flags, internal_date)
        self._delivered.append(message)
        mailbox._notify("append", message)
        return message

    def all_messages(self) -> list[StoredMessage]:
        """Every message given to `deliver` since construction or `reset`, in delivery order.

        A journal for test assertions: messages stay in it after being expunged, deleted by
        POP3 or moved by renaming INBOX; messages added with `Mailbox.append` (IMAP APPEND)
        are not in it. After reopening a maildir it starts with the INBOX messages found
        on disk, ordered by internal date.
        """
        return list(self._delivered)

    # -- mailboxes

    def mailbox(self, user: str, name: str = INBOX) -> Mailbox:
        """The mailbox ``name`` of ``user``; KeyError if either is missing."""
        boxes = self._user_boxes(user)
        return boxes[normalize_mailbox_name(name)]

    def list_mailboxes(self, user: str) -> list[str]:
        """All mailbox names of ``user``: "INBOX" first, then the others sorted."""
        return sorted(self._user_boxes(user), key=_sort_key_mailbox_names)

    def create_mailbox(self, user: str, name: str) -> Mailbox:
        """Create mailbox ``name`` and any missing superiors ("a/b" also makes "a").

        ValueError if it exists already or the name is invalid.
        """
        user_key = self._user_key(user)
        boxes = self._mailboxes[user_key]
        name = normalize_mailbox_name(name)
        if name in boxes:
            raise ValueError(f"mailbox {name!r} already exists")
        levels = name.split(SEPARATOR)
        for depth in range(1, len(levels)):
            parent = SEPARATOR.join(levels[:depth])
            if parent not in boxes:
                self._open_mailbox(user_key, parent)
        return self._open_mailbox(user_key, name)

    def delete_mailbox(self, user: str, name: str) -> None:
        """Delete mailbox ``name`` and its messages; ValueError for INBOX or a missing mailbox.

        Inferior mailboxes ("name/x") are kept, and so are subscriptions (RFC 3501).
        """
        user_key = self._user_key(user)
        boxes = self._mailboxes[user_key]
        name = normalize_mailbox_name(name)
        if name == INBOX:
            raise ValueError("INBOX cannot be deleted")
        mailbox = boxes.get(name)
        if mailbox is None:
            raise ValueError(f"no mailbox {name!r}")
        if mailbox.path is not None:
            # The trash goes to the user's tmp/, never mistaken for a folder if left behind.
            _remove_tree(mailbox.path, os.path.join(self._user_path(user_key), "tmp"))
        del boxes[name]
        mailbox._mark_deleted()

    def rename_mailbox(self, user: str, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` with its inferiors ("old/x" becomes "new/x").

        Missing superiors of ``new`` are created. Renaming INBOX moves its messages into
        a new mailbox ``new`` (with new UIDs) and leaves INBOX empty, as RFC 3501 says.
        Subscriptions to renamed names are renamed too. ValueError if ``old`` is missing,
        ``new`` exists or is inside ``old``, or a name is invalid.
        """
        user_key = self._user_key(user)
        boxes = self._mailboxes[user_key]
        old = normalize_mailbox_name(old)
        new = normalize_mailbox_name(new)
        if old not in boxes:
            raise ValueError(f"no mailbox {old!r}")
        if new in boxes:
            raise ValueError(f"mailbox {new!r} already exists")
        if new.startswith(old + SEPARATOR):
            raise ValueError(f"cannot rename {old!r} into itself")

        if old == INBOX:
            inbox = boxes[INBOX]
            target = self.create_mailbox(user_key, new)
            moved = list(inbox.messages)
            for message in moved:
                target.append(message.raw, message.flags, message.internal_date)
            inbox.delete(m.uid for m in moved)
            return

        renames = [(old, new)]
        prefix = old + SEPARATOR
        for name in sorted(boxes):
            if name.startswith(prefix):
                renames.append((name, new + name[len(old):]))
        for _, target_name in renames:
            if target_name in boxes:
                raise ValueError(f"mailbox {target_name!r} already exists")
            if self.maildir is not None and os.path.lexists(
                os.path.join(self._user_path(user_key), _folder_dirname(target_name))
            ):
                raise ValueError(f"directory for {target_name!r} exists on disk")

        levels = new.split(SEPARATOR)
        for depth in range(1, len(levels)):
            parent = SEPARATOR.join(levels[:depth])
            if parent not in boxes:
                self._open_mailbox(user_key, parent)

        for source_name, target_name in renames:
            mailbox = boxes.pop(source_name)
            if mailbox.path is not None:
                new_path = os.path.join(self._user_path(user_key), _folder_dirname(target_name))
                os.rename(mailbox.path, new_path)
                mailbox.path = new_path
            mailbox.name = target_name
            for message in mailbox.messages:
                message.mailbox_name = target_name
            boxes[target_name] = mailbox
        if self.maildir is not None:
            _fsync_dir(self._user_path(user_key))

        mapping = dict(renames)
        subscriptions = self._subscriptions[user_key]
        if any(s in mapping for s in subscriptions):
            renamed = []
            for s in subscriptions:
                s = mapping.get(s, s)
                if s not in renamed:
                    renamed.append(s)
            self._subscriptions[user_key] = renamed
            self._save_subscriptions(user_key)

    # -- subscriptions

    def subscribe(self, user: str, name: str) -> None:
        """Subscribe ``name`` (which need not exist). New users are subscribed to INBOX."""
        user_key = self._user_key(user)
        name = normalize_mailbox_name(name)
        if name not in self._subscriptions[user_key]:
            self._subscriptions[user_key].append(name)
            self._save_subscriptions(user_key)

    def unsubscribe(self, user: str, name: str) -> None:
        """Unsubscribe ``name`` (no error if it was not subscribed)."""
        user_key = self._user_key(user)
        name = normalize_mailbox_name(name)
        if name in self._subscriptions[user_key]:
            self._subscriptions[user_key].remove(name)
            self._save_subscriptions(user_key)

    def subscriptions(self, user: str) -> list[str]:
        """Subscribed names: "INBOX" first, then the others sorted."""
        return sorted(self._subscriptions[self._user_key(user)], key=_sort_key_mailbox_names)

    # -- POP3 maildrop lock

    def lock_maildrop(self, user: str) -> bool:
        """Take the exclusive POP3 maildrop lock (RFC 1939); False if it is already held."""
        user_key = normalize_user(user)
        if user_key in self._locks:
            return False
        self._locks.add(user_key)
        return True

    def unlock_maildrop(self, user: str) -> None:
        self._locks.discard(normalize_user(user))

    # -- reset

    def reset(self) -> None:
        """Back to the users given at construction, with empty INBOXes and nothing else.

        With a maildir the users' Maildir directories are deleted and recreated (other
        files under the root are left alone). Old `Mailbox` objects are marked deleted,
        maildrop locks released, the `all_messages` journal cleared, passwords restored.
        """
        for boxes in self._mailboxes.values():
            for mailbox in boxes.values():
                mailbox._mark_deleted()
        if self.maildir is not None:
            for user in list(self._mailboxes):
                _remove_tree(self._user_path(user), self.maildir)
        self._passwords.clear()
        self._mailboxes.clear()
        self._subscriptions.clear()
        self._locks.clear()
        self._delivered = []
        for user, password in self._configured.items():
            self.add_user(user, password)

    # -- internals

    def _user_key(self, user: str) -> str:
        user_key = normalize_user(user)
        if user_key not in self._mailboxes:
            raise KeyError(f"no user {user!r}")
        return user_key

    def _user_boxes(self, user: str) -> dict[str, Mailbox]:
        return self._mailboxes[self._user_key(user)]

    def _user_path(self, user_key: str) -> str:
        assert self.maildir is not None
        return os.path.join(self.maildir, user_key)

    def _next_uid_validity(self, at_least: int = 1) -> int:
        value = max(int(self.clock()), self._last_uid_validity + 1, at_least, 1)
        if value > 0xFFFFFFFF:
            value = max(self._last_uid_validity + 1, at_least)
        self._last_uid_validity = value
        return value

    def _note_uid_validity(self, value: int) -> None:
        self._last_uid_validity = max(self._last_uid_validity, value)

    def _open_user(self, user_key: str) -> None:
        self._mailboxes[user_key] = {}
        if self.maildir is None:
            self._mailboxes[user_key][INBOX] = Mailbox(
                self, user_key, INBOX, uid_validity=self._next_uid_validity()
            )
            self._subscriptions[user_key] = [INBOX]
            return
        user_path = self._user_path(user_key)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(user_path, sub), exist_ok=True)
        inbox = Mailbox(self, user_key, INBOX, path=user_path)
        inbox._load()
        self._mailboxes[user_key][INBOX] = inbox
        for entry in sorted(os.listdir(user_path)):
            name = _name_from_dirname(entry)
            folder_path = os.path.join(user_path, entry)
            if (
                name is None
                or name in self._mailboxes[user_key]
                or not os.path.isdir(os.path.join(folder_path, "cur"))
                or not os.path.isdir(os.path.join(folder_path, "new"))
            ):
                continue
            folder = Mailbox(self, user_key, name, path=folder_path)
            folder._load()
            self._mailboxes[user_key][name] = folder
        self._subscriptions[user_key] = self._load_subscriptions(user_key)

    def _open_mailbox(self, user_key: str, name: str) -> Mailbox:
        if self.maildir is None:
            mailbox = Mailbox(self, user_key, name, uid_validity=self._next_uid_validity())
        else:
            path = os.path.join(self._user_path(user_key), _folder_dirname(name))
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            marker = os.path.join(path, "maildirfolder")  # Maildir++ folder marker
            if not os.path.exists(marker):
                open(marker, "wb").close()
            mailbox = Mailbox(self, user_key, name, path=path)
            mailbox._load()
            _fsync_dir(self._user_path(user_key))
        self._mailboxes[user_key][name] = mailbox
        return mailbox

    def _load_tree(self) -> None:
        assert self.maildir is not None
        for entry in sorted(os.listdir(self.maildir)):
            try:
                user_key = normalize_user(entry)
            except ValueError:
                continue
            path = os.path.join(self.maildir, entry)
            if (
                user_key != entry
                or not os.path.isdir(os.path.join(path, "cur"))
                or not os.path.isdir(os.path.join(path, "new"))
            ):
                continue
            self._passwords[user_key] = None
            self._open_user(user_key)
        inbox_messages = [m for boxes in self._mailboxes.values() for m in boxes[INBOX].messages]
        inbox_messages.sort(key=lambda m: (m.internal_date, m.user, m.uid))
        self._delivered = inbox_messages

    def _load_subscriptions(self, user_key: str) -> list[str]:
        path = os.path.join(self._user_path(user_key), SUBSCRIPTIONS_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            subscriptions = [INBOX]
            _atomic_write(path, INBOX + "\n")
            return subscriptions
        subscriptions: list[str] = []
        for line in lines:
            try:
                name = normalize_mailbox_name(line)
            except ValueError:
                continue
            if name not in subscriptions:
                subscriptions.append(name)
        return subscriptions

    def _save_subscriptions(self, user_key: str) -> None:
        if self.maildir is None:
            return
        path = os.path.join(self._user_path(user_key), SUBSCRIPTIONS_NAME)
        _atomic_write(path, "".join(f"{name}\n" for name in self._subscriptions[user_key]))
