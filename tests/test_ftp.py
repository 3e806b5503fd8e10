"""Unit tests for testbed.servers.ftp: every command and fault over StringTransport, byte for byte.

The control connection goes through the fault wrapper (``testbed.testing.connect``); data ports and
active connections go to a ``MemoryReactorClock``, and the test plays the client's side of the data
connection by hand (connect, pump the producer, close).
"""

from __future__ import annotations

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from testbed import testing
from testbed.registry import fault_surfaces
from testbed.journal import CLOSE, COMMAND, ERROR, OPEN, REPLY, STORED
from testbed.servers.ftp import server as ftp_server
from testbed.servers.ftp.server import COMMANDS, FTPFactory, FTPProtocol, _ASCIIUpload, _to_crlf
from testbed.servers.ftp.fs import MemoryShell

SEED = {
    "pub/readme.txt": "hello world\n",
    "pub/lines.txt": "one\ntwo\n",
    "pub/data.bin": "0123456789" * 10,
    "incoming/": None,
}
USERS = {"alice@example.test": "secret"}
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)

PROTOCOLS = fault_surfaces()


class DataSide:
    """The client's end of one data connection."""

    def __init__(self, protocol, transport: StringTransport):
        self.protocol = protocol
        self.transport = transport

    def pump(self, limit: int = 1000) -> bytes:
        """Let the server's producer run until it stops (or ``limit`` steps); the bytes it wrote."""
        for _ in range(limit):
            if self.transport.producer is None:
                break
            self.transport.producer.resumeProducing()
        return self.transport.value()

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self, reason=None) -> None:
        self.protocol.connectionLost(Failure(reason or error.ConnectionDone()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


class Session:
    """One client of an FTPFactory over the fault wrapper, on a MemoryReactorClock."""

    def __init__(self, *rules, files=SEED, users=USERS, tls=False, **kwargs):
        self.reactor = MemoryReactorClock()
        self.uploads: list = []
        self.shell = MemoryShell(files)
        self.tls_options = object()
        self.factory = FTPFactory(self.shell, users=users, reactor=self.reactor, on_upload=self.uploads.append,
                                  tls_options=(lambda: self.tls_options) if tls else None, **kwargs)
        self.conn = testing.connect(self.factory, "ftp", rules=testing.rules(*rules), clock=self.reactor)
        self.greeting = self.conn.sent()

    @property
    def protocol(self) -> FTPProtocol:
        return self.conn.protocol

    @property
    def journal(self):
        return self.conn.journal

    def cmd(self, line: str | bytes) -> bytes:
        """Send one command line; what the server answered so far."""
        self.conn.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.conn.sent()

    def login(self, user="alice@example.test", password="secret") -> bytes:
        assert self.cmd(f"USER {user}").startswith(b"331 ")
        return self.cmd(f"PASS {password}")

    def connect_data(self, peer=("127.0.0.1", 40001), tls_capable=False) -> DataSide:
        """The client connects to the last passive port."""
        _, factory, _, _ = self.reactor.tcpServers[-1]
        addr = IPv4Address("TCP", *peer)
        protocol = factory.buildProtocol(addr)
        assert protocol is not None
        transport = (TLSStringTransport if tls_capable else StringTransport)(
            peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(transport)
        return DataSide(protocol, transport)

    def pasv(self, **kwargs) -> DataSide:
        assert self.cmd("PASV").startswith(b"227 ")
        return self.connect_data(**kwargs)

    def accept_active(self) -> DataSide:
        """The server's active (PORT) connection reaches the client."""
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        addr = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 40002))
        protocol.makeConnection(transport)
        return DataSide(protocol, transport)

    def events(self, kind: str, **match) -> list[dict]:
        return self.journal.query(kind, **match)


class TLSStringTransport(StringTransport):
    tls_started = None

    def startTLS(self, options, normal=True):
        self.tls_started = (options, normal)


def reply_codes(session: Session) -> list[int]:
    return [e["code"] for e in session.events(REPLY)]


# -- greeting and login ---------------------------------------------------------------------------------


def test_greeting():
    s = Session()
    assert s.greeting == b"220 twisted-testbed FTP server ready.\r\n"
    assert s.events(REPLY)[0]["code"] == 220


def test_greeting_421_fault_closes_the_connection():
    s = Session({"server": "ftp", "on": "connect", "action": "reply", "code": 421})
    assert s.greeting == b"421 Service not available, closing control connection.\r\n"
    assert s.conn.closed


def test_greeting_fault_with_a_message_and_then_none_keeps_the_connection():
    s = Session({"server": "ftp", "on": "connect", "action": "reply", "code": 421, "message": "Busy.", "then": "none"})
    assert s.greeting == b"421 Busy.\r\n"
    assert not s.conn.closed


def test_silent_greeting():
    s = Session({"server": "ftp", "on": "connect", "action": "silence"})
    assert s.greeting == b""


def test_named_login_with_the_name_as_written():
    s = Session()
    assert s.cmd("USER alice@example.test") == b"331 Password required for alice@example.test.\r\n"
    assert s.cmd("PASS secret") == b"230 User logged in, proceed.\r\n"
    assert s.protocol.user == "alice@example.test"
    assert s.cmd("PWD") == b'257 "/" is the current directory.\r\n'


def test_wrong_password_and_unknown_user():
    s = Session()
    assert s.login(password="nope") == b"530 Login incorrect.\r\n"
    assert s.cmd("PWD") == b"530 Please login with USER and PASS.\r\n"
    assert s.login(user="alice") == b"530 Login incorrect.\r\n"


def test_pass_is_hidden_in_the_journal():
    s = Session()
    s.login()
    commands = s.events(COMMAND)
    assert [c["command"] for c in commands] == ["USER", "PASS"]
    assert commands[1]["arg"] == "****"
    assert "secret" not in repr(commands)


def test_anonymous_login_is_read_only():
    s = Session()
    assert s.cmd("USER anonymous") == b"331 Anonymous login ok, send your email address as password.\r\n"
    assert s.cmd("PASS guest@example.test") == b"230 Anonymous login ok, access restrictions apply.\r\n"
    assert s.cmd("MKD newdir") == b"550 /newdir (read-only): Permission denied.\r\n"
    s.pasv()
    assert s.cmd("STOR x.txt") == b"550 /x.txt (read-only): Permission denied.\r\n"
    assert "x.txt" not in s.shell.files()


def test_anonymous_refused_when_disabled():
    s = Session(anonymous=False)
    assert s.cmd("USER anonymous") == b"331 Password required for anonymous.\r\n"
    assert s.cmd("PASS x@y") == b"530 Login incorrect.\r\n"


@pytest.mark.parametrize("stage", ["USER", "PASS"])
def test_login_530_fault(stage):
    s = Session({"server": "ftp", "on": stage, "action": "reply", "code": 530})
    if stage == "USER":
        assert s.cmd("USER alice@example.test") == b"530 Not logged in.\r\n"
    else:
        s.cmd("USER alice@example.test")
        assert s.cmd("PASS secret") == b"530 Not logged in.\r\n"
    assert s.cmd("PWD") == b"530 Please login with USER and PASS.\r\n"
    fired = s.events("fault")
    assert fired and fired[0]["on"] == stage and fired[0]["fired"]


def test_fault_matches_the_user():
    s = Session({"server": "ftp", "on": "PASS", "action": "reply", "code": 530, "match": {"user": "bob*"}})
    assert s.login() == b"230 User logged in, proceed.\r\n"


def test_require_tls_refuses_user_before_auth():
    s = Session(tls=True, require_tls=True)
    assert s.cmd("USER alice@example.test") == b"530 TLS required: send AUTH TLS first.\r\n"


def test_commands_before_login_and_state_errors():
    s = Session()
    assert s.cmd("PASS x") == b"503 Login with USER first.\r\n"
    assert s.cmd("RETR x") == b"530 Please login with USER and PASS.\r\n"
    s.cmd("USER alice@example.test")
    assert s.cmd("LIST") == b"503 Login with PASS first.\r\n"
    s.cmd("PASS secret")
    assert s.cmd("USER bob") == b"503 Already logged in.\r\n"
    assert s.cmd("RNTO x") == b"503 RNFR required first.\r\n"


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_gets_replies_not_a_dead_server():
    s = Session()
    s.login()
    assert s.cmd("") == b"500 Syntax error, command unrecognized.\r\n"
    assert s.cmd("XYZZY now") == b"502 Command 'XYZZY' not implemented.\r\n"
    assert s.cmd("RETR") == b"501 Syntax error: RETR needs an argument.\r\n"
    assert s.cmd("CWD  ") == b"501 Syntax error: CWD needs an argument.\r\n"
    assert s.cmd("TYPE Q") == b"501 Unknown type Q.\r\n"
    assert s.cmd("PORT 1,2,3") == b"501 Illegal PORT command.\r\n"
    assert s.cmd("EPRT |9|x|") == b"501 Illegal EPRT command.\r\n"
    assert s.cmd("REST -5") == b"501 REST needs a non-negative byte offset.\r\n"
    assert s.cmd(b"CWD \xff\xfe") == b"550 /\xff\xfe: No such file or directory.\r\n"  # bytes back as sent
    assert s.cmd("NOOP") == b"200 NOOP ok.\r\n"


def test_an_overlong_line_is_answered_journaled_and_closed():
    s = Session()
    s.conn.send(b"A" * 9000)
    assert s.conn.sent() == b"500 Command line too long.\r\n"
    assert s.conn.closed
    assert s.events(ERROR)[0]["error"] == "command line too long"


def test_bare_lf_lines_are_accepted():
    s = Session()
    s.conn.send(b"NOOP\n")
    assert s.conn.sent() == b"200 NOOP ok.\r\n"


# -- session commands -------------------------------------------------------------------------------


def test_feat_lists_what_is_supported():
    s = Session()
    assert s.cmd("FEAT") == (b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n MLST type*;size*;modify*;perm*;\r\n"
                             b" PASV\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n")
    s = Session(tls=True)
    feat = s.cmd("FEAT")
    assert b" AUTH TLS\r\n" in feat and b" PBSZ\r\n" in feat and b" PROT\r\n" in feat


def test_catalog_stages_are_exactly_the_commands():
    assert PROTOCOLS["ftp"].stages == COMMANDS | {"connect", "data"}
    import inspect

    for command in COMMANDS:
        signature = inspect.signature(getattr(FTPProtocol, "ftp_" + command))
        arity = len(signature.parameters) - 1  # self
        if command in ftp_server.NO_ARGUMENT:
            assert arity == 0, command
        else:
            assert arity >= 1, command  # the argument (optional ones have a default)


def test_opts_syst_type_stru_mode():
    s = Session()
    assert s.cmd("OPTS UTF8 ON") == b"200 Always in UTF8 mode.\r\n"
    assert s.cmd("OPTS MLST type;size;") == b"200 MLST OPTS type;size;\r\n"
    assert s.cmd("OPTS FOO") == b"501 Option 'FOO' not understood.\r\n"
    assert s.cmd("SYST") == b"215 UNIX Type: L8\r\n"
    s.login()
    assert s.cmd("TYPE A") == b"200 Type set to A.\r\n"
    assert s.cmd("TYPE A N") == b"200 Type set to A.\r\n"  # Twisted answers 501 here
    assert s.cmd("TYPE L 8") == b"200 Type set to I.\r\n"
    assert s.cmd("TYPE E") == b"504 Type E not implemented.\r\n"
    assert s.cmd("STRU F") == b"200 Command OK\r\n"
    assert s.cmd("MODE S") == b"200 Command OK\r\n"
    assert s.cmd("ABOR") == b"225 No transfer to abort.\r\n"
    assert s.cmd("ALLO 100") == b"202 ALLO command ignored.\r\n"
    assert s.cmd("QUIT") == b"221 Goodbye.\r\n"
    assert s.conn.closed


def test_directories_and_files():
    s = Session()
    s.login()
    assert s.cmd("CWD pub") == b"250 Directory successfully changed.\r\n"
    assert s.cmd("PWD") == b'257 "/pub" is the current directory.\r\n'
    assert s.cmd("SIZE readme.txt") == b"213 12\r\n"
    assert s.cmd("SIZE /pub") == b"550 /pub: not a regular file.\r\n"
    assert s.cmd("MDTM readme.txt").startswith(b"213 2")
    assert s.cmd("CWD readme.txt") == b"550 /pub/readme.txt: Not a directory.\r\n"
    assert s.cmd("CDUP") == b"250 Directory successfully changed.\r\n"
    assert s.cmd("MKD new") == b'257 "/new" created.\r\n'
    assert s.cmd("MKD new") == b"550 /new: File exists.\r\n"
    assert s.cmd("RNFR pub/readme.txt") == b"350 Ready for destination name.\r\n"
    assert s.cmd("RNTO new/moved.txt") == b"250 Rename successful.\r\n"
    assert s.cmd("RNFR nothing") == b"550 /nothing: No such file or directory.\r\n"
    assert s.cmd("DELE new/moved.txt") == b"250 File deleted.\r\n"
    assert s.cmd("RMD new") == b"250 Directory removed.\r\n"
    assert s.cmd("RMD pub") == b"550 /pub (directory not empty): Permission denied.\r\n"
    assert s.cmd("MLST pub/lines.txt").startswith(b"250-Listing /pub/lines.txt\r\n type=file;size=8;modify=")
    assert "pub/readme.txt" not in s.shell.files()


def test_rnfr_then_another_command_forgets_the_rename():
    s = Session()
    s.login()
    s.cmd("RNFR pub/readme.txt")
    assert s.cmd("NOOP") == b"200 NOOP ok.\r\n"
    assert s.cmd("RNTO x") == b"503 RNFR required first.\r\n"


# -- passive and active data connections -------------------------------------------------------------


def test_pasv_binds_the_control_connections_address():
    s = Session()
    s.login()
    assert s.cmd("PASV") == b"227 Entering Passive Mode (127,0,0,1,0,0).\r\n"
    port, _, _, interface = s.reactor.tcpServers[-1]
    assert (port, interface) == (0, "127.0.0.1")  # Twisted's getDTPPort would bind "" (every interface)


def test_epsv_binds_the_control_connections_address():
    s = Session()
    s.login()
    assert s.cmd("EPSV") == b"229 Entering Extended Passive Mode (|||0|).\r\n"
    assert s.reactor.tcpServers[-1][3] == "127.0.0.1"  # Twisted's EPSV binds "::"
    assert s.cmd("EPSV 2") == b"522 Network protocol not supported, use (1).\r\n"
    assert s.cmd("EPSV 1") == b"229 Entering Extended Passive Mode (|||0|).\r\n"
    assert s.cmd("EPSV ALL") == b"200 EPSV ALL ok.\r\n"
    assert s.cmd("PASV") == b"503 PASV not allowed after EPSV ALL.\r\n"


class _BusyPorts(MemoryReactorClock):
    """A reactor where some port numbers are taken."""

    busy: set = set()

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.busy:
            raise error.CannotListenError(interface, port, OSError("in use"))
        return super().listenTCP(port, factory, backlog, interface)


def test_passive_ports_come_from_the_range_skipping_busy_ones():
    s = Session(passive_ports="50000-50002")
    s.reactor.__class__ = _BusyPorts
    s.reactor.busy = {50000}
    s.login()
    assert s.cmd("PASV") == b"227 Entering Passive Mode (127,0,0,1,195,81).\r\n"  # 50001
    s.reactor.busy = {50000, 50001, 50002}
    assert s.cmd("PASV") == b"425 Can't open passive connection: no free port.\r\n"
    assert s.events(ERROR)[-1]["error"] == "no passive port free"


def test_passive_connection_from_a_foreign_address_is_refused():
    s = Session()
    s.login()
    s.cmd("PASV")
    _, factory, _, _ = s.reactor.tcpServers[-1]
    assert factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5555)) is None
    assert s.events(ERROR)[-1]["error"] == "data connection from a foreign address"
    s.connect_data()  # the client itself still gets in


def test_passive_data_connection_that_never_comes_times_out():
    s = Session()
    s.login()
    s.cmd("PASV")
    assert s.cmd("RETR pub/readme.txt") == b""
    s.reactor.advance(10)
    assert s.conn.sent() == b"425 Can't open data connection.\r\n"


def test_transfer_without_a_data_channel():
    s = Session()
    s.login()
    assert s.cmd("RETR pub/readme.txt") == b"425 Use PORT, PASV, EPRT or EPSV first.\r\n"
    assert s.cmd("LIST") == b"425 Use PORT, PASV, EPRT or EPSV first.\r\n"


def test_active_port_connects_back_and_transfers():
    s = Session()
    s.login()
    assert s.cmd("PORT 127,0,0,1,200,10") == b""  # answered once connected
    host, port, _, timeout, bind = s.reactor.tcpClients[-1]
    assert (host, port, bind) == ("127.0.0.1", 51210, ("127.0.0.1", 0))
    data = s.accept_active()
    assert s.conn.sent() == b"200 PORT command successful.\r\n"
    assert s.cmd("RETR pub/readme.txt") == b"150 Opening BINARY mode data connection for /pub/readme.txt.\r\n"
    assert data.pump() == b"hello world\n"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


def test_eprt_and_failed_active_connection():
    s = Session()
    s.login()
    assert s.cmd("EPRT |1|127.0.0.1|50123|") == b""
    _, _, factory, _, _ = s.reactor.tcpClients[-1]
    factory.clientConnectionFailed(s.reactor.connectors[-1], Failure(error.ConnectionRefusedError()))
    assert s.conn.sent() == b"425 Can't open data connection.\r\n"


def test_active_connections_to_other_hosts_or_privileged_ports_are_refused():
    s = Session()
    s.login()
    assert s.cmd("PORT 10,0,0,9,200,10") == b"501 Rejected data connection to a foreign address.\r\n"
    assert s.cmd("EPRT |1|127.0.0.1|22|") == b"501 Rejected data connection to a privileged port.\r\n"
    assert [e["error"] for e in s.events(ERROR)] == ["data connection to a foreign address",
                                                      "data connection to a privileged port"]
    assert not s.reactor.tcpClients


@pytest.mark.parametrize("stage,code", [("PASV", 425), ("PASV", 421), ("EPSV", 425), ("EPSV", 421), ("EPSV", 502)])
def test_passive_reply_faults(stage, code):
    s = Session({"server": "ftp", "on": stage, "action": "reply", "code": code})
    s.login()
    expected = f"{code} {ftp_server.FAULT_TEXT[code]}\r\n".encode()
    assert s.cmd(stage) == expected
    assert not s.reactor.tcpServers  # nothing listens
    assert s.conn.closed == (code == 421)


def test_pasv_wrong_address():
    s = Session({"server": "ftp", "on": "PASV", "action": "wrong_address", "host": "10.9.8.7", "port": 2121})
    s.login()
    assert s.cmd("PASV") == b"227 Entering Passive Mode (10,9,8,7,8,73).\r\n"
    s.connect_data()  # the real port still listens


def test_wrong_address_defaults():
    s = Session({"server": "ftp", "on": "PASV", "action": "wrong_address", "host": "10.9.8.7"},
                {"server": "ftp", "on": "EPSV", "action": "wrong_address"}, passive_ports="50000-50000")
    s.login()
    assert s.cmd("PASV") == b"227 Entering Passive Mode (10,9,8,7,195,80).\r\n"  # host only: real port
    assert s.cmd("EPSV") == b"229 Entering Extended Passive Mode (|||1|).\r\n"  # nothing given: port 1


# -- downloads ------------------------------------------------------------------------------------


def test_retr_over_pasv():
    s = Session()
    s.login()
    data = s.pasv()
    assert s.cmd("RETR pub/readme.txt") == b"150 Opening BINARY mode data connection for /pub/readme.txt.\r\n"
    assert data.pump() == b"hello world\n"
    assert data.closed
    assert s.conn.sent() == b""  # 226 only once the data connection has closed
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert not s.reactor.tcpServers[-1][1].wrappedFactory.pi.dtpFactory  # the data channel is consumed
    assert s.cmd("RETR pub/readme.txt") == b"425 Use PORT, PASV, EPRT or EPSV first.\r\n"


def test_data_connection_is_journaled_with_the_control_connection_number():
    s = Session()
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/readme.txt")
    data.pump()
    data.close()
    opened = s.events(OPEN, channel="data")
    closed = s.events(CLOSE, channel="data")
    assert len(opened) == len(closed) == 1
    assert opened[0]["conn"] == s.conn.wrapper.conn == 1 and opened[0]["mode"] == "passive"
    assert closed[0]["bytes_down"] == 12
    assert s.events("data", channel="data")[0]["payload"] == b"hello world\n"


def test_retr_missing_file_and_directory():
    s = Session()
    s.login()
    data = s.pasv()
    assert s.cmd("RETR nope.txt") == b"550 /nope.txt: No such file or directory.\r\n"
    assert data.closed  # a failed transfer command closes the data connection too
    s.pasv()
    assert s.cmd("RETR pub") == b"550 pub: Is a directory.\r\n"


@pytest.mark.parametrize("code", [425, 426, 450, 451, 550])
def test_retr_reply_faults(code):
    s = Session({"server": "ftp", "on": "RETR", "action": "reply", "code": code})
    s.login()
    data = s.pasv()
    assert s.cmd("RETR pub/readme.txt") == f"{code} {ftp_server.FAULT_TEXT[code]}\r\n".encode()
    assert data.closed and data.transport.value() == b""


def test_reply_fault_with_message_and_then_reset():
    s = Session({"server": "ftp", "on": "RETR", "action": "reply", "code": 451, "message": "Disk on fire.",
                 "then": "reset", "match": {"path": "*.txt"}})
    s.login()
    s.pasv()
    assert s.cmd("RETR pub/readme.txt") == b"451 Disk on fire.\r\n"
    assert s.conn.transport.disconnected  # aborted


def test_short_transfer_still_ends_with_226():
    s = Session({"server": "ftp", "on": "RETR", "action": "short_transfer", "bytes": 5})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/readme.txt")
    assert data.pump() == b"hello"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


def test_no_completion_sends_150_and_the_data_but_never_226():
    s = Session({"server": "ftp", "on": "RETR", "action": "no_completion"})
    s.login()
    data = s.pasv()
    assert s.cmd("RETR pub/readme.txt").startswith(b"150 ")
    assert data.pump() == b"hello world\n"
    data.close()
    assert s.conn.sent() == b""
    assert s.cmd("NOOP") == b"200 NOOP ok.\r\n"  # the session goes on


def test_silence_at_a_command():
    s = Session({"server": "ftp", "on": "SIZE", "action": "silence"})
    s.login()
    assert s.cmd("SIZE pub/readme.txt") == b""
    assert s.cmd("NOOP") == b"200 NOOP ok.\r\n"


def test_an_action_at_a_stage_where_it_cannot_apply_is_a_scenario_error():
    from testbed.config import ScenarioError

    with pytest.raises(ScenarioError, match="fault applies: LIST, MLSD, NLST, RETR, data"):
        Session({"server": "ftp", "on": "SIZE", "action": "short_transfer", "bytes": 1})


def test_a_data_stage_action_that_does_not_fit_the_transfer_is_journaled_and_ignored():
    s = Session({"server": "ftp", "on": "data", "action": "short_transfer", "bytes": 1})
    s.login()
    data = s.pasv()
    assert s.cmd("STOR incoming/new.txt") == b"150 Ok to send data.\r\n"  # an upload: nothing to cut short
    data.send(b"whole")
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert s.shell.read_bytes("incoming/new.txt") == b"whole"
    assert s.events(ERROR)[0]["error"] == "fault action does not apply here"


def test_rest_resumes_a_download_and_checks_the_offset():
    s = Session()
    s.login()
    assert s.cmd("REST 6") == b"350 Restarting at 6. Send STOR or RETR to start the transfer.\r\n"
    data = s.pasv()
    s.cmd("RETR pub/readme.txt")
    assert data.pump() == b"world\n"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    s.cmd("REST 13")
    s.pasv()
    assert s.cmd("RETR pub/readme.txt") == b"554 Invalid REST offset 13: the file has 12 bytes.\r\n"


def test_ascii_mode_download_converts_line_ends():
    s = Session()
    s.login()
    s.cmd("TYPE A")
    data = s.pasv()
    assert s.cmd("RETR pub/lines.txt") == b"150 Opening ASCII mode data connection for /pub/lines.txt.\r\n"
    assert data.pump() == b"one\r\ntwo\r\n"


def test_crlf_transform_across_chunks():
    transform = _to_crlf()
    assert transform(b"a\nb\r") + transform(b"\nc\n") + transform(b"\r\n") == b"a\r\nb\r\nc\r\n\r\n"


def test_ascii_upload_consumer_across_chunks():
    got = []

    class Sink:
        def registerProducer(self, p, s):
            pass

        def unregisterProducer(self):
            got.append(None)

        def write(self, data):
            got.append(data)

    consumer = _ASCIIUpload(Sink())
    for chunk in (b"x\r", b"\ny\r\n", b"z\r"):
        consumer.write(chunk)
    consumer.unregisterProducer()
    assert b"".join(c for c in got if c) == b"x\ny\nz\r" and got[-1] is None


def test_list_nlst_mlsd():
    s = Session()
    s.login()
    data = s.pasv()
    assert s.cmd("LIST -la pub") == b"150 Opening BINARY mode data connection for file list.\r\n"
    listing = data.pump().decode()
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    lines = listing.splitlines()
    assert [line.split()[-1] for line in lines] == ["data.bin", "lines.txt", "readme.txt"]
    assert lines[2].startswith("-rw-r--r--") and " 12 " in lines[2]

    data = s.pasv()
    s.cmd("NLST")  # bare NLST: Twisted answers "500 NLST requires an argument"
    assert data.pump() == b"incoming\r\npub\r\n"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"

    data = s.pasv()
    s.cmd("NLST pub/*.txt")
    assert data.pump() == b"lines.txt\r\nreadme.txt\r\n"
    data.close()
    s.conn.sent()

    data = s.pasv()
    s.cmd("MLSD pub")
    facts = data.pump().decode().splitlines()
    assert facts[0].startswith("type=file;size=100;modify=") and facts[0].endswith(";perm=adfrw; data.bin")
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    s.pasv()
    assert s.cmd("MLSD pub/readme.txt") == b"501 pub/readme.txt: not a directory.\r\n"


def test_short_transfer_of_a_listing_matched_on_the_data_stage():
    s = Session({"server": "ftp", "on": "data", "action": "short_transfer", "bytes": 4, "match": {"command": "NLST"}})
    s.login()
    data = s.pasv()
    s.cmd("NLST")
    assert data.pump() == b"inco"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


# -- uploads ---------------------------------------------------------------------------------------


def test_stor_records_the_upload():
    s = Session()
    s.login()
    data = s.pasv()
    assert s.cmd("STOR incoming/new.txt") == b"150 Ok to send data.\r\n"
    data.send(b"first ")
    data.send(b"second")
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert s.shell.read_bytes("incoming/new.txt") == b"first second"
    (upload,) = s.uploads
    assert (upload.path, upload.size, upload.user, upload.conn, upload.command) == (
        "incoming/new.txt", 12, "alice@example.test", 1, "STOR")
    (stored,) = s.events(STORED)
    assert (stored["path"], stored["size"], stored["user"]) == ("incoming/new.txt", 12, "alice@example.test")


def test_upload_cut_by_a_reset_is_not_an_upload():
    s = Session()
    s.login()
    data = s.pasv()
    s.cmd("STOR incoming/cut.txt")
    data.send(b"part")
    data.close(error.ConnectionLost())
    assert s.conn.sent() == b"426 Connection closed; transfer aborted.\r\n"
    assert s.uploads == [] and not s.events(STORED)
    assert s.shell.read_bytes("incoming/cut.txt") == b"part"  # what arrived stays, for a resume


def test_rest_stor_and_appe_resume_uploads():
    s = Session()
    s.login()
    s.cmd("REST 5")
    data = s.pasv()
    s.cmd("STOR pub/readme.txt")
    data.send(b"WORLD\n")
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert s.shell.read_bytes("pub/readme.txt") == b"helloWORLD\n"
    data = s.pasv()
    s.cmd("APPE pub/readme.txt")
    data.send(b"more")
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert s.shell.read_bytes("pub/readme.txt") == b"helloWORLD\nmore"
    assert [u.command for u in s.uploads] == ["STOR", "APPE"]


def test_ascii_mode_upload():
    s = Session()
    s.login()
    s.cmd("TYPE A")
    data = s.pasv()
    s.cmd("STOR a.txt")
    data.send(b"x\r\ny\r")
    data.send(b"\n")
    data.close()
    assert s.shell.read_bytes("a.txt") == b"x\ny\n"


@pytest.mark.parametrize("code", [452, 552, 553])
def test_stor_reply_faults(code):
    s = Session({"server": "ftp", "on": "STOR", "action": "reply", "code": code})
    s.login()
    data = s.pasv()
    assert s.cmd("STOR x.bin") == f"{code} {ftp_server.FAULT_TEXT[code]}\r\n".encode()
    assert data.closed and "x.bin" not in s.shell.files()


def test_stor_no_completion():
    s = Session({"server": "ftp", "on": "STOR", "action": "no_completion"})
    s.login()
    data = s.pasv()
    assert s.cmd("STOR x.bin") == b"150 Ok to send data.\r\n"
    data.send(b"abc")
    data.close()
    assert s.conn.sent() == b""
    assert s.shell.read_bytes("x.bin") == b"abc" and len(s.uploads) == 1


# -- wire faults on the data connection ---------------------------------------------------------------


def test_throttled_download():
    s = Session({"server": "ftp", "on": "data", "action": "throttle", "bytes_per_second": 100,
                 "match": {"path": "*.bin"}})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert data.pump() == b"01234"  # 100 B/s: 5 bytes per 50 ms
    assert not data.closed
    s.reactor.advance(0.05)
    assert data.transport.value() == b"0123456789"
    s.reactor.pump([0.05] * 20)
    assert data.transport.value() == b"0123456789" * 10
    assert data.closed
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


def test_download_reset_after_n_bytes_is_426():
    s = Session({"server": "ftp", "on": "data", "action": "reset", "bytes": 7})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert data.pump() == b"0123456"
    assert data.transport.disconnected  # aborted
    data.close(error.ConnectionAborted())
    assert s.conn.sent() == b"426 Connection closed; transfer aborted.\r\n"


def test_download_closed_after_n_bytes_is_426():
    s = Session({"server": "ftp", "on": "data", "action": "close", "bytes": 3})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert data.pump() == b"012"
    data.close()
    assert s.conn.sent() == b"426 Connection closed; transfer aborted.\r\n"


def test_stalled_download_never_completes():
    s = Session({"server": "ftp", "on": "data", "action": "stall", "bytes": 4})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert data.pump() == b"0123"
    assert data.transport.producer is None and not data.closed  # nothing more, not even a FIN
    s.reactor.advance(60)
    assert s.conn.sent() == b""
    data.close()  # the client gives up
    assert s.conn.sent() == b"426 Connection closed; transfer aborted.\r\n"


def test_delayed_download():
    s = Session({"server": "ftp", "on": "data", "action": "delay", "seconds": 2.0})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/readme.txt")
    assert data.pump() == b""
    s.reactor.advance(1.9)
    assert data.transport.value() == b""
    s.reactor.advance(0.2)
    assert data.transport.value() == b"hello world\n" and data.closed
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


def test_corrupted_download_still_ends_with_226():
    s = Session({"server": "ftp", "on": "data", "action": "corrupt", "rate": 1.0})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/readme.txt")
    got = data.pump()
    assert len(got) == 12 and all(a != b for a, b in zip(got, b"hello world\n"))
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"


def test_sliced_download():
    s = Session({"server": "ftp", "on": "data", "action": "slice", "size": 40, "interval": 0.1,
                 "match": {"command": "RETR", "path": "/pub/data.bin"}})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert len(data.pump()) == 40
    s.reactor.advance(0.1)
    assert len(data.transport.value()) == 80
    s.reactor.pump([0.1] * 2)
    assert data.transport.value() == b"0123456789" * 10 and data.closed


def test_truncated_download_holds_like_a_stall():
    s = Session({"server": "ftp", "on": "data", "action": "truncate", "bytes": 30})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    assert data.pump() == (b"0123456789" * 3)
    assert not data.closed and s.conn.sent() == b""


def test_control_stalled_at_retr_hides_150_and_226():
    s = Session({"server": "ftp", "on": "RETR", "action": "stall"})
    s.login()
    data = s.pasv()
    assert s.cmd("RETR pub/readme.txt") == b""
    assert data.pump() == b"hello world\n"  # the data connection is not stalled
    data.close()
    assert s.conn.sent() == b""
    assert [e["code"] for e in s.events(REPLY)][-2:] == [150, 226]  # the server did answer


def test_refused_connection():
    s = Session({"server": "ftp", "on": "connect", "action": "refuse"})
    assert s.greeting == b"" and s.conn.closed


def test_wire_fault_at_a_command_hits_the_control_connection():
    s = Session({"server": "ftp", "on": "SIZE", "action": "close"})
    s.login()
    assert s.cmd("SIZE pub/readme.txt") == b""
    assert s.conn.closed


def test_upload_throttled_upstream():
    s = Session({"server": "ftp", "on": "data", "action": "slice", "size": 2, "interval": 0.1, "direction": "up"})
    s.login()
    data = s.pasv()
    s.cmd("STOR up.bin")
    data.send(b"abcdef")
    assert s.shell.read_bytes("up.bin") == b"ab"
    s.reactor.pump([0.1] * 3)
    assert s.shell.read_bytes("up.bin") == b"abcdef"


# -- explicit FTPS ---------------------------------------------------------------------------------------


def test_auth_tls_then_startTLS_and_prot_p_on_the_data_connection():
    s = Session(tls=True)
    started = []
    s.conn.transport.startTLS = lambda options, normal=True: started.append(options)
    assert s.cmd("PBSZ 0") == b"503 PBSZ not allowed on an insecure control connection.\r\n"
    assert s.cmd("AUTH TLS") == b"234 AUTH TLS successful.\r\n"
    assert started == [s.tls_options]
    assert s.cmd("AUTH TLS") == b"503 Already using TLS.\r\n"
    s.login()
    assert s.cmd("PBSZ 0") == b"200 PBSZ=0\r\n"
    assert s.cmd("PROT P") == b"200 Protection level set to P.\r\n"
    data = s.pasv(tls_capable=True)
    assert data.transport.tls_started == (s.tls_options, True)  # TLS server on the accepted connection
    assert s.cmd("RETR pub/readme.txt").startswith(b"150 ")
    assert data.transport.value() == b""  # nothing before the handshake
    data.protocol.handshakeCompleted()
    assert data.pump() == b"hello world\n"
    data.close()
    assert s.conn.sent() == b"226 Transfer complete.\r\n"
    assert s.cmd("PROT C") == b"200 Protection level set to C.\r\n"
    assert s.cmd("PROT S") == b"536 PROT S unsupported.\r\n"


def test_prot_p_in_active_mode_is_a_tls_server_too():
    s = Session(tls=True)
    s.conn.transport.startTLS = lambda options, normal=True: None
    s.cmd("AUTH TLS")
    s.login()
    s.cmd("PROT P")
    s.cmd("PORT 127,0,0,1,200,10")
    host, port, factory, _, _ = s.reactor.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    assert transport.tls_started == (s.tls_options, False)  # reversed: we connected, yet we serve TLS


def test_auth_without_tls_configured():
    s = Session()
    assert s.cmd("AUTH TLS") == b"502 Command 'AUTH' not implemented.\r\n"


@pytest.mark.parametrize("stage,code", [("AUTH", 534), ("PROT", 522), ("PROT", 534)])
def test_tls_reply_faults(stage, code):
    s = Session({"server": "ftp", "on": stage, "action": "reply", "code": code}, tls=True)
    s.conn.transport.startTLS = lambda options, normal=True: None
    if stage == "PROT":
        s.cmd("AUTH TLS")
        s.login()
        assert s.cmd("PROT P") == f"{code} {ftp_server.FAULT_TEXT[code]}\r\n".encode()
        assert not s.protocol.protected
    else:
        assert s.cmd("AUTH TLS") == f"{code} {ftp_server.FAULT_TEXT[code]}\r\n".encode()
        assert not s.protocol.tls_active


def test_fault_matches_tls_and_mode():
    s = Session({"server": "ftp", "on": "RETR", "action": "reply", "code": 450, "match": {"mode": "active"}})
    s.login()
    data = s.pasv()
    assert s.cmd("RETR pub/readme.txt").startswith(b"150 ")
    data.pump()
    data.close()
    s.conn.sent()
    s.cmd("PORT 127,0,0,1,200,10")
    s.accept_active()
    s.conn.sent()
    assert s.cmd("RETR pub/readme.txt") == b"450 Requested file action not taken. File unavailable.\r\n"


# -- paths that leave the root ----------------------------------------------------------------------------


@pytest.mark.parametrize("command,reason", [
    ("CWD ../..", "parent-escape"),
    ("CWD ..", "parent-escape"),
    ("SIZE ../../etc/passwd", "parent-escape"),
    ("RETR ..\\..\\etc\\passwd", "backslash"),
    ("DELE %2e%2e/%2e%2e/etc/passwd", "percent-encoded-traversal"),
    ("MKD %252e%252e", "percent-encoded-traversal"),
    ("LIST ../", "parent-escape"),
    ("RNFR pub/../../x", "parent-escape"),
])
def test_path_escapes_are_refused_and_journaled(command, reason):
    s = Session()
    s.login()
    if command.split()[0] in ("RETR", "LIST"):
        s.pasv()
    answer = s.cmd(command)
    assert answer.startswith(b"550 ") and answer.endswith(b": Permission denied.\r\n")
    (event,) = s.events(ERROR)
    assert event["error"] == "path escapes root" and event["reason"] == reason
    assert event["command"] == command.split()[0] and event["user"] == "alice@example.test"


def test_absolute_paths_stay_inside_the_root():
    s = Session()
    s.login()
    assert s.cmd("SIZE /etc/passwd") == b"550 /etc/passwd: No such file or directory.\r\n"
    assert s.cmd("CWD /pub/../pub") == b"250 Directory successfully changed.\r\n"
    assert s.cmd("SIZE /pub/readme.txt") == b"213 12\r\n"


def test_nul_in_a_path():
    s = Session()
    s.login()
    assert s.cmd(b"SIZE a\x00b") == b"550 a\\0b: Permission denied.\r\n"
    assert s.events(ERROR)[0]["reason"] == "nul-byte"


def test_seeded_fuzz_never_breaks_the_server():
    import random

    rng = random.Random(1234)
    words = sorted(COMMANDS - {"QUIT"}) + ["XYZ", "", "retr", "Stor"]
    args = ["", " ", "..", "../..", "/", "pub", "pub/readme.txt", "*", "-la", "\\..\\", "%2e%2e", "a" * 300,
            "127,0,0,1,200,10", "|1|127.0.0.1|50000|", "|2|::1|50000|", "P", "TLS", "I", "A N", "0", "-1",
            "99999999999999999999", "\udcff", "x\x00y", "UTF8 ON", "MLST size;"]
    for _ in range(20):
        s = Session(tls=True)
        s.conn.transport.startTLS = lambda options, normal=True: None
        s.login()
        for _ in range(40):
            line = f"{rng.choice(words)} {rng.choice(args)}".rstrip(" ") if rng.random() < 0.9 else rng.choice(args)
            s.conn.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
            if s.reactor.tcpClients:  # an active connection attempt: let it fail
                _, _, factory, _, _ = s.reactor.tcpClients.pop()
                factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
            s.reactor.advance(11)  # data connections that never come time out
            if s.conn.closed:
                break
        assert not [e for e in s.events(ERROR) if e["error"] == "internal error"]
        commands, replied = len(s.events(COMMAND)), len(s.events(REPLY))
        assert replied >= commands  # every command was answered (the greeting is one more)


# -- the control connection's life -------------------------------------------------------------------------


def test_losing_the_control_connection_aborts_the_data_connection():
    s = Session({"server": "ftp", "on": "data", "action": "stall"})
    s.login()
    data = s.pasv()
    s.cmd("RETR pub/data.bin")
    data.pump()
    s.conn.wrapper.connectionLost(Failure(error.ConnectionLost()))
    assert data.transport.disconnected


def test_idle_timeout_uses_the_factory_reactor():
    s = Session()
    s.reactor.advance(599)
    assert not s.conn.closed
    s.reactor.advance(2)
    assert s.conn.closed


def test_require_tls_without_tls_is_refused_at_start():
    from testbed.harness import Testbed

    from testbed.config import ScenarioError

    with pytest.raises(ScenarioError, match="servers.ftp.require_tls: expected tls = 'starttls'"):
        Testbed({"servers": {"http": {"enabled": False},
                             "ftp": {"enabled": True, "tls": "none", "require_tls": True}}})
