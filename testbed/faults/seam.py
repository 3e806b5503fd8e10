"""The stage seam: the one door through which a protocol asks for a fault at a stage and carries it out.

A connection's ``StageSeam`` is built by the fault wrapper and handed to the
protocol by its factory (``SeamFactory.buildProtocol(addr, seam)``). The
protocol calls ``at(stage, **attributes)``; a wire action is applied to the
connection there and then, a protocol action comes back for the protocol to
carry out, and the common ones (``reply`` with a code, message and ``then``;
``silence``) go through ``carry_out`` with the protocol's ``ReplyStyle``.
Secondary channels (FTP data connections, SSH channels) get their faulting
factory from ``channel``. Nothing here knows a protocol: a proxy that parses a
real server's traffic can build a seam per connection and ask it the same way.
"""

from __future__ import annotations

from typing import Any, Callable

from testbed.faults.engine import Fault, FaultEngine
from testbed.faults.rules import ReplyStyle
from testbed.journal import REPLY, Journal


class StageSeam:
    """One connection's view of the fault engine and the journal."""

    __slots__ = ("engine", "server", "conn", "journal", "clock", "replies", "tls", "_wire", "_connect",
                 "_connect_asked", "guarded")

    def __init__(self, engine: FaultEngine | None, server: str, conn: int, journal: Journal | None = None,
                 clock=None, replies: ReplyStyle | None = None, tls: bool = False):
        self.engine = engine
        self.server = server
        self.conn = conn
        #: Whether the connection came in on a TLS listener (implicit TLS; STARTTLS comes later).
        self.tls = tls
        self.journal = journal if journal is not None else (engine.journal if engine is not None else None)
        self.clock = clock
        self.replies = replies
        #: What applies wire actions to this connection (the fault wrapper); None without one.
        self._wire = None
        self._connect: Fault | None = None
        self._connect_asked = False
        #: The protocol may read a credential now (before login): see ``guard`` and ``redact``.
        self.guarded = False

    def bind(self, wire) -> None:
        """Attach the connection's wire control: ``apply(fault)``, ``black_hole()``, ``loseConnection()``..."""
        self._wire = wire

    # -- asking ------------------------------------------------------------------

    def wants(self, stage: str) -> bool:
        """Whether a rule is aimed at ``stage``: ask before building costly attributes."""
        return self.engine is not None and self.engine.wants(self.server, stage)

    def decide(self, stage: str, **attributes: Any) -> Fault | None:
        """The fault for this stage, without applying a wire action yet (``apply`` it when the time comes)."""
        if self.engine is None:
            return None
        return self.engine.decide(self.server, stage, self.conn, attributes)

    def at(self, stage: str, **attributes: Any) -> Fault | None:
        """The fault for this stage; a wire action is applied to the connection from here on."""
        if stage == "connect" and self._connect_asked:
            return self._connect
        fault = self.decide(stage, **attributes)
        if fault is not None and fault.wire:
            self.apply(fault)
        elif fault is not None and fault.action == "tls_abort":
            # Carried out here, for every protocol alike: the connection's next TLS
            # handshake (now, on an implicit-TLS listener) is cut; the protocol goes on as usual.
            if self._wire is not None:
                self._wire.cut_handshake(fault.param("cut_after") or "client_hello")
            fault = None
        if stage == "connect":
            self._connect_asked, self._connect = True, fault
        return fault

    # -- carrying out ---------------------------------------------------------------

    def apply(self, fault: Fault) -> None:
        """Apply a wire action to this connection now."""
        if self._wire is not None:
            self._wire.apply(fault)

    def stall(self) -> None:
        """From now on nothing more reaches the client, not even a FIN."""
        if self._wire is not None:
            self._wire.black_hole()

    def then(self, how: str) -> None:
        """After a fault's reply: "none", "close" (FIN), "reset" (RST) or "stall" (black hole)."""
        wire = self._wire
        if wire is None or how == "none":
            return
        if how == "close":
            wire.loseConnection()
        elif how == "reset":
            wire.abortConnection()
        elif how == "stall":
            wire.black_hole()

    def carry_out(self, fault: Fault | None, stage: str, send: Callable[[Any, str], None],
                  silence: Callable[[], None] | None = None, **journal_fields: Any) -> bool:
        """Carry out a ``reply`` or ``silence`` fault; True when it did (the stage's normal answer must not follow).

        ``send(code, text)`` writes the protocol's own error reply; ``silence()``
        is what the protocol does when it stops answering (after ``silence``, or
        after a ``then`` that closes, resets or stalls). Wire actions and the
        protocol's other actions are not carried out here: False.
        """
        if fault is None or fault.wire:
            return False
        if fault.action == "silence":
            self.record(REPLY, stage=stage, silenced=True, **journal_fields)
            if silence is not None:
                silence()
            return True
        if fault.action != "reply":
            return False
        style = self.replies or ReplyStyle()
        code = style.code(fault.param, stage)
        text = fault.param("message") or style.text(code, stage)
        send(code, text)
        how = fault.param("then") or ("close" if style.closes(code, stage) else "none")
        self.then(how)
        if how != "none" and silence is not None:
            silence()
        return True

    # -- secondary channels and the journal -----------------------------------------------

    def channel(self, factory_class, wrapped_factory, **kwargs: Any):
        """A faulting factory for a secondary channel of this connection, or None without a wrapper.

        ``factory_class`` is a ``testbed.faults.wire.ChannelFactory`` (subclass);
        its connections carry this connection's number and rules.
        """
        if self._wire is None or self.engine is None:
            return None
        return factory_class(wrapped_factory, self, **kwargs)

    def guard(self, on: bool) -> None:
        """Say whether a credential may arrive now (from connect to login); only then can ``redact`` mask."""
        if self._wire is not None:
            self.guarded = on

    def redact(self, secret: bytes) -> None:
        """The protocol just read ``secret`` (a password, a SASL response): mask it in the journaled payload.

        Called while the bytes that carried it are being delivered; the payload
        keeps its length and is marked ``redacted``.
        """
        if self.guarded and secret:
            self._wire.redact(secret)

    def record(self, kind: str, **fields: Any) -> None:
        """Journal an event of this connection."""
        if self.journal is not None:
            self.journal.record(kind, self.server, self.conn, **fields)


#: For protocols built without the wrapper (unit tests over a bare transport): no faults, no journal.
NO_SEAM = StageSeam(None, "", 0)


class SeamFactory:
    """Mixin for a server factory: ``buildProtocol(addr, seam)`` hands the protocol its connection's seam.

    The fault wrapper calls it with the seam; Twisted's own callers pass only
    ``addr`` and the protocol gets ``NO_SEAM``. The protocol reads ``self.seam``.
    """

    def buildProtocol(self, addr, seam: StageSeam = NO_SEAM):
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.seam = seam
        return protocol
