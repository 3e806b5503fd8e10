"""Authoritative DNS data for the testbed's DNS server: zones built from scenario records and BIND zone files.
ZoneSet answers twisted.names queries with CNAME chasing, NXDOMAIN/NODATA plus SOA, and REFUSED outside its zones.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence

from twisted.internet import defer
from twisted.names import authority, common, dns, error, server

__all__ = [
    "SUPPORTED_TYPES",
    "Zone",
    "ZoneNameError",
    "ZoneRefusedError",
    "ZoneServerFactory",
    "ZoneSet",
]

#: Record types a ZoneSet serves, by their presentation name.
SUPPORTED_TYPES: dict[str, int] = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "CNAME": dns.CNAME,
    "MX": dns.MX,
    "TXT": dns.TXT,
    "SRV": dns.SRV,
    "NS": dns.NS,
    "SOA": dns.SOA,
    "PTR": dns.PTR,
}

# Record types whose target name gets A/AAAA glue in the additional section,
# and the attribute holding that target.
_TARGET_ATTRIBUTE = {dns.MX: "name", dns.NS: "name", dns.SRV: "target"}
_ADDRESS_TYPES = (dns.A, dns.AAAA)

# Timers of a synthesised SOA: "ns.<zone>. hostmaster.<zone>. <serial> 3600 600 86400 <default ttl>".
_SOA_REFRESH, _SOA_RETRY, _SOA_EXPIRE = 3600, 600, 86400

_MAX_TTL = 2**31 - 1
_TTL_RE = re.compile(r"(?:\d+[smhdw])+|\d+", re.IGNORECASE)
_TTL_PART_RE = re.compile(r"(\d+)([smhdw])", re.IGNORECASE)
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLASSES = {"IN", "CH", "CS", "HS", "ANY"}
_FORBIDDEN_NAME_BYTES = frozenset(b' \t\r\n()";\\')
_QUERY_TYPE_CODES = {
    **{text: code for code, text in dns.QUERY_TYPES.items()},
    **{text: code for code, text in dns.EXT_QUERIES.items()},
    "ANY": dns.ALL_RECORDS,
}


class _ParseError(ValueError):
    """A value that does not parse; the caller adds which record or line it was."""


class ZoneNameError(error.AuthoritativeDomainError):
    """
    NXDOMAIN for a name inside a served zone.

    An AuthoritativeDomainError, so a ResolverChain stops here and the stock
    DNSServerFactory answers NXDOMAIN.  It carries the sections of a complete
    negative answer (the zone's SOA in C{authority}, a CNAME chain in
    C{answers}) for L{ZoneServerFactory}, which puts them in the response.
    """

    def __init__(self, name, answers=(), authority=(), additional=()):
        super().__init__(name)
        self.name = name
        self.answers = list(answers)
        self.authority = list(authority)
        self.additional = list(additional)


class ZoneRefusedError(error.DNSQueryRefusedError):
    """
    The queried name is outside every served zone (REFUSED).

    A DomainError, so a ResolverChain moves on to its next resolver.  The stock
    Twisted 26.10 DNSServerFactory turns every DomainError into NXDOMAIN; use
    L{ZoneServerFactory} to answer REFUSED.
    """


class Zone(authority.FileAuthority):
    """
    One served zone: C{soa} is C{(apex, Record_SOA)} and C{records} maps each
    lowercase owner name (bytes, no trailing dot) to its records, in
    FileAuthority's layout, so FileAuthority.lookupZone serves AXFR.  Queries
    go through L{ZoneSet}, which implements the lookup rules itself.
    """

    def __init__(self, origin: bytes, soa: dns.Record_SOA, records: dict, synthesised: bool = False):
        self.origin = origin
        self.synthesised = synthesised
        self._initial = (soa, records)
        super().__init__(origin.decode("ascii"))

    def loadFile(self, filename):
        soa, records = self._initial
        del self._initial
        self.soa = (self.origin, soa)
        self.records = records

    def __repr__(self):
        kind = "synthesised" if self.synthesised else "explicit"
        return f"<Zone {self.origin.decode('ascii')!r} {kind}, {len(self.records)} names>"

    def exists(self, name: bytes) -> bool:
        """True if C{name} owns records or is an empty non-terminal of this zone."""
        if name in self.records:
            return True
        suffix = b"." + name
        return any(owner.endswith(suffix) for owner in self.records)

    def negative_soa(self) -> dns.RRHeader:
        """The SOA for the authority section of a negative answer (TTL per RFC 2308)."""
        apex, soa = self.soa
        ttl = min(soa.ttl if soa.ttl is not None else soa.minimum, soa.minimum)
        return dns.RRHeader(apex, dns.SOA, dns.IN, ttl, soa, auth=True)


#: At most this many cached answers per ZoneSet.
_ANSWER_CACHE = 4096


class ZoneSet(common.ResolverBase):
    """
    The authoritative data of the testbed's DNS server: an IResolver over a set
    of zones, for C{DNSServerFactory(authorities=[zoneset])} (better:
    L{ZoneServerFactory}, which also answers REFUSED and puts the SOA into
    NXDOMAIN answers).

    Zones come from BIND zone files (each needs one SOA, which names the zone)
    and from SOA records in C{records}.  Every other name lives in the deepest
    zone above it; names outside all of them get synthesised zones: one per
    parent name (C{www.example.test} -> C{example.test}), except that a name
    above another given name is an apex itself, and a synthesised zone nested
    in another synthesised zone is merged into the outer one.  Synthesised
    SOAs read C{ns.<zone>. hostmaster.<zone>. <serial> 3600 600 86400 <ttl>};
    the serial counts changes.

    Lookup rules: names are case-insensitive, trailing dots optional; a CNAME
    is chased through all served zones (loops and targets outside are left to
    the client); MX/NS/SRV answers get the targets' A/AAAA records as
    additional data; NXDOMAIN and NODATA carry the zone's SOA; an empty
    non-terminal is NODATA; no delegation (an NS below an apex is plain data)
    and no wildcards.  Owner names that are IP addresses are stored under
    their reverse-lookup names (C{"127.0.0.5": {"PTR": ...}}).

    Thread-safe: add_record/remove_record may be called from any thread while
    the reactor serves queries.
    """

    def __init__(self, records: Mapping = {}, zone_files: Sequence[str] = (), default_ttl: int = 300):
        super().__init__()
        if isinstance(default_ttl, bool) or not isinstance(default_ttl, int) or not 0 <= default_ttl <= _MAX_TTL:
            raise ValueError(f"default_ttl must be an integer from 0 to {_MAX_TTL}, got {default_ttl!r}")
        self.default_ttl = default_ttl
        self._lock = threading.RLock()
        self._data: dict[bytes, list] = {}
        self._file_zones: dict[bytes, str] = {}
        self._serial = 1
        self._zones: dict[bytes, Zone] = {}

        if isinstance(zone_files, (str, bytes, os.PathLike)):
            zone_files = [zone_files]
        for path in zone_files:
            self._load_zone_file(os.fsdecode(path))

        if not isinstance(records, Mapping):
            raise ValueError(f"records must be a mapping of name -> {{type: value}}, got {type(records).__name__}")
        for name, types in records.items():
            if not isinstance(types, Mapping):
                raise ValueError(f"records for {name!r} must be a mapping of type -> value, got {types!r}")
            for rtype, values in types.items():
                if isinstance(values, str):
                    values = [values]
                elif not isinstance(values, (list, tuple)):
                    raise ValueError(
                        f"invalid {rtype} record for {name!r}: {values!r}: expected a string or a list of strings"
                    )
                if str(rtype).upper() == "SOA" and len(values) > 1:
                    raise ValueError(f"invalid SOA record for {name!r}: {list(values)!r}: a name has at most one SOA")
                for value in values:
                    owner, record = self._record_from_value(name, rtype, value, None)
                    self._insert(owner, record)
        self._rebuild()

    # -- data management -------------------------------------------------

    def add_record(self, name: str, type: str, value: str, ttl: int | None = None) -> None:
        """
        Add one record at runtime (e.g. C{add_record("new.example.test", "A",
        "127.0.0.9")}), creating its zone if no served zone covers it.  An
        identical record (same value) is replaced, so this can change a TTL;
        an SOA replaces the name's SOA.  ValueError if it does not parse.
        """
        owner, record = self._record_from_value(name, type, value, ttl)
        with self._lock:
            self._insert(owner, record)
            self._serial += 1
            self._rebuild()

    def remove_record(self, name: str, type: str | None = None, value: str | None = None) -> int:
        """
        Remove the records of C{name} (only those of C{type}, and only the one
        equal to C{value} if given); return how many went.  A synthesised zone
        left without names disappears.
        """
        try:
            owner = _owner_name(name)
        except _ParseError as e:
            raise ValueError(f"remove_record: invalid name {name!r}: {e}") from None
        if value is not None:
            if type is None:
                raise ValueError("remove_record: a value needs a type")
            _, wanted = self._record_from_value(name, type, value, None)
            match = lambda r: _same_record(r, wanted)  # noqa: E731
        elif type is not None:
            code = _type_code(name, type, value)
            match = lambda r: r.TYPE == code  # noqa: E731
        else:
            match = lambda r: True  # noqa: E731
        with self._lock:
            current = self._data.get(owner, [])
            kept = [r for r in current if not match(r)]
            removed = len(current) - len(kept)
            if removed:
                if kept:
                    self._data[owner] = kept
                else:
                    del self._data[owner]
                self._serial += 1
                self._rebuild()
            return removed

    def zones(self) -> list[str]:
        """Apex names of the served zones, sorted."""
        return sorted(apex.decode("ascii") for apex in self._zones)

    def zone(self, name: str) -> Zone | None:
        """The served Zone that answers for C{name}, or None (REFUSED)."""
        return _find_zone(self._zones, _query_name(name))

    def _record_from_value(self, name, rtype, value, ttl):
        """Parse one scenario record into (owner, Record); ValueError naming it."""
        what = f"{rtype} record for {name!r}: {value!r}"
        code = _type_code(name, rtype, value)
        tname = dns.QUERY_TYPES[code]
        if not isinstance(value, str):
            raise ValueError(f"invalid {what}: expected a string, got {type(value).__name__}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= _MAX_TTL):
            raise ValueError(f"invalid {what}: ttl must be an integer from 0 to {_MAX_TTL}, got {ttl!r}")
        try:
            owner = _owner_name(name)
        except _ParseError as e:
            raise ValueError(f"invalid record name in {what}: {e}") from None
        try:
            if tname == "TXT" and not value.lstrip().startswith('"'):
                # A bare scenario TXT value is one string, spaces and all.
                record = _txt_record([value.encode("utf-8")], _ttl_or(ttl, self.default_ttl))
            else:
                tokens = _tokenize_value(value)
                record = _build_record(tname, tokens, None, _ttl_or(ttl, self.default_ttl), absolute=True)
        except _ParseError as e:
            raise ValueError(f"invalid {what}: {e}") from None
        return owner, record

    def _insert(self, owner: bytes, record) -> None:
        records = self._data.setdefault(owner, [])
        if record.TYPE == dns.SOA:
            records[:] = [r for r in records if r.TYPE != dns.SOA]
        for i, existing in enumerate(records):
            if _same_record(existing, record):
                records[i] = record
                return
        records.append(record)

    def _load_zone_file(self, path: str) -> None:
        apex, entries = _parse_zone_file(path, self.default_ttl)
        if apex in self._file_zones:
            raise ValueError(f"{path}: zone {apex.decode()!r} is already loaded from {self._file_zones[apex]}")
        self._file_zones[apex] = path
        for owner, record in entries:
            self._insert(owner, record)

    def _rebuild(self) -> None:
        """Recompute the zones from the records and swap them in atomically."""
        #: Answers by (name, type), for the zones they were resolved in (a new ``_zones`` misses them all).
        self._answers: dict = {}
        data = self._data
        explicit = {name for name, recs in data.items() if any(r.TYPE == dns.SOA for r in recs)}
        uncovered = [name for name in data if not any(_under(name, apex) for apex in explicit)]
        ancestors = {name.split(b".", i)[-1] for name in uncovered for i in range(1, name.count(b".") + 1)}
        # A name above another given name is an apex itself; other names make
        # their parent an apex.  Nested candidates merge outwards.
        candidates = {name if name in ancestors else _parent(name) for name in uncovered}
        synthesised = {c for c in candidates if not any(c != o and _under(c, o) for o in candidates)}

        members: dict[bytes, dict] = {apex: {} for apex in explicit | synthesised}
        for name, recs in data.items():
            apex = _find_apex(members, name)
            members[apex][name] = list(recs)

        zones = {}
        for apex, records in members.items():
            if apex in explicit:
                soa = next(r for r in records[apex] if r.TYPE == dns.SOA)
                zones[apex] = Zone(apex, soa, records)
            else:
                soa = dns.Record_SOA(
                    mname=b"ns." + apex,
                    rname=b"hostmaster." + apex,
                    serial=self._serial,
                    refresh=_SOA_REFRESH,
                    retry=_SOA_RETRY,
                    expire=_SOA_EXPIRE,
                    minimum=self.default_ttl,
                    ttl=self.default_ttl,
                )
                records[apex] = [soa] + records.get(apex, [])
                zones[apex] = Zone(apex, soa, records, synthesised=True)
        self._zones = zones

    # -- lookups -----------------------------------------------------------

    def lookup(self, name: str | bytes, type: int | str) -> tuple[int, list, list, list]:
        """
        Answer a query synchronously: C{(rcode, answers, authority,
        additional)} with lists of RRHeader; rcode is dns.OK, dns.ENAME
        (NXDOMAIN) or dns.EREFUSED.  C{type} is a number or a name ("MX").
        """
        if isinstance(type, str):
            code = _QUERY_TYPE_CODES.get(type.strip().upper())
            if code is None:
                raise ValueError(f"unknown query type {type!r}")
            type = code
        qname = _query_name(name)
        key = (qname, type)
        cache = self._answers
        found = cache.get(key)
        if found is None or found[0] is not self._zones:
            if len(cache) >= _ANSWER_CACHE:
                cache.clear()  # a client asking for ever new names: start over rather than grow
            zones = self._zones
            found = cache[key] = (zones, self._resolve(zones, qname, type))
        rcode, answers, authority_, additional = found[1]
        # Fresh lists each time: callers may replace sections, and must not change what is cached.
        return rcode, list(answers), list(authority_), list(additional)

    def query(self, query: dns.Query, timeout=None) -> defer.Deferred:
        """
        IResolver entry point.  Fires with (answers, authority, additional);
        fails with ZoneNameError (NXDOMAIN) or ZoneRefusedError (outside the
        served zones, or a class other than IN).  AXFR goes to lookupZone.
        """
        if query.cls not in (dns.IN, dns.ANY):
            return defer.fail(ZoneRefusedError(query.name.name))
        if query.type == dns.AXFR:
            return self.lookupZone(query.name.name, timeout)
        return self._lookup(query.name.name, query.cls, query.type, timeout)

    def _lookup(self, name, cls, type, timeout=None):
        rcode, answers, authority_, additional = self.lookup(name, type)
        if rcode == dns.OK:
            return defer.succeed((answers, authority_, additional))
        if rcode == dns.ENAME:
            return defer.fail(ZoneNameError(name, answers, authority_, additional))
        return defer.fail(ZoneRefusedError(name))

    def lookupZone(self, name, timeout=None):
        """AXFR of a served zone (through FileAuthority.lookupZone); REFUSED for anything else."""
        apex = _query_name(name)
        zone = self._zones.get(apex)
        if zone is None:
            return defer.fail(ZoneRefusedError(name))
        return zone.lookupZone(apex).addCallback(lambda result: tuple(list(section) for section in result))

    def _resolve(self, zones, qname: bytes, qtype: int):
        zone = _find_zone(zones, qname)
        if zone is None:
            return dns.EREFUSED, [], [], []
        answers = []
        seen = {qname}
        current = qname
        while True:
            records = zone.records.get(current)
            if records is None and not zone.exists(current):
                return dns.ENAME, answers, [zone.negative_soa()], []
            records = records or []
            if qtype == dns.ALL_RECORDS:
                matching = records
            else:
                matching = [r for r in records if r.TYPE == qtype]
            if matching:
                answers.extend(self._rr(current, r) for r in matching)
                break
            cname = None
            if qtype != dns.CNAME:
                cname = next((r for r in records if r.TYPE == dns.CNAME), None)
            if cname is None:
                # NODATA, possibly at the end of a CNAME chain.
                return dns.OK, answers, [zone.negative_soa()], []
            answers.append(self._rr(current, cname))
            target = _wire_name(cname.name.name)
            next_zone = _find_zone(zones, target)
            if target in seen or next_zone is None:
                break  # a loop, or a target we do not serve: the client goes on
            seen.add(target)
            zone, current = next_zone, target
        return dns.OK, answers, [], self._additional(zones, answers)

    def _additional(self, zones, answers):
        additional = []
        if not any(rr.type in _TARGET_ATTRIBUTE for rr in answers):
            return additional  # the common case (A, AAAA...): no targets, no keys to compute
        present = {(rr.name.name.lower(), rr.type, _record_key(rr.payload)) for rr in answers}
        for rr in answers:
            attribute = _TARGET_ATTRIBUTE.get(rr.type)
            if attribute is None:
                continue
            target = _wire_name(getattr(rr.payload, attribute).name)
            zone = _find_zone(zones, target) if target else None
            if zone is None:
                continue
            for record in zone.records.get(target, ()):
                key = (target, record.TYPE, _record_key(record))
                if record.TYPE in _ADDRESS_TYPES and key not in present:
                    present.add(key)
                    additional.append(self._rr(target, record))
        return additional

    def _rr(self, name: bytes, record) -> dns.RRHeader:
        ttl = record.ttl if record.ttl is not None else self.default_ttl
        return dns.RRHeader(name, record.TYPE, dns.IN, ttl, record, auth=True)


class ZoneServerFactory(server.DNSServerFactory):
    """
    DNSServerFactory that answers a ZoneSet's negative results faithfully.

    Twisted 26.10's gotResolverError turns every DomainError (including
    DNSQueryRefusedError) into a bare NXDOMAIN and sets AA only when an answer
    record is authoritative.  This factory answers REFUSED for
    DNSQueryRefusedError, puts the SOA (and any CNAME chain) of a ZoneNameError
    into the NXDOMAIN response, and sets AA on NXDOMAIN/NODATA answers that
    carry our SOA.
    """

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(ZoneNameError):
            exc = failure.value
            response = self._responseFromMessage(
                message=message,
                rCode=dns.ENAME,
                answers=exc.answers,
                authority=exc.authority,
                additional=exc.additional,
            )
        elif failure.check(error.DNSQueryRefusedError):
            response = self._responseFromMessage(message=message, rCode=dns.EREFUSED)
        else:
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, response, address)
        self._verboseLog("Lookup failed")

    def _responseFromMessage(self, message, rCode=dns.OK, answers=None, authority=None, additional=None):
        response = super()._responseFromMessage(
            message, rCode=rCode, answers=answers, authority=authority, additional=additional
        )
        if not response.auth and any(rr.type == dns.SOA and rr.isAuthoritative() for rr in response.authority):
            response.auth = True
        return response


# -- names -------------------------------------------------------------------


def _query_name(name) -> bytes:
    """Lenient normalisation of a queried name: lowercase bytes, no trailing dot."""
    if isinstance(name, dns.Name):
        name = name.name
    if isinstance(name, str):
        try:
            name = name.encode("ascii")
        except UnicodeEncodeError:
            try:
                name = name.encode("idna")
            except UnicodeError:
                name = name.encode("utf-8")
    return _wire_name(name)


def _wire_name(name: bytes) -> bytes:
    return name.lower().rstrip(b".")


def _domain_name(text: str) -> bytes:
    """Validate an absolute domain name; lowercase bytes without trailing dot (b"" for the root)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    stripped = text.strip()
    if stripped == ".":
        return b""
    if stripped.endswith("."):
        stripped = stripped[:-1]
    if not stripped:
        raise _ParseError(f"empty domain name {text!r}")
    try:
        raw = stripped.encode("ascii")
    except UnicodeEncodeError:
        try:
            raw = stripped.encode("idna")
        except UnicodeError as e:
            raise _ParseError(f"not a valid domain name: {text!r} ({e})") from None
    raw = raw.lower()
    if len(raw) > 253:
        raise _ParseError(f"domain name longer than 253 characters: {text!r}")
    for label in raw.split(b"."):
        if not label:
            raise _ParseError(f"empty label in domain name {text!r}")
        if len(label) > 63:
            raise _ParseError(f"label longer than 63 characters in {text!r}")
        if any(byte in _FORBIDDEN_NAME_BYTES or byte < 0x20 or byte > 0x7E for byte in label):
            raise _ParseError(f"invalid character in domain name {text!r}")
    return raw


def _owner_name(name) -> bytes:
    """A record's owner: a domain name, or an IP address stored under its reverse name."""
    if not isinstance(name, str):
        raise _ParseError(f"a name must be a string, got {type(name).__name__}")
    try:
        address = ipaddress.ip_address(name.strip())
    except ValueError:
        pass
    else:
        return address.reverse_pointer.encode("ascii")
    raw = _domain_name(name)
    if not raw:
        raise _ParseError("the root cannot own records here")
    return raw


def _relative_name(token: str, origin: bytes | None, absolute: bool, allow_root: bool = False) -> bytes:
    """
    A name in record data.  Scenario data (C{absolute}) holds full names, a
    trailing dot optional.  In a zone file "@" is the origin and a name
    without a trailing dot is relative to it.
    """
    if not absolute:
        if token == "@" or not token.endswith("."):
            if origin is None:
                raise _ParseError(f"relative name {token!r} but no $ORIGIN")
            token = origin.decode("ascii") + "." if token == "@" else token + "." + origin.decode("ascii") + "."
    elif token == "@":
        raise _ParseError("'@' needs a zone origin; write the full name")
    name = _domain_name(token)
    if not name and not allow_root:
        raise _ParseError("the root name is not allowed here")
    return name


def _parent(name: bytes) -> bytes:
    """The parent name; a single-label name is its own zone."""
    head, dot, rest = name.partition(b".")
    return rest if dot else name


def _under(name: bytes, apex: bytes) -> bool:
    return name == apex or name.endswith(b"." + apex)


def _find_apex(apexes, name: bytes) -> bytes | None:
    labels = name.split(b".")
    for i in range(len(labels)):
        candidate = b".".join(labels[i:])
        if candidate in apexes:
            return candidate
    return None


def _find_zone(zones, name: bytes):
    apex = _find_apex(zones, name) if name else None
    return zones[apex] if apex is not None else None


# -- records -----------------------------------------------------------------


def _type_code(name, rtype, value) -> int:
    key = str(rtype).strip().upper()
    if key not in SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported record type {rtype!r} for {name!r} (value {value!r}); "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )
    return SUPPORTED_TYPES[key]


def _ttl_or(ttl, default):
    return default if ttl is None else ttl


def _record_key(record):
    """What makes two records the same, TTL aside."""
    key = [record.TYPE]
    for attribute in record.compareAttributes:
        if attribute == "ttl":
            continue
        value = getattr(record, attribute)
        if isinstance(value, dns.Name):
            value = value.name.lower()
        elif isinstance(value, list):
            value = tuple(value)
        key.append(value)
    return tuple(key)


def _same_record(a, b) -> bool:
    return _record_key(a) == _record_key(b)


def _parse_ttl(text: str) -> int:
    if not _TTL_RE.fullmatch(text):
        raise _ParseError(f"not a TTL: {text!r}")
    if text.isdigit():
        value = int(text)
    else:
        value = sum(int(n) * _TTL_UNITS[unit.lower()] for n, unit in _TTL_PART_RE.findall(text))
    if value > _MAX_TTL:
        raise _ParseError(f"TTL out of range: {text!r}")
    return value


def _uint(text: str, bits: int, field: str) -> int:
    if not text.isdigit():
        raise _ParseError(f"{field} must be a number, got {text!r}")
    value = int(text)
    if value >= 2**bits:
        raise _ParseError(f"{field} out of range (0-{2**bits - 1}): {text!r}")
    return value


def _unescape(text: str) -> bytes:
    r"""Decode a zone-file character string: \DDD is a byte, \X is X."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                code = int(text[i + 1 : i + 4])
                if code > 255:
                    raise _ParseError(f"bad escape \\{text[i + 1 : i + 4]}")
                out.append(code)
                i += 4
            else:
                out += text[i + 1].encode("utf-8")
                i += 2
        else:
            out += c.encode("utf-8")
            i += 1
    return bytes(out)


def _txt_record(strings: list[bytes], ttl: int) -> dns.Record_TXT:
    # A character-string holds at most 255 bytes: split longer text.
    chunks = []
    for s in strings:
        chunks.extend([s[i : i + 255] for i in range(0, len(s), 255)] or [b""])
    return dns.Record_TXT(*chunks, ttl=ttl)


_USAGE = {
    "A": "an IPv4 address",
    "AAAA": "an IPv6 address",
    "CNAME": "a target name",
    "NS": "a name server name",
    "PTR": "a target name",
    "MX": "'preference host'",
    "SRV": "'priority weight port target'",
    "SOA": "'mname rname serial refresh retry expire minimum'",
    "TXT": "one or more strings",
}
_FIELDS = {"A": 1, "AAAA": 1, "CNAME": 1, "NS": 1, "PTR": 1, "MX": 2, "SRV": 4, "SOA": 7}


def _build_record(tname: str, tokens: list, origin: bytes | None, ttl: int, absolute: bool = False):
    """Build a twisted.names Record from presentation-format tokens [(text, quoted)]."""
    if tname == "TXT":
        if not tokens:
            raise _ParseError(f"expected {_USAGE['TXT']}")
        return _txt_record([_unescape(text) for text, _ in tokens], ttl)
    texts = [text for text, quoted in tokens]
    if any(quoted for _, quoted in tokens):
        raise _ParseError(f"unexpected quoted string in {tname} data")
    if len(texts) != _FIELDS[tname]:
        raise _ParseError(f"expected {_USAGE[tname]}, got {len(texts)} field(s)")
    if tname in ("A", "AAAA"):
        version = 4 if tname == "A" else 6
        try:
            address = ipaddress.ip_address(texts[0])
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise _ParseError(f"not an IPv{version} address: {texts[0]!r}")
        cls = dns.Record_A if version == 4 else dns.Record_AAAA
        return cls(str(address), ttl=ttl)
    if tname in ("CNAME", "NS", "PTR"):
        cls = {"CNAME": dns.Record_CNAME, "NS": dns.Record_NS, "PTR": dns.Record_PTR}[tname]
        return cls(_relative_name(texts[0], origin, absolute), ttl=ttl)
    if tname == "MX":
        preference = _uint(texts[0], 16, "MX preference")
        return dns.Record_MX(preference, _relative_name(texts[1], origin, absolute, allow_root=True), ttl=ttl)
    if tname == "SRV":
        priority = _uint(texts[0], 16, "SRV priority")
        weight = _uint(texts[1], 16, "SRV weight")
        port = _uint(texts[2], 16, "SRV port")
        target = _relative_name(texts[3], origin, absolute, allow_root=True)
        return dns.Record_SRV(priority, weight, port, target, ttl=ttl)
    if tname == "SOA":
        mname = _relative_name(texts[0], origin, absolute)
        rname_text = texts[1]
        if "@" in rname_text:  # accept a mail address for the responsible person
            rname_text = rname_text.replace("@", ".", 1)
        rname = _relative_name(rname_text, origin, absolute)
        serial = _uint(texts[2], 32, "SOA serial")
        refresh, retry, expire, minimum = (_parse_ttl(t) for t in texts[3:7])
        return dns.Record_SOA(mname, rname, serial, refresh, retry, expire, minimum, ttl=ttl)
    raise _ParseError(f"unsupported record type {tname!r}")  # pragma: no cover


# -- zone files --------------------------------------------------------------


def _scan_line(line: str, tokens: list, depth: int) -> int:
    """Append the tokens of one physical line; return the new parenthesis depth."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\f\v":
            i += 1
        elif c == ";":
            break
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            if depth == 0:
                raise _ParseError("')' without '('")
            depth -= 1
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            if j >= n:
                raise _ParseError("unterminated quoted string")
            tokens.append((line[i + 1 : j], True))
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in ' \t\r\f\v;()"':
                j += 2 if line[j] == "\\" else 1
            tokens.append((line[i:j], False))
            i = j
    return depth


def _tokenize_value(value: str) -> list:
    tokens: list = []
    if _scan_line(value.replace("\n", " "), tokens, 0) != 0:
        raise _ParseError("unbalanced '('")
    return tokens


def _logical_records(text: str, path: str) -> Iterable[tuple[int, bool, list]]:
    """
    Yield (first line number, starts with blank, tokens) per logical record:
    comments dropped, quoted strings kept whole, and a record in parentheses
    joined across lines whatever the layout ("(" anywhere, data after it,
    ")" on its own line or at the end of a line).
    """
    depth = 0
    tokens: list = []
    start = 0
    blank = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if depth == 0:
            start, tokens, blank = lineno, [], line[:1] in (" ", "\t")
        try:
            depth = _scan_line(line, tokens, depth)
        except _ParseError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if depth == 0 and tokens:
            yield start, blank, tokens
    if depth:
        raise ValueError(f"{path}:{start}: '(' is never closed")


def _default_origin(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".zone", ".db"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    if base.lower().startswith("db."):
        base = base[3:]
    return base + "."


def _parse_zone_file(path: str, default_ttl: int) -> tuple[bytes, list]:
    """
    Parse a BIND zone file: $ORIGIN, $TTL, "@", relative names, blank owners,
    TTL and class in either order, TTL units (1h30m), quoted TXT strings and
    parenthesised multi-line records.  Returns (apex, [(owner, record)]).
    The origin defaults to the file name (minus .zone/.db, db.).

    Not BindAuthority's parser: in Twisted 26.10 it drops the data after "("
    on a record's first line (the SOA fields shift), never closes a "( ... )"
    written on one line (swallowing the rest of the file), splits quoted TXT
    strings at spaces keeping the quotes, reads a numeric owner as a TTL,
    files blank-owner lines under the origin, does not expand relative names
    in record data, and reports no line numbers.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read zone file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: zone file is not UTF-8 text ({e})") from None

    try:
        origin = _domain_name(_default_origin(path))
    except _ParseError:
        origin = None
    ttl = None
    previous_owner = None
    entries = []  # (lineno, owner, record)
    for lineno, blank, tokens in _logical_records(text, path):
        try:
            first = tokens[0][0]
            if not blank and first.startswith("$"):
                directive = first.upper()
                if directive not in ("$ORIGIN", "$TTL"):
                    raise _ParseError(f"unsupported directive {first} (only $ORIGIN and $TTL)")
                if len(tokens) != 2:
                    raise _ParseError(f"{directive} takes one argument")
                if directive == "$ORIGIN":
                    origin = _relative_name(tokens[1][0], origin, absolute=False)
                else:
                    ttl = _parse_ttl(tokens[1][0])
                continue
            if blank:
                if previous_owner is None:
                    raise _ParseError("record starts with blank space but there is no previous owner name")
                owner = previous_owner
            else:
                owner = _relative_name(first, origin, absolute=False)
                tokens = tokens[1:]
            record_ttl = None
            for _ in range(2):
                if not tokens or tokens[0][1]:
                    break
                word = tokens[0][0]
                if record_ttl is None and _TTL_RE.fullmatch(word):
                    record_ttl = _parse_ttl(word)
                elif word.upper() in _CLASSES:
                    if word.upper() != "IN":
                        raise _ParseError(f"unsupported class {word} (only IN)")
                else:
                    break
                tokens = tokens[1:]
            if not tokens:
                raise _ParseError("missing record type")
            tname = tokens[0][0].upper()
            if tname not in SUPPORTED_TYPES:
                raise _ParseError(f"unsupported record type {tokens[0][0]!r} (supported: {', '.join(SUPPORTED_TYPES)})")
            effective_ttl = record_ttl if record_ttl is not None else (ttl if ttl is not None else default_ttl)
            record = _build_record(tname, tokens[1:], origin, effective_ttl)
        except _ParseError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        entries.append((lineno, owner, record))
        previous_owner = owner

    soas = [(lineno, owner) for lineno, owner, record in entries if record.TYPE == dns.SOA]
    if not soas:
        raise ValueError(f"{path}: no SOA record (a zone file needs exactly one)")
    if len(soas) > 1:
        raise ValueError(f"{path}:{soas[1][0]}: second SOA record (first on line {soas[0][0]})")
    apex = soas[0][1]
    for lineno, owner, record in entries:
        if not _under(owner, apex):
            raise ValueError(f"{path}:{lineno}: {owner.decode()!r} is outside the zone {apex.decode()!r}")
    return apex, [(owner, record) for lineno, owner, record in entries]
