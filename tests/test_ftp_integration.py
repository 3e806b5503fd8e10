"""The FTP server with real clients over loopback: ftplib (plain and FTP_TLS), curl, lftp; paths, faults, 200 MB.

The server serves a real directory made once for the module; tests name their files after
themselves, since the directory (unlike the in-memory tree) is not reset between tests.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import re
import resource
import socket
import ssl
import subprocess
import time
import tracemalloc

import pytest
from _clients import CURL, LFTP

TIMEOUT = 10
README = b"hello world\n"
SECRET = b"top secret, outside the root\n"


@pytest.fixture(scope="module")
def ftp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftp-root")
    (root / "pub").mkdir()
    (root / "pub" / "readme.txt").write_bytes(README)
    (root / "pub" / "data.bin").write_bytes(bytes(range(256)) * 64)  # 16 KiB
    (root / "incoming").mkdir()
    outside = tmp_path_factory.mktemp("ftp-outside")
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside, root / "link_out")
    os.symlink(outside / "secret.txt", root / "pub" / "secret_link.txt")
    return root


@pytest.fixture
def testbed_scenario(ftp_root):
    return {"servers": {"http": {"enabled": False}, "ftp": {"enabled": True, "root": str(ftp_root)}},
            "users": {"alice": "secret", "bob@example.test": "hunter2"}}


def login(server, user="alice", password="secret", timeout: float = TIMEOUT) -> ftplib.FTP:
    client = ftplib.FTP(timeout=timeout)
    client.connect(server.host, server.port)
    client.login(user, password)
    return client


def tls_login(server, timeout: float = TIMEOUT) -> ftplib.FTP_TLS:
    context = ssl.create_default_context(cafile=server.ca_path)
    client = ftplib.FTP_TLS(context=context, timeout=timeout)
    client.connect(server.host, server.port)
    client.auth()
    client.login("alice", "secret")
    client.prot_p()
    return client


def retr(client: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    client.retrbinary(f"RETR {path}", out.write, rest=rest)
    return out.getvalue()


def errors(server, **match) -> list[dict]:
    return server.context.journal.query("error", server="ftp", **match)


def replies(server) -> list[int]:
    return [e["code"] for e in server.context.journal.query("reply", server="ftp")]


# -- ftplib --------------------------------------------------------------------------------------------


def test_named_and_anonymous_login(ftp_server):
    client = login(ftp_server, "bob@example.test", "hunter2")
    assert client.getwelcome() == "220 twisted-testbed FTP server ready."
    assert client.pwd() == "/"
    client.quit()
    with pytest.raises(ftplib.error_perm, match="^530"):
        login(ftp_server, "alice", "wrong")
    anonymous = login(ftp_server, "anonymous", "guest@example.test")
    assert retr(anonymous, "pub/readme.txt") == README
    with pytest.raises(ftplib.error_perm, match=r"^550 .*read-only"):
        anonymous.storbinary("STOR incoming/anon.txt", io.BytesIO(b"x"))
    anonymous.quit()
    assert "incoming/anon.txt" not in ftp_server.files


def test_list_nlst_mlsd(ftp_server):
    client = login(ftp_server)
    assert {"pub", "incoming", "link_out"} & set(client.nlst()) == {"pub", "incoming"}  # links out are hidden
    lines = []
    client.dir("pub", lines.append)
    assert [line.split()[-1] for line in lines] == ["data.bin", "readme.txt"]
    assert dict(client.mlsd("pub"))["data.bin"]["size"] == "16384"
    client.cwd("pub")
    assert client.nlst() == ["data.bin", "readme.txt"]  # a bare NLST
    client.quit()


def test_retr_and_stor(ftp_server, ftp_root):
    client = login(ftp_server)
    assert retr(client, "pub/data.bin") == bytes(range(256)) * 64
    assert client.size("pub/readme.txt") == 12
    assert client.storbinary("STOR incoming/retr_and_stor.txt", io.BytesIO(b"uploaded\n")).startswith("226")
    client.quit()
    (upload,) = ftp_server.wait_for(1)
    assert (upload.path, upload.size, upload.user) == ("incoming/retr_and_stor.txt", 9, "alice")
    assert ftp_server.files["incoming/retr_and_stor.txt"] == 9
    assert (ftp_root / "incoming" / "retr_and_stor.txt").read_bytes() == b"uploaded\n"
    stored = ftp_server.context.journal.query("stored", server="ftp")
    assert stored[0]["path"] == "incoming/retr_and_stor.txt"


def test_resume_with_rest_both_ways_and_appe(ftp_server, ftp_root):
    client = login(ftp_server)
    assert retr(client, "pub/readme.txt", rest=6) == b"world\n"
    path = "incoming/resume.bin"
    client.storbinary(f"STOR {path}", io.BytesIO(b"0123456789"))
    client.storbinary(f"STOR {path}", io.BytesIO(b"ABCDE"), rest=5)  # REST 5 + STOR: keep 5, write on
    assert (ftp_root / path).read_bytes() == b"01234ABCDE"
    client.storbinary(f"APPE {path}", io.BytesIO(b"+tail"))
    assert (ftp_root / path).read_bytes() == b"01234ABCDE+tail"
    client.quit()
    assert [u.command for u in ftp_server.uploads] == ["STOR", "STOR", "APPE"]


def test_rename_delete_mkdir_rmdir(ftp_server, ftp_root):
    client = login(ftp_server)
    assert client.mkd("incoming/made") == "/incoming/made"
    client.storbinary("STOR incoming/made/a.txt", io.BytesIO(b"a"))
    client.rename("incoming/made/a.txt", "incoming/made/b.txt")
    assert client.nlst("incoming/made") == ["b.txt"]
    client.delete("incoming/made/b.txt")
    client.rmd("incoming/made")
    assert not (ftp_root / "incoming" / "made").exists()
    client.quit()


def _epsv_retr(client: ftplib.FTP, path: str) -> bytes:
    client.voidcmd("TYPE I")
    port = int(re.search(r"\(\|\|\|(\d+)\|\)", client.sendcmd("EPSV")).group(1))
    with socket.create_connection((client.sock.getpeername()[0], port), timeout=TIMEOUT) as conn:
        assert client.sendcmd(f"RETR {path}").startswith("150")
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    assert client.voidresp().startswith("226")
    return data


def _eprt_retr(client: ftplib.FTP, path: str) -> bytes:
    client.voidcmd("TYPE I")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        assert client.sendcmd(f"EPRT |1|127.0.0.1|{port}|").startswith("200")
        assert client.sendcmd(f"RETR {path}").startswith("150")
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            data = b"".join(iter(lambda: conn.recv(65536), b""))
    assert client.voidresp().startswith("226")
    return data


@pytest.mark.parametrize("mode", ["PASV", "EPSV", "PORT", "EPRT"])
def test_every_data_connection_mode(ftp_server, mode):
    client = login(ftp_server)
    if mode == "EPSV":
        assert _epsv_retr(client, "pub/readme.txt") == README
    elif mode == "EPRT":
        assert _eprt_retr(client, "pub/readme.txt") == README
    else:
        client.set_pasv(mode == "PASV")
        assert retr(client, "pub/readme.txt") == README
        client.storbinary(f"STOR incoming/mode-{mode}.txt", io.BytesIO(mode.encode()))
    client.quit()
    opened = ftp_server.context.journal.query("connection.open", server="ftp", channel="data")
    assert opened and opened[0]["mode"] == ("passive" if mode in ("PASV", "EPSV") else "active")


def test_ascii_mode(ftp_server, ftp_root):
    (ftp_root / "incoming" / "lines.txt").write_bytes(b"one\ntwo\n")
    client = login(ftp_server)
    lines = []
    client.retrlines("RETR incoming/lines.txt", lines.append)  # TYPE A: Twisted's own ASCII RETR raises TypeError
    assert lines == ["one", "two"]
    client.storlines("STOR incoming/ascii.txt", io.BytesIO(b"x\ny\n"))  # ftplib sends CRLF
    assert (ftp_root / "incoming" / "ascii.txt").read_bytes() == b"x\ny\n"
    client.quit()


def test_ftp_tls_with_prot_p(ftp_server, ftp_root):
    client = tls_login(ftp_server)
    assert isinstance(client.sock, ssl.SSLSocket)
    assert client.nlst("pub") == ["data.bin", "readme.txt"]
    assert retr(client, "pub/data.bin") == bytes(range(256)) * 64
    client.storbinary("STOR incoming/tls.txt", io.BytesIO(b"over TLS\n"))
    client.set_pasv(False)
    assert retr(client, "pub/readme.txt") == README  # active mode, TLS on the data connection too
    client.quit()
    assert (ftp_root / "incoming" / "tls.txt").read_bytes() == b"over TLS\n"
    (upload,) = ftp_server.uploads
    assert upload.tls
    assert all(e["tls"] for e in ftp_server.context.journal.query("connection.open", server="ftp", channel="data"))


# -- curl ----------------------------------------------------------------------------------------------------


def curl(server, *args: str, tls: bool = False, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    extra = ["--ssl-reqd", "--cacert", server.ca_path] if tls else []
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout), "-u", "alice:secret", *extra, *args],
                          capture_output=True, timeout=timeout + 5)


def url(server, path: str = "/") -> str:
    return f"ftp://{server.host}:{server.port}{path}"


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps-explicit"])
def test_curl(ftp_server, ftp_root, tmp_path, tls):
    name = f"curl-{'tls' if tls else 'plain'}"
    listing = curl(ftp_server, url(ftp_server, "/pub/"), tls=tls)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[-1] for line in listing.stdout.decode().splitlines()] == ["data.bin", "readme.txt"]
    names = curl(ftp_server, "--list-only", url(ftp_server, "/pub/"), tls=tls)
    assert names.stdout.split() == [b"data.bin", b"readme.txt"]
    assert curl(ftp_server, url(ftp_server, "/pub/readme.txt"), tls=tls).stdout == README

    local = tmp_path / "up.bin"
    local.write_bytes(b"0123456789" * 1000)
    done = curl(ftp_server, "-T", str(local), url(ftp_server, f"/incoming/{name}.bin"), tls=tls)
    assert done.returncode == 0, done.stderr
    assert (ftp_root / "incoming" / f"{name}.bin").read_bytes() == local.read_bytes()

    # Resume a download: the local file has the first part; curl sends REST and appends the rest.
    partial = tmp_path / "partial.bin"
    partial.write_bytes((bytes(range(256)) * 64)[:1000])
    resumed = curl(ftp_server, "-C", "-", "-o", str(partial), url(ftp_server, "/pub/data.bin"), tls=tls)
    assert resumed.returncode == 0, resumed.stderr
    assert partial.read_bytes() == bytes(range(256)) * 64

    # Resume an upload: the server has the first part; curl asks SIZE, then APPEs the rest.
    (ftp_root / "incoming" / f"{name}-resume.bin").write_bytes(local.read_bytes()[:3000])
    resumed = curl(ftp_server, "-C", "-", "-T", str(local), url(ftp_server, f"/incoming/{name}-resume.bin"), tls=tls)
    assert resumed.returncode == 0, resumed.stderr
    assert (ftp_root / "incoming" / f"{name}-resume.bin").read_bytes() == local.read_bytes()
    commands = [e["command"] for e in ftp_server.context.journal.query("command", server="ftp")]
    assert "REST" in commands and "APPE" in commands and "NLST" in commands
    assert ("AUTH" in commands) == tls


# -- lftp -----------------------------------------------------------------------------------------------------


def lftp(server, script: str, tls: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    settings = "set net:max-retries 1; set net:timeout 10; set xfer:clobber on; set cmd:fail-exit yes; "
    if tls:
        settings += f"set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {server.ca_path}; "
    else:
        settings += "set ftp:ssl-allow false; "
    command = f"{settings}open -u alice,secret ftp://{server.host}:{server.port}; {script}"
    return subprocess.run([LFTP, "-c", command], capture_output=True, timeout=timeout)


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps-explicit"])
def test_lftp(ftp_server, ftp_root, tmp_path, tls):
    name = f"lftp-{'tls' if tls else 'plain'}.txt"
    local = tmp_path / "local.txt"
    local.write_bytes(b"from lftp\n" * 100)
    got = tmp_path / "got.txt"
    done = lftp(ftp_server, f"ls pub; cls pub; get pub/readme.txt -o {got}; put {local} -o incoming/{name}", tls=tls)
    assert done.returncode == 0, done.stderr
    assert b"readme.txt" in done.stdout and b"data.bin" in done.stdout
    assert got.read_bytes() == README
    assert (ftp_root / "incoming" / name).read_bytes() == local.read_bytes()
    commands = {e["command"] for e in ftp_server.context.journal.query("command", server="ftp")}
    assert ("PROT" in commands) == tls


# -- paths out of the root ----------------------------------------------------------------------------------------


ESCAPES = [
    ("CWD ../..", "parent-escape"),
    ("CWD link_out", "symlink-escape"),
    ("RETR ../../../../etc/passwd", "parent-escape"),
    ("RETR ..\\..\\..\\etc\\passwd", "backslash"),
    ("RETR pub/secret_link.txt", "symlink-escape"),
    ("RETR link_out/secret.txt", "symlink-escape"),
    ("RETR %2e%2e/%2e%2e/etc/passwd", "percent-encoded-traversal"),
    ("RETR pub/%2e%2e%2f%2e%2e%2fsecret", "percent-encoded-traversal"),
    ("SIZE ../outside.txt", "parent-escape"),
    ("LIST ../", "parent-escape"),
    ("NLST link_out", "symlink-escape"),
    ("STOR ../escaped.txt", "parent-escape"),
    ("STOR link_out/planted.txt", "symlink-escape"),
    ("MKD ../newdir", "parent-escape"),
    ("DELE link_out/secret.txt", "symlink-escape"),
    ("RNFR ../../etc/hosts", "parent-escape"),
]


@pytest.mark.parametrize("command,reason", ESCAPES, ids=[c for c, _ in ESCAPES])
def test_path_escapes_fail_and_are_journaled(ftp_server, ftp_root, command, reason):
    client = login(ftp_server)
    verb, _, path = command.partition(" ")
    with pytest.raises(ftplib.error_perm, match="^550"):
        if verb == "RETR":
            retr(client, path)
        elif verb == "STOR":
            client.storbinary(command, io.BytesIO(b"planted"))
        elif verb in ("LIST", "NLST"):
            client.retrlines(command, lambda line: None)
        else:
            client.voidcmd(command)
    assert client.pwd() == "/"
    client.quit()
    (event,) = errors(ftp_server, error="path escapes root")
    assert (event["command"], event["reason"], event["user"]) == (verb, reason, "alice")
    assert not (ftp_root.parent / "escaped.txt").exists() and not (ftp_root.parent / "newdir").exists()
    outside = (ftp_root / "link_out").resolve()
    assert [p.name for p in outside.iterdir()] == ["secret.txt"] and (outside / "secret.txt").read_bytes() == SECRET


def test_absolute_paths_are_inside_the_root(ftp_server):
    client = login(ftp_server)
    with pytest.raises(ftplib.error_perm, match="^550 /etc/passwd: No such file"):
        retr(client, "/etc/passwd")
    assert retr(client, "/pub/../pub/readme.txt") == README
    client.quit()
    assert ("RETR", "/etc/passwd") in [(e["command"], e.get("arg"))
                                       for e in ftp_server.context.journal.query("command", server="ftp")]
    assert 550 in replies(ftp_server)


def test_curl_path_as_is_traversal(ftp_server):
    result = curl(ftp_server, "--path-as-is", url(ftp_server, "/../../../etc/passwd"))
    assert result.returncode != 0 and result.stdout == b""
    assert errors(ftp_server, error="path escapes root")


# -- faults as ftplib sees them --------------------------------------------------------------------------------


@pytest.mark.fault(server="ftp", on="connect", action="reply", code=421)
def test_greeting_421_is_error_temp(ftp_server):
    with pytest.raises(ftplib.error_temp, match="^421"):
        ftplib.FTP(timeout=TIMEOUT).connect(ftp_server.host, ftp_server.port)


@pytest.mark.fault(server="ftp", on="USER", action="reply", code=530, times=1)
def test_user_530_then_a_retry_succeeds(ftp_server):
    with pytest.raises(ftplib.error_perm, match="^530 Not logged in"):
        login(ftp_server)
    login(ftp_server).quit()


@pytest.mark.fault(server="ftp", on="PASS", action="reply", code=530, message="Account locked.")
def test_pass_530(ftp_server):
    with pytest.raises(ftplib.error_perm, match="^530 Account locked."):
        login(ftp_server)


@pytest.mark.parametrize("code,exception", [(425, ftplib.error_temp), (421, ftplib.error_temp)])
def test_pasv_faults(ftp_server, code, exception):
    ftp_server.faults.add(on="PASV", action="reply", code=code)
    client = login(ftp_server)
    with pytest.raises(exception, match=f"^{code}"):
        client.nlst()
    if code == 421:
        with pytest.raises(EOFError):
            client.voidcmd("NOOP")  # 421 closed the control connection


def test_epsv_502(ftp_server):
    ftp_server.faults.add(on="EPSV", action="reply", code=502)
    client = login(ftp_server)
    with pytest.raises(ftplib.error_perm, match="^502"):
        client.sendcmd("EPSV")
    assert retr(client, "pub/readme.txt") == README  # PASV still works
    client.quit()


def test_pasv_wrong_port_fails_to_connect(ftp_server):
    ftp_server.faults.add(on="PASV", action="wrong_address", times=1)
    client = login(ftp_server)
    with pytest.raises(ConnectionRefusedError):
        retr(client, "pub/readme.txt")
    client.quit()


def test_pasv_wrong_host_is_ignored_by_ftplib_and_curl(ftp_server):
    ftp_server.faults.add(on="PASV", action="wrong_address", host="192.0.2.7")
    client = login(ftp_server)
    assert retr(client, "pub/readme.txt") == README  # ftplib uses the control connection's host
    client.quit()
    result = curl(ftp_server, "--disable-epsv", url(ftp_server, "/pub/readme.txt"))
    assert result.stdout == README, result.stderr


@pytest.mark.parametrize("code,exception", [(425, ftplib.error_temp), (426, ftplib.error_temp),
                                            (450, ftplib.error_temp), (451, ftplib.error_temp),
                                            (550, ftplib.error_perm)])
def test_retr_reply_faults(ftp_server, code, exception):
    ftp_server.faults.add(on="RETR", action="reply", code=code, match={"path": "*/readme.txt"})
    client = login(ftp_server)
    with pytest.raises(exception, match=f"^{code}"):
        retr(client, "pub/readme.txt")
    assert len(retr(client, "pub/data.bin")) == 16384  # other paths unaffected
    client.quit()


@pytest.mark.fault(server="ftp", on="RETR", action="short_transfer", bytes=100)
def test_short_transfer_ends_with_226(ftp_server):
    client = login(ftp_server)
    out = io.BytesIO()
    assert client.retrbinary("RETR pub/data.bin", out.write).startswith("226")
    assert out.getvalue() == (bytes(range(256)) * 64)[:100]
    client.quit()


@pytest.mark.fault(server="ftp", on="RETR", action="no_completion")
def test_no_completion_times_out(ftp_server):
    client = login(ftp_server, timeout=1.5)
    out = io.BytesIO()
    with pytest.raises(TimeoutError):
        client.retrbinary("RETR pub/readme.txt", out.write)
    assert out.getvalue() == README  # the data came, the 226 never did
    assert 226 not in replies(ftp_server)


@pytest.mark.parametrize("code,exception", [(452, ftplib.error_temp), (552, ftplib.error_perm),
                                            (553, ftplib.error_perm)])
def test_stor_reply_faults(ftp_server, ftp_root, code, exception):
    ftp_server.faults.add(on="STOR", action="reply", code=code)
    client = login(ftp_server)
    with pytest.raises(exception, match=f"^{code}"):
        client.storbinary(f"STOR incoming/refused-{code}.bin", io.BytesIO(b"x"))
    client.quit()
    assert not (ftp_root / "incoming" / f"refused-{code}.bin").exists()
    assert ftp_server.uploads == []


@pytest.mark.fault(server="ftp", on="AUTH", action="reply", code=534)
def test_auth_tls_534(ftp_server):
    client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=ftp_server.ca_path), timeout=TIMEOUT)
    client.connect(ftp_server.host, ftp_server.port)
    with pytest.raises(ftplib.error_perm, match="^534"):
        client.auth()


@pytest.mark.fault(server="ftp", on="PROT", action="reply", code=522, message="PROT P refused.")
def test_prot_522(ftp_server):
    client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=ftp_server.ca_path), timeout=TIMEOUT)
    client.connect(ftp_server.host, ftp_server.port)
    client.login("alice", "secret")  # FTP_TLS.login sends AUTH TLS first
    with pytest.raises(ftplib.error_perm, match="^522 PROT P refused."):
        client.prot_p()


@pytest.mark.fault(server="ftp", on="SIZE", action="close")
def test_control_connection_closed_is_eof(ftp_server):
    client = login(ftp_server)
    with pytest.raises(EOFError):
        client.size("pub/readme.txt")


# -- wire faults on the data connection -------------------------------------------------------------------------


@pytest.mark.fault(server="ftp", on="data", action="throttle", bytes_per_second=32768, match={"path": "*.bin"})
def test_throttled_download(ftp_server):
    client = login(ftp_server)
    started = time.monotonic()
    assert retr(client, "pub/data.bin") == bytes(range(256)) * 64  # 16 KiB at 32 KiB/s
    assert time.monotonic() - started >= 0.4
    client.quit()


@pytest.mark.fault(server="ftp", on="data", action="reset", bytes=1000)
def test_download_reset_after_n_bytes(ftp_server):
    client = login(ftp_server)
    out = io.BytesIO()
    with pytest.raises((ConnectionResetError, ftplib.error_temp)):
        client.retrbinary("RETR pub/data.bin", out.write)
    assert len(out.getvalue()) <= 1000


@pytest.mark.fault(server="ftp", on="data", action="stall")
def test_stalled_download_times_out(ftp_server):
    client = login(ftp_server, timeout=1.5)
    with pytest.raises(TimeoutError):
        retr(client, "pub/data.bin")


@pytest.mark.fault(server="ftp", on="data", action="close", bytes=0, direction="up", match={"command": "STOR"})
def test_upload_cut_by_the_server(ftp_server, ftp_root):
    client = login(ftp_server)
    with pytest.raises((ftplib.error_temp, ConnectionError, EOFError)):
        client.storbinary("STOR incoming/cut.bin", io.BytesIO(b"x" * 200000))
    assert ftp_server.uploads == []


# -- explicit FTPS required ---------------------------------------------------------------------------------------


class TestRequireTLS:
    @pytest.fixture
    def testbed_scenario(self):
        return {"servers": {"http": {"enabled": False},
                            "ftp": {"enabled": True, "require_tls": True, "anonymous": False,
                                    "files": {"hello.txt": "hello\n"}}},
                "users": {"alice": "secret"}}

    def test_user_before_auth_tls_is_refused(self, ftp_server):
        client = ftplib.FTP(timeout=TIMEOUT)
        client.connect(ftp_server.host, ftp_server.port)
        with pytest.raises(ftplib.error_perm, match="^530 TLS required"):
            client.login("alice", "secret")

    def test_in_memory_tree_over_tls(self, ftp_server):
        assert ftp_server.root is None and ftp_server.files == {"hello.txt": 6}
        client = tls_login(ftp_server)
        assert retr(client, "hello.txt") == b"hello\n"
        client.storbinary("STOR new.txt", io.BytesIO(b"new"))
        client.quit()
        assert ftp_server.files == {"hello.txt": 6, "new.txt": 3}
        assert ftp_server.read("new.txt") == b"new"

    def test_the_tree_is_reset_between_tests(self, ftp_server):
        assert ftp_server.files == {"hello.txt": 6}


# -- a big file ------------------------------------------------------------------------------------------------


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_200_mb_down_and_up_without_holding_it_in_memory(ftp_server, ftp_root, monkeypatch):
    import testbed.servers.ftp.server as ftp_module

    size_mb = 200
    source = ftp_root / "pub" / "big.bin"
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    with open(source, "wb") as f:
        for i in range(size_mb):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            expected.update(chunk)

    sendfile_calls = []
    real_sendfile = os.sendfile

    def counting_sendfile(*args):
        sendfile_calls.append(args[3])
        return real_sendfile(*args)

    monkeypatch.setattr(ftp_module.os, "sendfile", counting_sendfile)
    rss_before = _maxrss_mb()
    tracemalloc.start()
    try:
        client = login(ftp_server, timeout=60)
        got = hashlib.sha256()
        client.retrbinary("RETR pub/big.bin", got.update, blocksize=1 << 20)
        assert got.hexdigest() == expected.hexdigest()
        with open(source, "rb") as f:
            client.storbinary("STOR incoming/big-up.bin", f, blocksize=1 << 20)
        client.quit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = _maxrss_mb() - rss_before
    print(f"200 MiB down+up: traced peak {peak / 2**20:.1f} MiB, max RSS growth {growth:.1f} MiB, "
          f"{len(sendfile_calls)} sendfile calls")
    try:
        uploaded = hashlib.sha256()
        with open(ftp_root / "incoming" / "big-up.bin", "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                uploaded.update(chunk)
        assert uploaded.hexdigest() == expected.hexdigest()
        assert ftp_server.uploads[0].size == size_mb << 20
        assert peak < 50 << 20, f"traced peak {peak / 2**20:.1f} MiB"
        assert growth < 50, f"max RSS grew {growth:.1f} MiB"
        assert sendfile_calls, "the plain download should take the sendfile path"
    finally:
        source.unlink()
        (ftp_root / "incoming" / "big-up.bin").unlink(missing_ok=True)
