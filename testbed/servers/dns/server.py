"""The DNS server, on ``twisted.names``: a ZoneSet served over UDP and TCP on one port number, with query faults.

Every query is recorded (``server.queries``) and journaled; at the ``query``
stage the fault engine may answer with an rcode, drop, delay, duplicate or
corrupt the reply, or malform it (TC bit, wrong id, question, name, TTL...).
Stages: ``connect`` takes wire actions on a TCP connection ("truncate" there
is the wire one), ``datagram`` the datagram actions on UDP, ``query`` the DNS
actions; a DNS action at another stage does nothing.

Twisted 26.10 quirks handled here: a decoded query has ``maxSize = 0``, so
``DNSServerFactory`` never truncates a UDP answer (it would cut the body
mid-record and leave the counts, when it did); refused and unimplemented
messages are answered with the query itself (QR clear); RD, opcode and EDNS
are not echoed; undecodable datagrams vanish without a trace.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import attrs
from twisted.internet import defer
from twisted.names import dns, resolve
from twisted.protocols import policies

from testbed.faults.udp import FaultingDatagramProtocol, apply_datagram_fault
from testbed.faults.seam import NO_SEAM, SeamFactory
from testbed.schema import ScenarioError
from testbed.journal import COMMAND, ERROR, REPLY, STORED, Records, internal
from testbed.servers.base import Server
from testbed.servers.dns.records import ZoneServerFactory, ZoneSet
from testbed.servers.udp import listen_tcp_and_udp

__all__ = ["DNSFactory", "DNSQuery", "DNSServer", "DNSStream", "DNSDatagram", "RCODES", "rdata_text", "rr_text"]

#: Fault ``rcode`` names -> codes.
RCODES = {"NOERROR": dns.OK, "FORMERR": dns.EFORMAT, "SERVFAIL": dns.ESERVER, "NXDOMAIN": dns.ENAME,
          "NOTIMP": dns.ENOTIMP, "REFUSED": dns.EREFUSED}
_RCODE_NAMES = {code: name for name, code in RCODES.items()}
_RCODE_NAMES.update({6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"})

#: A UDP answer without EDNS fits in 512 bytes (RFC 1035 4.2.1); we advertise 1232 (DNS flag day 2020).
UDP_LIMIT = 512
EDNS_PAYLOAD = 1232
_MAX_DATAGRAM = 65507
_OPT_RR = b"\x00" + struct.pack("!HHIH", dns.OPT, EDNS_PAYLOAD, 0, 0)
_HEADER = struct.Struct("!HBBHHHH")

#: Query-stage actions carried out on the encoded reply like a datagram (either transport).
_DATAGRAM_STYLE = frozenset({"drop", "delay", "duplicate", "corrupt"})
#: Wire actions that mean "no answer" on UDP; on TCP they shape the connection through the wrapper.
_SILENT_ON_UDP = frozenset({"reset", "close", "stall"})
#: Seconds a DNS-over-TCP connection may stay silent before the server closes it (RFC 7766 asks for one).
TCP_IDLE_TIMEOUT = 30.0
_TCP_WIRE = frozenset({"reset", "close", "stall", "throttle", "slice"})


def _type_name(code: int) -> str:
    if code == dns.ALL_RECORDS:
        return "ANY"
    return dns.QUERY_TYPES.get(code) or dns.EXT_QUERIES.get(code) or f"TYPE{code}"


def _rcode_name(code: int) -> str:
    return _RCODE_NAMES.get(code, f"RCODE{code}")


def _name_text(name) -> str:
    raw = name.name if isinstance(name, dns.Name) else name
    return raw.decode("ascii", "backslashreplace").rstrip(".") + "." if raw else "."


def _character_string(data: bytes) -> str:
    out = []
    for b in data:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def rdata_text(rr: dns.RRHeader) -> str:
    """The record data of ``rr`` in presentation format (as in a zone file)."""
    p = rr.payload
    t = rr.type
    if t == dns.A:
        return socket.inet_ntop(socket.AF_INET, p.address)
    if t == dns.AAAA:
        return socket.inet_ntop(socket.AF_INET6, p.address)
    if t in (dns.CNAME, dns.NS, dns.PTR):
        return _name_text(p.name)
    if t == dns.MX:
        return f"{p.preference} {_name_text(p.name)}"
    if t == dns.SRV:
        return f"{p.priority} {p.weight} {p.port} {_name_text(p.target)}"
    if t == dns.SOA:
        return (f"{_name_text(p.mname)} {_name_text(p.rname)} {p.serial} {p.refresh} {p.retry} "
                f"{p.expire} {p.minimum}")
    if t == dns.TXT:
        return " ".join(_character_string(s) for s in p.data)
    data = getattr(p, "data", None)
    if not isinstance(data, bytes):
        from io import BytesIO

        out = BytesIO()
        p.encode(out)
        data = out.getvalue()
    return f"\\# {len(data)} {data.hex()}" if data else "\\# 0"


def rr_text(rr: dns.RRHeader) -> str:
    """One record as a zone-file line: ``www.example.test. 300 IN A 192.0.2.1``."""
    return f"{_name_text(rr.name)} {rr.ttl} IN {_type_name(rr.type)} {rdata_text(rr)}"


@attrs.frozen
class DNSQuery:
    """A query as the server received it, and the answer it gave (or would have given, when a fault held it)."""

    name: str
    type: str
    transport: str
    rcode: str
    conn: int
    id: int
    peer: str
    #: The action of the query-stage fault that shaped the reply, if any.
    fault: str | None = None
    truncated: bool = False
    #: False when no reply left (a drop, a silent wire action).
    sent: bool = True
    #: The response as encoded, before any byte-level fault (kept as bytes: cheap to hold, decoded on demand).
    wire: bytes = attrs.field(default=b"", repr=False, eq=False)

    @property
    def message(self) -> dns.Message:
        """The response (twisted.names Message), decoded from ``wire``."""
        message = dns.Message()
        message.fromStr(self.wire)
        return message

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the question, who asked, the rcode and answer records, the fault that shaped it."""
        return {"name": self.name, "type": self.type, "transport": self.transport, "rcode": self.rcode,
                "conn": self.conn, "id": self.id, "peer": self.peer, "fault": self.fault,
                "truncated": self.truncated, "sent": self.sent, "answer": self.answer}

    @property
    def answer(self) -> list[str]:
        """The answer section as text records (``"www.example.test. 300 IN A 127.0.0.5"``)."""
        return [rr_text(rr) for rr in self.message.answers] if self.wire else []


class _Exchange:
    """One message on its way through the factory: where it came from and how to answer it."""

    __slots__ = ("protocol", "address", "transport", "conn", "seam", "limit", "edns", "fault", "name", "type",
                 "peer", "id", "opcode")

    def __init__(self, protocol, address, transport, conn, seam):
        self.protocol = protocol
        self.address = address
        self.transport = transport
        self.conn = conn
        #: The TCP connection's seam; None for UDP (the factory's engine decides per peer).
        self.seam = seam
        self.limit = 0
        self.edns = False
        self.fault = None
        self.name = ""
        self.type = ""
        self.peer = ""
        self.id = 0
        self.opcode = dns.OP_QUERY


class DNSStream(policies.TimeoutMixin, dns.DNSProtocol):
    """DNS over TCP: each length-prefixed message goes to the factory, which answers through ``send``.

    Twisted's DNSProtocol has no idle timeout: a connection is closed after TCP_IDLE_TIMEOUT seconds without a byte.
    """

    seam = NO_SEAM

    def callLater(self, period, func):  # TimeoutMixin: the factory's clock (a Clock in unit tests)
        return self.controller.clock.callLater(period, func)

    def connectionMade(self):
        super().connectionMade()
        self.setTimeout(TCP_IDLE_TIMEOUT)
        fault = self.seam.at("connect")
        if fault is not None and fault.action == "truncate":
            # "truncate" is a DNS action (TC) at the query stage; at connect it is the wire action.
            self.seam.apply(fault)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        super().dataReceived(data)

    def timeoutConnection(self) -> None:
        self.seam.record(ERROR, error="idle timeout", seconds=TCP_IDLE_TIMEOUT)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)
        super().connectionLost(reason)

    def stringReceived(self, data: bytes) -> None:
        self.controller.receive(_Exchange(self, None, "tcp", self.seam.conn, self.seam), data)

    def send(self, data: bytes, address=None) -> None:
        if self.transport is not None and not getattr(self.transport, "lost", False):
            self.sendString(data)

    def peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"


class DNSDatagram(dns.DNSDatagramProtocol):
    """DNS over UDP: each datagram goes to the factory; the transport is usually the datagram fault wrapper."""

    noisy = False

    def datagramReceived(self, data: bytes, addr) -> None:
        number = getattr(self.transport, "connection_number", None)
        conn = number(addr) if number is not None else 0
        self.controller.receive(_Exchange(self, addr, "udp", conn, None), data)

    def send(self, data: bytes, address) -> None:
        if self.transport is not None:
            self.transport.write(data, address)


class DNSFactory(SeamFactory, ZoneServerFactory):
    """
    Answers from a ZoneSet (through ZoneServerFactory's REFUSED and NXDOMAIN+SOA
    handling), records each query in ``queries``, and carries out query faults.
    ``engine``/``journal``/``clock`` may be None in bare unit tests.
    """

    protocol = DNSStream
    noisy = False

    def __init__(self, zones: ZoneSet, engine=None, journal=None, clock=None, server: str = "dns"):
        super().__init__(authorities=[zones])
        if clock is None:
            from twisted.internet import reactor as clock
        self.zones = zones
        self.engine = engine
        self.journal = journal
        self.clock = clock
        self.server = server
        #: What was asked and answered, the newest ``journal.max_events`` (all without a journal), each as
        #: the exact tuple of ``DNSQuery``'s fields: a tuple of strings, numbers and bytes drops out of the
        #: garbage collector's tracking, where a few hundred thousand attrs instances made every full
        #: collection walk them all (3.5% of a busy server's time).
        self.raw_queries = journal.records() if journal is not None else Records()

    @property
    def queries(self) -> list[DNSQuery]:
        """What was asked and answered, oldest first."""
        return [DNSQuery(*raw) for raw in list(self.raw_queries)]

    def set_zones(self, zones: ZoneSet) -> None:
        self.zones = zones
        self.resolver = resolve.ResolverChain([zones])

    def _record(self, kind: str, ex: _Exchange, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(kind, self.server, ex.conn, **fields)

    # -- in ---------------------------------------------------------------

    def receive(self, ex: _Exchange, data: bytes) -> None:
        """One message from a client: decode it, or answer FORMERR / journal an error; never raise."""
        message = dns.Message()
        try:
            message.fromStr(data)
        except Exception as e:  # EOFError, ValueError, struct.error...: whatever a datagram can provoke
            self._undecodable(ex, data, f"{type(e).__name__}: {e}")
            return
        counts = _HEADER.unpack_from(data)[3:]
        if counts != (len(message.queries), len(message.answers), len(message.authority), len(message.additional)):
            # Message.decode stops quietly at the end of the data, whatever the header promised.
            self._undecodable(ex, data, f"sections end early (header counts {counts})")
            return
        if message.answer:
            self._record(ERROR, ex, error="not a query (QR set)", transport=ex.transport, size=len(data),
                         id=message.id)
            return
        try:
            self._dispatch(message, ex)
        except Exception as e:  # a bug of ours must not stop the server
            self._record(ERROR, ex, error=f"{type(e).__name__}: {e}", transport=ex.transport, size=len(data),
                         **internal(e))

    def _undecodable(self, ex: _Exchange, data: bytes, why: str) -> None:
        self._record(ERROR, ex, error="undecodable message", detail=why, transport=ex.transport, size=len(data),
                     payload=data[:64])
        if len(data) >= 12 and not data[2] & 0x80:
            # A query header we can read: FORMERR, question-less (RFC 1035 4.1.1).
            (qid,) = struct.unpack_from("!H", data)
            opcode = (data[2] >> 3) & 0xF
            reply = _HEADER.pack(qid, 0x80 | (opcode << 3) | (data[2] & 1), dns.EFORMAT, 0, 0, 0, 0)
            self._record(REPLY, ex, rcode="FORMERR", answers=0, transport=ex.transport)
            ex.protocol.send(reply, ex.address)

    def _dispatch(self, message, ex: _Exchange) -> None:
        """DNSServerFactory.messageReceived, except that refused and unimplemented messages get a real
        response (Twisted sends the query back with QR clear) and the exchange rides along on the message."""
        query = message.queries[0] if message.queries else None
        ex.name = (query.name.name.decode("ascii", "backslashreplace").rstrip(".") or ".") if query else ""
        ex.type = _type_name(query.type) if query else ""
        size = UDP_LIMIT
        for rr in message.additional:
            if rr.type == dns.OPT:
                ex.edns = True
                size = max(UDP_LIMIT, min(rr.cls, _MAX_DATAGRAM))
        if ex.transport == "udp":
            ex.limit = size  # over TCP, no limit: 0
            ex.peer = f"{ex.address[0]}:{ex.address[1]}"
        else:
            ex.peer = ex.protocol.peer()
        message.exchange = ex
        ex.id = message.id
        ex.opcode = message.opCode
        # Journaled once, with its answer folded in, when the reply is made (``sendReply``).
        if message.opCode != dns.OP_QUERY:
            self.sendReply(ex.protocol, self._responseFromMessage(message, rCode=dns.ENOTIMP), ex.address)
        elif query is None:
            self.sendReply(ex.protocol, self._responseFromMessage(message, rCode=dns.EFORMAT), ex.address)
        else:
            self.handleQuery(message, ex.protocol, ex.address)

    def handleQuery(self, message, protocol, address):
        ex = message.exchange
        query = message.queries[0]
        fault = ex.fault = self._decide(ex)
        if fault is not None and fault.action == "reply":
            rcode = RCODES[fault.param("rcode", "SERVFAIL")]
            self.sendReply(protocol, self._responseFromMessage(message, rCode=rcode), address)
            return defer.succeed(None)
        if query.cls in (dns.IN, dns.ANY) and query.type not in (dns.AXFR, dns.IXFR):
            # The hot path: the ZoneSet answers synchronously, so skip the Deferreds (and the Failure that
            # IResolver.query builds for every NXDOMAIN and REFUSED); the answer is what gotResolver* sends.
            rcode, answers, authority, additional = self.zones.lookup(query.name.name, query.type)
            response = self._responseFromMessage(message, rCode=rcode, answers=answers, authority=authority,
                                                 additional=additional)
            self.sendReply(protocol, response, address)
            return defer.succeed(None)
        d = self.zones.query(query)
        d.addCallback(self.gotResolverResponse, protocol, message, address)
        d.addErrback(self.gotResolverError, protocol, message, address)
        d.addErrback(self._failed, ex)
        return d

    def _failed(self, failure, ex):
        self._record(COMMAND, ex, command="query", name=ex.name, type=ex.type, transport=ex.transport, id=ex.id,
                     rcode=None, answers=0, sent=False)
        self._record(ERROR, ex, error=failure.getErrorMessage(), transport=ex.transport, name=ex.name, type=ex.type,
                     **internal(failure))

    def _decide(self, ex: _Exchange):
        engine = self.engine
        if engine is None or not engine.wants(self.server, "query"):
            return None
        attributes = {"name": ex.name, "type": ex.type, "transport": ex.transport}
        if ex.seam is not None:  # TCP: the connection's own seam
            fault = ex.seam.decide("query", **attributes)
            if fault is not None and fault.action in _TCP_WIRE:
                ex.seam.apply(fault)  # the wire action, from this reply on
            return fault
        return engine.decide(self.server, "query", ex.conn, attributes)

    def _responseFromMessage(self, message, rCode=dns.OK, answers=None, authority=None, additional=None):
        response = super()._responseFromMessage(message, rCode=rCode, answers=answers, authority=authority,
                                                additional=additional)
        response.opCode = message.opCode
        response.recDes = message.recDes
        response.checkingDisabled = message.checkingDisabled
        response.maxSize = 0  # we truncate ourselves, whole records at a time
        response.exchange = getattr(message, "exchange", None)
        return response

    # -- out ---------------------------------------------------------------

    def sendReply(self, protocol, message, address):
        ex = getattr(message, "exchange", None)
        if ex is None:
            return super().sendReply(protocol, message, address)
        fault = ex.fault
        action = fault.action if fault is not None else None
        if action is not None:
            self._malform(message, fault)
        data = message.toStr()
        truncated = bool(message.trunc)
        limit = ex.limit
        if limit and len(data) + (len(_OPT_RR) if ex.edns else 0) > limit:
            message.trunc = 1
            message.answers, message.authority, message.additional = [], [], []
            data = message.toStr()
            truncated = True
        if ex.edns:
            data = _with_opt(data)
        rcode = _RCODE_NAMES.get(message.rCode) or _rcode_name(message.rCode)
        silent = action is not None and (action == "drop" or (ex.transport == "udp" and action in _SILENT_ON_UDP))
        self.raw_queries.append((ex.name, ex.type, ex.transport, rcode, ex.conn, message.id, ex.peer, action,
                                 truncated, not silent, data))
        if action is None:
            if self.journal is not None:
                # The query and its answer, in one event: the common case costs one record.
                self.journal.record(COMMAND, self.server, ex.conn, command="query", name=ex.name, type=ex.type,
                                    transport=ex.transport, id=ex.id, rcode=rcode, answers=len(message.answers),
                                    **(_TRUNCATED if truncated else _PLAIN), **(
                                        {"opcode": ex.opcode} if ex.opcode != dns.OP_QUERY else _PLAIN))
            ex.protocol.send(data, address)
            return
        fields = {"command": "query", "name": ex.name, "type": ex.type, "transport": ex.transport, "id": ex.id,
                  "rcode": rcode, "answers": len(message.answers), "fault": action, "sent": not silent}
        if truncated:
            fields["truncated"] = True
        if ex.opcode != dns.OP_QUERY:
            fields["opcode"] = ex.opcode
        self._record(COMMAND, ex, **fields)
        self._deliver(ex, fault, data, address)

    def _malform(self, message, fault) -> None:
        """The message-level query faults, on the response before it is encoded."""
        action = fault.action
        if action == "wrong_id":
            message.id = (message.id + fault.rng.randrange(1, 0x10000)) & 0xFFFF
        elif action == "wrong_question":
            q = message.queries[0]
            message.queries = [dns.Query(fault.param("qname", "question-mismatch.invalid"), q.type, q.cls)]
        elif action == "wrong_name":
            name = fault.param("owner", "wrong-name.invalid")
            message.answers = [dns.RRHeader(name, rr.type, rr.cls, rr.ttl, rr.payload, rr.auth)
                               for rr in message.answers]
        elif action == "nodata":
            q = message.queries[0]
            zone = self.zones.zone(q.name.name)
            message.rCode = dns.OK
            message.answers, message.additional = [], []
            message.authority = [zone.negative_soa()] if zone is not None else []
        elif action == "ttl":
            ttl = max(0, min(int(fault.param("ttl", 0)), 0xFFFFFFFF))
            for section in ("answers", "authority", "additional"):
                setattr(message, section, [dns.RRHeader(rr.name.name, rr.type, rr.cls, ttl, rr.payload, rr.auth)
                                           for rr in getattr(message, section)])
        elif action == "truncate":
            message.trunc = 1
            message.answers, message.authority, message.additional = [], [], []

    def _deliver(self, ex: _Exchange, fault, data: bytes, address) -> None:
        """The byte-level query faults, on the encoded reply."""
        action = fault.action
        protocol = ex.protocol
        tcp = ex.transport == "tcp"

        def send(d, protocol=protocol, address=address):
            protocol.send(d, address)

        if action in _DATAGRAM_STYLE:
            apply_datagram_fault(fault, data, send, self.clock)
        elif action == "garbage":
            size = min(int(fault.rule.params.get("bytes", 64)), 0xFFFF if tcp else _MAX_DATAGRAM)
            send(fault.rng.randbytes(size))
        elif action in ("tcp_length_only", "tcp_partial"):
            size = len(data) // 2 if "bytes" not in fault.rule.params else int(fault.param("bytes"))
            prefix = struct.pack("!H", len(data))
            if not tcp:  # no length prefix on UDP: the length alone, or a short datagram
                send(prefix if action == "tcp_length_only" else data[:size])
                return
            transport = protocol.transport
            transport.write(prefix if action == "tcp_length_only" else prefix + data[:size])
            transport.loseConnection()
        elif tcp or action not in _SILENT_ON_UDP:
            if not tcp and action in ("throttle", "slice"):
                # A datagram cannot be sliced: it arrives as late as its last byte would.
                if action == "throttle":
                    wait = len(data) / max(1, int(fault.param("bytes_per_second")))
                else:
                    size = max(1, int(fault.param("size")))
                    wait = (len(data) - 1) // size * float(fault.param("interval"))
                self.clock.callLater(wait, send, data)
            else:
                send(data)


_PLAIN: dict = {}
_TRUNCATED = {"truncated": True}


def _with_opt(data: bytes) -> bytes:
    """Append our OPT record (EDNS0, payload size EDNS_PAYLOAD) to an encoded message."""
    (arcount,) = struct.unpack_from("!H", data, 10)
    return data[:10] + struct.pack("!H", arcount + 1) + data[12:] + _OPT_RR


class DNSServer(Server):
    """``dns_server``: ``host``, ``port`` (UDP and TCP), ``queries``, ``add_record(...)``, ``wait_for(...)``."""

    scheme = "dns"

    def __init__(self, context):
        super().__init__(context)
        self.factory: DNSFactory | None = None
        self.udp: FaultingDatagramProtocol | None = None
        self._changed = False

    def build_zones(self) -> ZoneSet:
        """A fresh ZoneSet from the scenario's records and zone files."""
        context = self.context
        config = self.config
        try:
            return ZoneSet(records=config.records, zone_files=[context.path(p) for p in config.zone_files],
                           default_ttl=config.ttl)
        except ValueError as e:
            raise ScenarioError(context.source, f"servers.{self.name}",
                                f"valid records and zone files ({e})") from None

    @defer.inlineCallbacks
    def start(self):
        context = self.context
        self.factory = DNSFactory(self.build_zones(), engine=context.faults, journal=context.journal, clock=context.reactor,
                                  server=self.name)
        self.udp = FaultingDatagramProtocol(DNSDatagram(self.factory, reactor=context.reactor), self.name,
                                            context.faults, context.journal, context.reactor)
        yield listen_tcp_and_udp(self, self.config.listen, self.factory, self.udp, "dns")

    def reset(self) -> None:
        super().reset()
        if self.factory is None:
            return
        self.factory.raw_queries = self.context.journal.records()
        if self._changed:
            self.factory.set_zones(self.build_zones())
            self._changed = False
        if self.udp is not None:
            self.udp.reset()

    # -- the handle ------------------------------------------------------------------

    @property
    def zones(self) -> ZoneSet:
        """The data being served (a ZoneSet): ``zones.lookup(name, type)`` answers as the server would."""
        return self.factory.zones

    @property
    def queries(self) -> list[DNSQuery]:
        return self.factory.queries

    def add_record(self, name: str, type: str, value: str, ttl: int | None = None) -> None:
        """Serve one more record from now on (until the next test); ValueError if it does not parse."""
        self.context.call(self._change, "add", name, type, value, ttl)

    def remove_record(self, name: str, type: str | None = None, value: str | None = None) -> int:
        """Stop serving records of ``name`` (of ``type``, equal to ``value``) until the next test; how many went."""
        return self.context.call(self._change, "remove", name, type, value, None)

    def _change(self, how: str, name, rtype, value, ttl):
        zones = self.factory.zones
        if how == "add":
            result = zones.add_record(name, rtype, value, ttl)
        else:
            result = zones.remove_record(name, rtype, value)
        self._changed = True
        self.context.journal.record(STORED, self.name, None, record=how, name=name, type=rtype, value=value, ttl=ttl)
        return result

    def wait_records(self, selector: str | None):
        """``wait_for`` reads the answered queries (``DNSQuery``)."""
        return (lambda: self.factory.queries), "query"
