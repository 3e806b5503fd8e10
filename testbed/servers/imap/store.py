"""Twisted's IMAP account, mailbox and message interfaces over the shared ``MailStore``, with a cred portal.

Each SELECT gets its own ``SessionMailbox``: a per-session view of sequence numbers
and \\Recent kept in step with the store through its listeners (for IDLE and NOOP).
Message parts are cut from the stored bytes, so BODY[...] sections are byte-exact.
"""

from __future__ import annotations

import datetime
import email.header
import email.parser
import email.policy
import email.utils
import io
import re
import weakref
from typing import Any, Callable, Iterable

from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from testbed.mail.credentials import MailChecker
from testbed.mail.store import SEPARATOR, SYSTEM_FLAGS, InvalidNameError, MailStore, Mailbox, StoredMessage
from testbed.mail.store import normalize_mailbox_name

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}


# -- message parts cut from the raw bytes ------------------------------------------

_BLANK_LINE = re.compile(rb"\r?\n(\r?\n)")


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header with its terminating blank line, body) of an RFC 5322 / MIME entity."""
    if raw.startswith(b"\r\n"):
        return raw[:2], raw[2:]
    if raw.startswith(b"\n"):
        return raw[:1], raw[1:]
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, b""
    return raw[:match.end()], raw[match.end():]


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """Each header field as (lower-case name, its raw bytes with folding and line ending)."""
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        fields.append((name, line))
    return fields


def _field_value(raw: bytes) -> str:
    value = raw.split(b":", 1)[1] if b":" in raw else b""
    text = value.decode("utf-8", "surrogateescape")
    return re.sub(r"\r?\n(?=[ \t])", "", text).strip()


def _content_type(value: str | None, default: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(main type, subtype, parameters) of a Content-Type value, lower-cased types."""
    if not value:
        main, _, sub = default.partition("/")
        return main, sub, ([("charset", "us-ascii")] if default == "text/plain" else [])
    parsed = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(f"Content-Type: {value}\n\n")
    full = parsed.get_content_type()
    if "/" not in value.split(";", 1)[0]:
        full = default
    main, _, sub = full.partition("/")
    params = []
    for key, val in (parsed.get_params() or [])[1:]:
        if isinstance(val, tuple):
            val = email.utils.collapse_rfc2231_value(val)
        params.append((key.lower(), str(val)))
    return main, sub, params


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    delimiter = re.compile(rb"(?:\r?\n|\A|(?<=\n))--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[bytes] = []
    start = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start:match.start()])
        if match.group(1):
            return parts
        start = match.end()
    if start is not None:
        parts.append(body[start:])
    return parts


class Part:
    """One MIME entity: its raw header and body bytes, its type, and its children."""

    def __init__(self, raw: bytes, default_type: str = "text/plain"):
        self.raw = raw
        self.header, self.body = split_header(raw)
        self.fields = header_fields(self.header)
        self._values: dict[str, str] = {}
        for name, field in self.fields:
            self._values.setdefault(name, _field_value(field))
        self.main, self.sub, self.params = _content_type(self._values.get("content-type"), default_type)
        self._children: list[Part] | None = None

    def value(self, name: str) -> str | None:
        """The first ``name`` header, unfolded (non-ASCII bytes kept as surrogates)."""
        return self._values.get(name.lower())

    def decoded(self, name: str) -> str:
        """The first ``name`` header with RFC 2047 words decoded, for searching."""
        value = self.value(name)
        if value is None:
            return ""
        try:
            return str(email.header.make_header(email.header.decode_header(value)))
        except Exception:
            return value

    @property
    def is_multipart(self) -> bool:
        return self.main == "multipart"

    @property
    def is_message(self) -> bool:
        return (self.main, self.sub) == ("message", "rfc822")

    @property
    def children(self) -> list["Part"]:
        """Sub-parts of a multipart; the encapsulated message of a message/rfc822; else none."""
        if self._children is None:
            if self.is_multipart:
                boundary = dict(self.params).get("boundary")
                chunks = _split_multipart(self.body, boundary.encode("utf-8", "surrogateescape")) if boundary else []
                default = "message/rfc822" if self.sub == "digest" else "text/plain"
                self._children = [Part(chunk, default) for chunk in chunks]
            elif self.is_message:
                self._children = [Part(self.body)]
            else:
                self._children = []
        return self._children

    def content_type_header(self) -> str:
        """Content-Type normalised for Twisted's naive parser (no ';' or quotes inside values)."""
        params = "".join(f"; {k}={v.replace(';', ',').replace(chr(34), chr(39))}" for k, v in self.params)
        return f"{self.main}/{self.sub}{params}"

    def section(self, path: Iterable[int], spec: str = "", fields: Iterable[str] = (), negate: bool = False) -> bytes | None:
        """The bytes of BODY[path.spec] (path 0-based), or None if there is no such part.

        spec: "" (the part's body; the whole message at the top), "HEADER", "FIELDS"
        (HEADER.FIELDS, ``negate`` for .NOT), "TEXT", "MIME".
        """
        path = list(path)
        current = self
        for number in path:
            if current.is_message:
                current = current.children[0]
            if current.is_multipart:
                if not 0 <= number < len(current.children):
                    return None
                current = current.children[number]
            elif number != 0:
                return None
        if spec == "MIME":
            return current.header if path else None
        if spec in ("HEADER", "FIELDS", "TEXT"):
            target = current
            if path:
                if not current.is_message:
                    return None
                target = current.children[0]
            if spec == "TEXT":
                return target.body
            if spec == "HEADER":
                return target.header
            wanted = {f.lower() for f in fields}
            return b"".join(raw for name, raw in target.fields if (name in wanted) != negate) + b"\r\n"
        return current.body if path else current.raw


_PARTS: "weakref.WeakKeyDictionary[StoredMessage, Part]" = weakref.WeakKeyDictionary()


def part_of(message: StoredMessage) -> Part:
    """The parsed MIME tree of a stored message (cached while the message lives)."""
    part = _PARTS.get(message)
    if part is None:
        part = _PARTS[message] = Part(message.raw)
    return part


@implementer(imap4.IMessagePart)
class MessagePart:
    """Twisted's ``IMessagePart`` over a ``Part`` (sub-parts of an ``IMAPMessage``)."""

    def __init__(self, part: Part):
        self.part = part

    def getHeaders(self, negate, *names):
        wanted = {(n.decode("ascii", "replace") if isinstance(n, bytes) else n).lower() for n in names}
        out = {}
        for name, _ in self.part.fields:
            if (name in wanted) != negate and name not in out:
                out[name] = self.part.value(name)
        if ("content-type" in wanted) != negate:
            out["content-type"] = self.part.content_type_header()
        if ("content-transfer-encoding" in wanted) != negate and not out.get("content-transfer-encoding"):
            out["content-transfer-encoding"] = "7bit"  # RFC 2045's default; BODYSTRUCTURE may not say NIL
        return out

    def getBodyFile(self):
        return io.BytesIO(self.part.body)

    def getSize(self):
        return len(self.part.body)

    def isMultipart(self):
        return self.part.is_multipart

    def getSubPart(self, part):
        children = self.part.children
        if not 0 <= part < len(children):
            raise IndexError(part)
        return MessagePart(children[part])


class _Literal:
    """Makes ``collapseNestedLists`` send a string as a literal (8-bit text cannot be quoted)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self) -> bytes:
        return self.data


def wire(value: Any) -> Any:
    """Nested lists of str/bytes/int/None made safe for ``imap4.collapseNestedLists``."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        if not value.isascii() or b"\r" in value or b"\n" in value or len(value) > 1000:
            return _Literal(value)
        return value
    if isinstance(value, (list, tuple)):
        return [wire(v) for v in value]
    return value


def _addresses(value: str | None):
    if not value:
        return None
    out = []
    for name, address in email.utils.getaddresses([value]):
        if not address and not name:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, None
        out.append([name or None, None, mailbox or None, host or None])
    return out or None


def envelope(part: Part) -> list:
    """The ENVELOPE structure of a message (RFC 3501 7.4.2); raw header text, as servers send it."""
    value = part.value
    from_ = _addresses(value("from"))
    return [value("date"), value("subject"), from_,
            _addresses(value("sender")) or from_, _addresses(value("reply-to")) or from_,
            _addresses(value("to")), _addresses(value("cc")), _addresses(value("bcc")),
            value("in-reply-to"), value("message-id")]


def _param_list(params: list[tuple[str, str]]) -> list | None:
    return [x for pair in params for x in pair] or None


def _disposition(part: Part) -> list | None:
    value = part.value("content-disposition")
    if not value:
        return None
    parsed = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(f"Content-Disposition: {value}\n\n")
    params = parsed.get_params(header="content-disposition") or []
    if not params:
        return None
    pairs = []
    for key, val in params[1:]:
        if isinstance(val, tuple):
            val = email.utils.collapse_rfc2231_value(val)
        pairs.append((key.lower(), str(val)))
    return [params[0][0].lower(), _param_list(pairs)]


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def body_structure(part: Part, extended: bool) -> list:
    """BODYSTRUCTURE (``extended``) or BODY of a part (RFC 3501 7.4.2).

    Not Twisted's ``getBodyStructure``: it puts a message/rfc822 part's extension
    data before its envelope, lower-cases parameter values (boundaries included)
    and chokes on a parameter without "=".
    """
    if part.is_multipart and part.children:
        result: list = [body_structure(child, extended) for child in part.children]
        result.append(part.sub)
        if extended:
            result += [_param_list(part.params), _disposition(part), part.value("content-language"),
                       part.value("content-location")]
        return result
    result = [part.main, part.sub, _param_list(part.params), part.value("content-id"),
              part.value("content-description"), part.value("content-transfer-encoding") or "7bit", len(part.body)]
    if part.is_message:
        inner = part.children[0]
        result += [envelope(inner), body_structure(inner, extended), _line_count(part.body)]
    elif part.main == "text":
        result.append(_line_count(part.body))
    if extended:
        result += [part.value("content-md5"), _disposition(part), part.value("content-language"),
                   part.value("content-location")]
    return result


def imap_date(timestamp: float) -> str:
    """An INTERNALDATE (date-time) in UTC, without the locale's month names."""
    t = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return f"{t.day:02d}-{MONTHS[t.month - 1]}-{t.year:04d} {t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"


_DATE_TIME = re.compile(r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*$")


def parse_imap_date(text: str) -> float:
    """A POSIX timestamp from an APPEND date-time ("17-Jul-1996 02:44:25 -0700"); ValueError if bad."""
    match = _DATE_TIME.match(text)
    if match is None or match.group(2).lower() not in _MONTH_NUMBER:
        raise ValueError(f"bad date-time {text!r}")
    day, month, year, hh, mm, ss, sign, oh, om = match.groups()
    offset = (int(oh) * 60 + int(om)) * (1 if sign == "+" else -1)
    when = datetime.datetime(int(year), _MONTH_NUMBER[month.lower()], int(day), int(hh), int(mm), int(ss),
                             tzinfo=datetime.timezone(datetime.timedelta(minutes=offset)))
    return when.timestamp()


def _search_date(token: Any) -> datetime.date:
    if not isinstance(token, bytes):
        raise SearchError("expected a date, got a list")
    match = re.fullmatch(rb'"?(\d{1,2})-([A-Za-z]{3})-(\d{4})"?', token)
    if match is None or match.group(2).decode().lower() not in _MONTH_NUMBER:
        raise SearchError(f"bad date {token!r}")
    return datetime.date(int(match.group(3)), _MONTH_NUMBER[match.group(2).decode().lower()], int(match.group(1)))


# -- messages -------------------------------------------------------------------------

@implementer(imap4.IMessage, imap4.IMessageFile)
class IMAPMessage:
    """A stored message as one session sees it (its \\Recent is per session)."""

    def __init__(self, stored: StoredMessage, recent: bool = False):
        self.stored = stored
        self.recent = recent

    @property
    def part(self) -> Part:
        return part_of(self.stored)

    # IMessage
    def getUID(self):
        return self.stored.uid

    def getFlags(self):
        flags = sorted(self.stored.flags)
        if self.recent:
            flags.append("\\Recent")
        return flags

    def getInternalDate(self):
        return email.utils.formatdate(self.stored.internal_date)

    # IMessagePart (the top-level entity); getSize is the whole message, as RFC822.SIZE wants
    def getHeaders(self, negate, *names):
        return MessagePart(self.part).getHeaders(negate, *names)

    def getBodyFile(self):
        return io.BytesIO(self.part.body)

    def getSize(self):
        return len(self.stored.raw)

    def isMultipart(self):
        return self.part.is_multipart

    def getSubPart(self, part):
        return MessagePart(self.part).getSubPart(part)

    # IMessageFile
    def open(self):
        return io.BytesIO(self.stored.raw)


# -- search ---------------------------------------------------------------------------

class SearchError(ValueError):
    """A SEARCH the server cannot parse: answered with BAD."""


class _SearchContext:
    def __init__(self, last_seq: int, last_uid: int):
        self.last_seq = last_seq
        self.last_uid = last_uid
        self.seq = 0
        self.message: IMAPMessage | None = None


def _id_set(token: bytes, last: int) -> imap4.MessageSet:
    try:
        ids = imap4.parseIdList(token, last)
    except Exception as e:
        raise SearchError(f"bad message set {token!r}") from e
    ids.last = last
    return ids


def _text_of(message: IMAPMessage, headers: bool) -> str:
    stored = message.stored
    chunks = []
    if headers:
        chunks.append(message.part.header.decode("utf-8", "replace"))
        chunks.extend(message.part.decoded(name) for name, _ in message.part.fields)
    chunks.append(message.part.body.decode("utf-8", "replace"))
    try:
        for sub in stored.message.walk():
            if sub.get_content_maintype() == "text" and not sub.is_multipart():
                chunks.append(sub.get_content())
    except Exception:
        pass
    return "\n".join(chunks).casefold()


_FLAG_KEYS = {
    b"ANSWERED": ("\\Answered", True), b"UNANSWERED": ("\\Answered", False),
    b"DELETED": ("\\Deleted", True), b"UNDELETED": ("\\Deleted", False),
    b"DRAFT": ("\\Draft", True), b"UNDRAFT": ("\\Draft", False),
    b"FLAGGED": ("\\Flagged", True), b"UNFLAGGED": ("\\Flagged", False),
    b"SEEN": ("\\Seen", True), b"UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {b"BCC": "bcc", b"CC": "cc", b"FROM": "from", b"SUBJECT": "subject", b"TO": "to"}


#: How deep NOT, OR and parentheses may nest in SEARCH; deeper gets BAD.
MAX_SEARCH_NESTING = 100


class _Tokens:
    def __init__(self, tokens: list):
        self.tokens = tokens
        self.i = 0

    def more(self) -> bool:
        return self.i < len(self.tokens)

    def next(self, what: str = "a search key"):
        if not self.more():
            raise SearchError(f"missing {what}")
        token = self.tokens[self.i]
        self.i += 1
        if token is None:  # parseNestedParens reads the atom NIL as None
            raise SearchError(f"expected {what}, got NIL")
        return token

    def string(self, what: str) -> str:
        token = self.next(what)
        if isinstance(token, list):
            raise SearchError(f"expected {what}, got a list")
        return token.decode("utf-8", "replace")


Predicate = Callable[[_SearchContext], bool]


def compile_search(tokens: list, depth: int = 0) -> Predicate:
    """A predicate from a parsed search-key list (``imap4.parseNestedParens``); SearchError if bad."""
    stream = _Tokens(tokens)
    keys = []
    while stream.more():
        keys.append(_search_key(stream, depth))
    if not keys:
        raise SearchError("empty search")
    return lambda c: all(k(c) for k in keys)


def _search_key(stream: _Tokens, depth: int = 0) -> Predicate:
    # Compiling and evaluating recurse once per level: the bound keeps both far from the recursion limit.
    if depth > MAX_SEARCH_NESTING:
        raise SearchError(f"search keys nested deeper than {MAX_SEARCH_NESTING}")
    token = stream.next()
    if isinstance(token, list):
        return compile_search(token, depth + 1)
    word = token.upper()
    if word[:1].isdigit() or word[:1] == b"*":
        _id_set(token, 1)  # reject a malformed set now, not per message
        return lambda c: c.seq in _id_set(token, c.last_seq)
    if word == b"ALL":
        return lambda c: True
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return lambda c: (flag in c.message.stored.flags) == present
    if word == b"RECENT":
        return lambda c: c.message.recent
    if word == b"OLD":
        return lambda c: not c.message.recent
    if word == b"NEW":
        return lambda c: c.message.recent and "\\Seen" not in c.message.stored.flags
    if word in (b"KEYWORD", b"UNKEYWORD"):
        flag, present = stream.string("a keyword"), word == b"KEYWORD"
        return lambda c: any(f.lower() == flag.lower() for f in c.message.stored.flags) == present
    if word in _HEADER_KEYS:
        name, needle = _HEADER_KEYS[word], stream.string("a string").casefold()
        return lambda c: needle in c.message.part.decoded(name).casefold()
    if word == b"HEADER":
        name, needle = stream.string("a header name").lower(), stream.string("a string").casefold()
        return lambda c: c.message.part.value(name) is not None and needle in c.message.part.decoded(name).casefold()
    if word in (b"BODY", b"TEXT"):
        needle, headers = stream.string("a string").casefold(), word == b"TEXT"
        return lambda c: needle in _text_of(c.message, headers)
    if word in (b"LARGER", b"SMALLER"):
        text = stream.string("a number")
        if not text.isdigit():
            raise SearchError(f"{word.decode()} needs a number, got {text!r}")
        size = int(text)
        if word == b"LARGER":
            return lambda c: c.message.stored.size > size
        return lambda c: c.message.stored.size < size
    if word in (b"BEFORE", b"ON", b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE"):
        day = _search_date(stream.next("a date"))
        sent = word.startswith(b"SENT")
        compare = {b"BEFORE": lambda d: d < day, b"ON": lambda d: d == day, b"SINCE": lambda d: d >= day}[
            word[4:] if sent else word]

        def by_date(c: _SearchContext) -> bool:
            if sent:
                try:
                    when = email.utils.parsedate_to_datetime(c.message.part.value("date") or "").date()
                except Exception:
                    return False
            else:
                when = datetime.datetime.fromtimestamp(c.message.stored.internal_date, datetime.timezone.utc).date()
            return compare(when)

        return by_date
    if word == b"UID":
        token = stream.next("a UID set")
        if isinstance(token, list):
            raise SearchError("UID needs a set")
        _id_set(token, 1)
        return lambda c: c.message.stored.uid in _id_set(token, c.last_uid)
    if word == b"NOT":
        inner = _search_key(stream, depth + 1)
        return lambda c: not inner(c)
    if word == b"OR":
        left, right = _search_key(stream, depth + 1), _search_key(stream, depth + 1)
        return lambda c: left(c) or right(c)
    raise SearchError(f"unknown search key {token.decode('ascii', 'replace')!r}")


# -- mailboxes ------------------------------------------------------------------------

class ReadOnlyMailbox(imap4.MailboxException):
    pass


@implementer(imap4.IMailboxInfo)
class ListEntry:
    """What LIST shows of a mailbox: its name attributes and the hierarchy delimiter."""

    def __init__(self, attributes: list[str]):
        self.attributes = attributes

    def getFlags(self):
        return self.attributes

    def getHierarchicalDelimiter(self):
        return SEPARATOR


@implementer(imap4.IMailbox, imap4.IMessageCopier, imap4.ISearchableMailbox, imap4.ICloseableMailbox)
class SessionMailbox:
    """One store mailbox as one IMAP session sees it.

    Until a listener is added (SELECT/EXAMINE) it reads the store directly (STATUS,
    APPEND, COPY targets); once selected it keeps its own sequence-number view and
    its own \\Recent set, updated from the store's "append", "expunge" and "flags"
    events and reported to the listening server as EXISTS, EXPUNGE and FETCH FLAGS.
    """

    def __init__(self, account: "Account", box: Mailbox, writeable: bool):
        self.account = account
        self.box = box
        self.writeable = writeable
        self.view: list[StoredMessage] | None = None
        self.recent: set[int] = set()
        self.listeners: list[Any] = []
        self._own = 0
        self._expunged: list[int] | None = None

    @property
    def name(self) -> str:
        return self.box.name

    def messages(self) -> list[StoredMessage]:
        return self.view if self.view is not None else self.box.messages

    def message(self, stored: StoredMessage) -> IMAPMessage:
        recent = stored.uid in self.recent if self.view is not None else stored.recent
        return IMAPMessage(stored, recent)

    # -- IMailboxInfo: the FLAGS a SELECT announces
    def getFlags(self):
        return list(SYSTEM_FLAGS)

    def getHierarchicalDelimiter(self):
        return SEPARATOR

    # -- IMailbox
    def getUIDValidity(self):
        return self.box.uid_validity

    def getUIDNext(self):
        return self.box.uid_next

    def getUID(self, message):
        return self.messages()[message - 1].uid

    def getMessageCount(self):
        return len(self.messages())

    def getRecentCount(self):
        if self.view is not None:
            return len(self.recent)
        return self.box.recent_count

    def getUnseenCount(self):
        return sum(1 for m in self.messages() if "\\Seen" not in m.flags)

    def first_unseen(self) -> int | None:
        for seq, message in enumerate(self.messages(), 1):
            if "\\Seen" not in message.flags:
                return seq
        return None

    def isWriteable(self):
        return self.writeable

    def destroy(self):
        self.account.delete(self.box.name)

    def requestStatus(self, names):
        return imap4.statusRequestHelper(self, names)

    def addListener(self, listener):
        if self.view is None:
            self.view = list(self.box.messages)
            self.recent = {m.uid for m in self.view if m.recent}
            if self.writeable:  # \Recent goes to the first session that selects it
                self.box.clear_recent(self.recent)
            self.box.add_listener(self._store_event)
        if listener not in self.listeners:
            self.listeners.append(listener)

    def removeListener(self, listener):
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            self.close()

    def close(self):
        self.box.remove_listener(self._store_event)
        self.listeners = []
        self.view = None

    def addMessage(self, message, flags=(), date=None):
        try:
            uid = self.append(message.read(), flags, parse_imap_date(date.decode() if isinstance(date, bytes) else date)
                              if date else None)
        except Exception:
            return defer.fail()
        return defer.succeed(uid)

    def append(self, raw: bytes, flags: Iterable[str] = (), internal_date: float | None = None) -> int:
        stored = self.box.append(raw, [f for f in flags if f.lower() != "\\recent"], internal_date)
        self.account.stored("append", self.box.name, stored)
        return stored.uid

    def expunge(self):
        if not self.writeable:
            raise ReadOnlyMailbox("[READ-ONLY] Mailbox is read-only")
        if self.view is None:
            self.box.expunge()
            return []
        self._expunged = []
        try:
            self.box.expunge()
            return self._expunged
        finally:
            self._expunged = None

    def fetch(self, messages, uid):
        listed = self.messages()
        if uid:
            messages.last = listed[-1].uid if listed else 0
        else:
            messages.last = len(listed)
        return [(seq, self.message(m)) for seq, m in enumerate(listed, 1) if (m.uid if uid else seq) in messages]

    def store(self, messages, flags, mode, uid):
        if not self.writeable:
            raise ReadOnlyMailbox("[READ-ONLY] Mailbox is read-only")
        flags = [f for f in flags if f.lower() != "\\recent"]
        result = {}
        for seq, message in self.fetch(messages, uid):
            self.set_flags(message.stored, flags, mode)
            result[seq] = message.getFlags()
        return result

    def set_flags(self, stored: StoredMessage, flags: Iterable[str], mode: int = 1) -> None:
        """Change flags as this session (its own change is not echoed back to it as an update)."""
        self._own += 1
        try:
            if mode > 0:
                self.box.add_flags(stored.uid, flags)
            elif mode < 0:
                self.box.remove_flags(stored.uid, flags)
            else:
                self.box.set_flags(stored.uid, flags)
        except KeyError:
            pass  # expunged meanwhile
        finally:
            self._own -= 1

    # -- IMessageCopier
    def copy(self, message):
        stored = message.stored
        return self.append(stored.raw, stored.flags, stored.internal_date)

    # -- ISearchableMailbox
    def search(self, query, uid):
        """Sequence numbers (UIDs when ``uid``) matching ``query``; SearchError if it does not parse."""
        predicate = compile_search(query)
        listed = self.messages()
        context = _SearchContext(len(listed), listed[-1].uid if listed else 0)
        found = []
        for seq, stored in enumerate(listed, 1):
            context.seq, context.message = seq, self.message(stored)
            if predicate(context):
                found.append(stored.uid if uid else seq)
        return found

    # -- the store's events, for a selected mailbox
    def _store_event(self, event: str, box: Mailbox, stored: StoredMessage | None) -> None:
        view = self.view
        if view is None or stored is None:
            return
        if event == "append":
            view.append(stored)
            if stored.recent:
                self.recent.add(stored.uid)
                if self.writeable:
                    stored.recent = False
            for listener in list(self.listeners):
                listener.newMessages(len(view), len(self.recent))
            return
        try:
            index = next(i for i, m in enumerate(view) if m is stored)
        except StopIteration:
            return
        if event == "expunge":
            del view[index]
            self.recent.discard(stored.uid)
            if self._expunged is not None:
                self._expunged.append(index + 1)
                return
            for listener in list(self.listeners):
                expunged = getattr(listener, "messageExpunged", None)
                if expunged is not None:
                    expunged(index + 1)
        elif event == "flags" and not self._own:
            flags = self.message(stored).getFlags()
            for listener in list(self.listeners):
                listener.flagsChanged({index + 1: flags})


# -- the account, the realm and the portal --------------------------------------------

def _failure(code: str, error: Exception) -> imap4.MailboxException:
    """A MailboxException with an ASCII text (Twisted encodes some of them with networkString)."""
    text = str(error).encode("ascii", "backslashreplace").decode("ascii")
    return imap4.MailboxException(f"{code} {text}")


def _name(name: str | bytes) -> str:
    return imap4._parseMbox(name) if isinstance(name, bytes) else name


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class Account:
    """A user's mailboxes in the store."""

    def __init__(self, store: MailStore, user: str, on_stored: Callable[..., None] | None = None):
        self.store = store
        self.user = user
        self.on_stored = on_stored

    def stored(self, how: str, mailbox: str, message: StoredMessage) -> None:
        if self.on_stored is not None:
            self.on_stored(how=how, user=self.user, mailbox=mailbox, uid=message.uid, size=message.size)

    def box(self, name: str) -> Mailbox | None:
        try:
            return self.store.mailbox(self.user, _name(name))
        except KeyError:
            return None

    # IAccount
    def addMailbox(self, name, mbox=None):
        return self.create(name)

    def create(self, pathspec):
        try:
            self.store.create_mailbox(self.user, _name(pathspec))
        except InvalidNameError as e:
            raise _failure("[CANNOT]", e) from None
        except ValueError:
            raise imap4.MailboxException("[ALREADYEXISTS] Mailbox already exists") from None
        return True

    def select(self, name, rw=1):
        box = self.box(name)
        return None if box is None else SessionMailbox(self, box, bool(rw))

    def delete(self, name):
        try:
            self.store.delete_mailbox(self.user, _name(name))
        except InvalidNameError as e:
            raise _failure("[CANNOT]", e) from None
        except ValueError:
            raise imap4.MailboxException("[NONEXISTENT] No such mailbox") from None

    def rename(self, oldname, newname):
        try:
            self.store.rename_mailbox(self.user, _name(oldname), _name(newname))
        except InvalidNameError as e:
            raise _failure("[CANNOT]", e) from None
        except ValueError as e:
            code = "[NONEXISTENT]" if "no mailbox" in str(e) else "[ALREADYEXISTS]" if "exists" in str(e) else "[CANNOT]"
            raise _failure(code, e) from None

    def isSubscribed(self, name):
        try:
            return normalize_mailbox_name(_name(name)) in self.store.subscriptions(self.user)
        except ValueError:
            return False

    def subscribe(self, name):
        try:
            self.store.subscribe(self.user, _name(name))
        except InvalidNameError as e:
            raise _failure("[CANNOT]", e) from None

    def unsubscribe(self, name):
        try:
            self.store.unsubscribe(self.user, _name(name))
        except InvalidNameError as e:
            raise _failure("[CANNOT]", e) from None

    def listMailboxes(self, ref, wildcard):
        ref, wildcard = _name(ref), _name(wildcard)
        if not wildcard:
            return [("", ListEntry(["\\Noselect"]))]
        pattern = imap4.wildcardToRegexp(ref + wildcard, SEPARATOR)
        names = self.store.list_mailboxes(self.user)
        found = []
        for name in names:
            if pattern.fullmatch(name):
                children = any(other.startswith(name + SEPARATOR) for other in names)
                found.append((name, ListEntry(["\\HasChildren" if children else "\\HasNoChildren"])))
        return found

    # INamespacePresenter
    def getPersonalNamespaces(self):
        return [[b"", SEPARATOR.encode()]]

    def getSharedNamespaces(self):
        return None

    def getOtherNamespaces(self):
        return None

    def getUserNamespaces(self):
        return None


@implementer(IRealm)
class MailRealm:
    """Gives an ``Account`` for a user the checker let in."""

    def __init__(self, store: MailStore, on_stored: Callable[..., None] | None = None):
        self.store = store
        self.on_stored = on_stored

    def requestAvatar(self, avatarId, mind, *interfaces):
        if imap4.IAccount not in interfaces:
            raise NotImplementedError("only IAccount avatars")
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        return imap4.IAccount, Account(self.store, user, self.on_stored), lambda: None


def portal_for(store: MailStore, on_stored: Callable[..., None] | None = None) -> Portal:
    """LOGIN and AUTHENTICATE go through the mail checker every server shares, then get an ``Account``."""
    return Portal(MailRealm(store, on_stored), [MailChecker(store)])


class LoginCredentials(imap4.LOGINCredentials):
    """SASL LOGIN with the customary "Username:"/"Password:" prompts (Twisted sends "User Name\\0")."""

    def __init__(self):
        super().__init__()
        self.challenges = [b"Password:", b"Username:"]


__all__ = ["Account", "IMAPMessage", "MailRealm", "Part", "SearchError", "SessionMailbox",
           "body_structure", "envelope", "imap_date", "parse_imap_date", "portal_for", "wire"]
