"""Tests for testbed.servers.ftp.fs: the jailed and in-memory IFTPShell filesystems.

The shells' Deferreds fire synchronously; reads are pumped by hand (no reactor).
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from typing import Any

import pytest
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.testing import StringTransport
from twisted.protocols import ftp
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from testbed.servers.ftp import fs as ftp_fs
from testbed.servers.ftp.fs import (
    CHUNK_SIZE,
    ChunkedFileSender,
    JailedShell,
    MemoryShell,
    ShellRealm,
    files_snapshot,
    make_shell,
)

SEED = {
    "pub/readme.txt": b"hello world",
    "pub/sub/": None,
    "incoming/": None,
}
STAT_KEYS = ("size", "directory", "permissions", "hardlinks", "modified", "owner", "group")


# --------------------------------------------------------------------------
# Helpers


def result_of(d: Any) -> Any:
    """The result of an already-fired Deferred (raises its failure)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred did not fire synchronously"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure_of(d: Any, *types: type) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred did not fire synchronously"
    assert isinstance(box[0], Failure), f"expected a failure, got {box[0]!r}"
    assert box[0].check(*types), f"unexpected failure {box[0].value!r}"
    return box[0]


@implementer(IConsumer)
class Collector:
    """A pull consumer recording chunk sizes (and, if asked, the bytes)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.chunks: list[bytes] = []
        self.sizes: list[int] = []
        self.digest = hashlib.sha256()
        self.producer: Any = None
        self.streaming: bool | None = None
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.streaming = streaming

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.sizes.append(len(data))
        self.digest.update(data)
        if self.keep:
            self.chunks.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def pump(reader: Any, consumer: Any, limit: int = 100_000) -> Any:
    """Send C{reader} to C{consumer}, calling resumeProducing until it finishes."""
    d = reader.send(consumer)
    done: list[Any] = []
    d.addBoth(done.append)
    for _ in range(limit):
        if done:
            break
        consumer.producer.resumeProducing()
    assert done, "transfer did not finish"
    if isinstance(done[0], Failure):
        done[0].raiseException()
    return consumer


def read(shell: Any, path: list[str], **kw: Any) -> bytes:
    reader = result_of(shell.openForReading(path, **kw))
    return pump(reader, Collector()).data


@implementer(IPushProducer)
class FakeDTP:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


def write(shell: Any, path: list[str], chunks: list[bytes], **kw: Any) -> None:
    """What FTP.ftp_STOR does: open, receive(), feed the consumer, close()."""
    wfile = result_of(shell.openForWriting(path, **kw))
    verifyObject(ftp.IWriteFile, wfile)
    consumer = result_of(wfile.receive())
    consumer.registerProducer(FakeDTP(), True)
    for chunk in chunks:
        consumer.write(chunk)
    consumer.unregisterProducer()
    result_of(wfile.close())


class Journal:
    def __init__(self) -> None:
        self.uploads: list[tuple[str, int]] = []
        self.violations: list[tuple[Any, str]] = []

    def on_upload(self, path: str, size: int) -> None:
        self.uploads.append((path, size))

    def on_violation(self, target: Any, reason: str) -> None:
        self.violations.append((target, reason))


def seed_dir(root: Any, files: dict[str, Any]) -> None:
    for key, value in files.items():
        target = root.joinpath(*key.strip("/").split("/"))
        if key.endswith("/") or value is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value)


@pytest.fixture(params=["jailed", "memory"])
def kind(request: Any) -> str:
    return request.param


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def make(kind: str, tmp_path: Any, journal: Journal) -> Any:
    def factory(files: dict[str, Any] = SEED, writable: bool = True) -> Any:
        if kind == "jailed":
            root = tmp_path / "root"
            root.mkdir(exist_ok=True)
            seed_dir(root, files)
            return make_shell(str(root), {}, writable, journal.on_upload, journal.on_violation)
        return make_shell(None, files, writable, journal.on_upload, journal.on_violation)

    return factory


@pytest.fixture
def shell(make: Any) -> Any:
    return make()


# --------------------------------------------------------------------------
# Both shells: the IFTPShell operations


def test_provides_interfaces(shell: Any) -> None:
    verifyObject(ftp.IFTPShell, shell)
    verifyObject(ftp.IReadFile, result_of(shell.openForReading(["pub", "readme.txt"])))


def test_make_shell_picks_the_shell(tmp_path: Any) -> None:
    assert isinstance(make_shell(str(tmp_path), {}, True, None, None), JailedShell)
    assert isinstance(make_shell(None, {"a": b"x"}, True, None, None), MemoryShell)
    with pytest.raises(ValueError):
        make_shell(str(tmp_path), {"a": b"x"}, True, None, None)
    with pytest.raises(ValueError):
        make_shell(str(tmp_path / "missing"), {}, True, None, None)


def test_list_root_and_subdir(shell: Any) -> None:
    assert [name for name, _ in result_of(shell.list([]))] == ["incoming", "pub"]
    entries = dict(result_of(shell.list(["pub"], STAT_KEYS)))
    assert sorted(entries) == ["readme.txt", "sub"]
    size, directory, perms, links, mtime, owner, group = entries["readme.txt"]
    assert (size, directory) == (11, False)
    assert perms.shorthand().startswith("rw")
    assert isinstance(links, int) and isinstance(mtime, float)
    assert isinstance(owner, str) and isinstance(group, str)
    assert entries["sub"][1] is True


def test_list_response_formats_like_ftp_list(shell: Any) -> None:
    """The attributes feed DTP.sendListResponse exactly as FTP.ftp_LIST does."""
    dtp = ftp.DTP()
    dtp.transport = StringTransport()
    for name, attrs in result_of(shell.list(["pub"], STAT_KEYS)):
        dtp.sendListResponse(name.encode(), attrs)
    lines = dtp.transport.value().decode().splitlines()
    assert lines[0].startswith("-rw-r--r--") and lines[0].endswith(" readme.txt")
    assert lines[1].startswith("drwx") and lines[1].endswith(" sub")


def test_list_a_file_and_missing(shell: Any) -> None:
    [(name, attrs)] = result_of(shell.list(["pub", "readme.txt"], ("size",)))
    assert (name, attrs) == ("pub/readme.txt", [11])
    failure_of(shell.list(["nope"]), ftp.FileNotFoundError)


def test_stat(shell: Any) -> None:
    assert result_of(shell.stat(["pub", "readme.txt"], ("size", "directory"))) == [11, False]
    assert result_of(shell.stat(["pub"], ("directory",))) == [True]
    failure_of(shell.stat(["pub", "nope"], ("size",)), ftp.FileNotFoundError)


def test_access(shell: Any) -> None:
    assert result_of(shell.access(["pub", "sub"])) is None
    assert result_of(shell.access([])) is None
    failure_of(shell.access(["pub", "readme.txt"]), ftp.IsNotADirectoryError)
    failure_of(shell.access(["nope"]), ftp.FileNotFoundError)


def test_read(shell: Any) -> None:
    assert read(shell, ["pub", "readme.txt"]) == b"hello world"


def test_read_with_offset(shell: Any) -> None:
    assert read(shell, ["pub", "readme.txt"], offset=6) == b"world"
    assert read(shell, ["pub", "readme.txt"], offset=11) == b""
    assert read(shell, ["pub", "readme.txt"], offset=50) == b""
    failure_of(shell.openForReading(["pub", "readme.txt"], offset=-1), ftp.CmdArgSyntaxError)


def test_read_into_string_transport(shell: Any) -> None:
    transport = StringTransport()
    reader = result_of(shell.openForReading(["pub", "readme.txt"]))
    d = reader.send(transport)
    done: list[Any] = []
    d.addBoth(done.append)
    assert transport.producer is not None and not transport.streaming
    while not done:
        transport.producer.resumeProducing()
    assert transport.value() == b"hello world"
    assert transport.producer is None  # FileSender unregistered itself


def test_read_errors(shell: Any) -> None:
    failure_of(shell.openForReading(["pub"]), ftp.IsADirectoryError)
    failure_of(shell.openForReading(["pub", "nope"]), ftp.FileNotFoundError)


def test_write_new_file_reports_upload(shell: Any, journal: Journal) -> None:
    write(shell, ["incoming", "up.bin"], [b"abc", b"defg"])
    assert read(shell, ["incoming", "up.bin"]) == b"abcdefg"
    assert journal.uploads == [("incoming/up.bin", 7)]
    assert files_snapshot(shell) == {"pub/readme.txt": 11, "incoming/up.bin": 7}
    assert journal.violations == []


def test_upload_is_reported_on_close_only(shell: Any, journal: Journal) -> None:
    wfile = result_of(shell.openForWriting(["incoming", "x"]))
    consumer = result_of(wfile.receive())
    consumer.registerProducer(FakeDTP(), True)
    consumer.write(b"12345")
    assert files_snapshot(shell)["incoming/x"] == 5  # written through, not buffered
    consumer.unregisterProducer()
    assert journal.uploads == []
    result_of(wfile.close())
    assert journal.uploads == [("incoming/x", 5)]


def test_write_replaces_existing(shell: Any) -> None:
    write(shell, ["pub", "readme.txt"], [b"new"])
    assert read(shell, ["pub", "readme.txt"]) == b"new"


def test_append(shell: Any, journal: Journal) -> None:
    write(shell, ["pub", "readme.txt"], [b"!!"], append=True)
    assert read(shell, ["pub", "readme.txt"]) == b"hello world!!"
    write(shell, ["incoming", "fresh"], [b"a"], append=True)  # APPE creates
    assert read(shell, ["incoming", "fresh"]) == b"a"
    assert journal.uploads == [("pub/readme.txt", 13), ("incoming/fresh", 1)]


def test_write_with_offset(shell: Any, journal: Journal) -> None:
    write(shell, ["pub", "readme.txt"], [b"WORLD", b"!"], offset=6)
    assert read(shell, ["pub", "readme.txt"]) == b"hello WORLD!"
    write(shell, ["pub", "readme.txt"], [b"p"], offset=3)  # the tail is replaced
    assert read(shell, ["pub", "readme.txt"]) == b"help"
    write(shell, ["pub", "readme.txt"], [b"!"], offset=4)  # offset == size: resume
    assert read(shell, ["pub", "readme.txt"]) == b"help!"
    assert [size for _, size in journal.uploads] == [12, 4, 5]


def test_write_offset_errors(shell: Any) -> None:
    failure_of(shell.openForWriting(["pub", "readme.txt"], offset=12), ftp.CmdArgSyntaxError)
    failure_of(shell.openForWriting(["pub", "readme.txt"], offset=-3), ftp.CmdArgSyntaxError)
    failure_of(shell.openForWriting(["incoming", "missing"], offset=3), ftp.FileNotFoundError)
    assert read(shell, ["pub", "readme.txt"]) == b"hello world"
    assert "incoming/missing" not in files_snapshot(shell)


def test_write_errors(shell: Any) -> None:
    failure_of(shell.openForWriting(["pub"]), ftp.IsADirectoryError)
    failure_of(shell.openForWriting(["nodir", "x"]), ftp.FileNotFoundError)
    failure_of(shell.openForWriting(["pub", "readme.txt", "x"]), ftp.IsNotADirectoryError)


def test_rename(shell: Any) -> None:
    result_of(shell.rename(["pub", "readme.txt"], ["incoming", "moved.txt"]))
    assert read(shell, ["incoming", "moved.txt"]) == b"hello world"
    failure_of(shell.openForReading(["pub", "readme.txt"]), ftp.FileNotFoundError)
    result_of(shell.rename(["pub", "sub"], ["sub2"]))
    assert result_of(shell.stat(["sub2"], ("directory",))) == [True]
    failure_of(shell.rename(["nope"], ["x"]), ftp.FileNotFoundError)
    failure_of(shell.rename(["incoming"], ["incoming", "inner"]), ftp.PermissionDeniedError)
    failure_of(shell.rename([], ["x"]), ftp.PermissionDeniedError)


def test_mkdir_rmdir(shell: Any) -> None:
    result_of(shell.makeDirectory(["incoming", "a", "b"]))
    assert result_of(shell.stat(["incoming", "a", "b"], ("directory",))) == [True]
    failure_of(shell.makeDirectory(["incoming", "a"]), ftp.FileExistsError)
    failure_of(shell.makeDirectory(["pub", "readme.txt", "x"]), ftp.IsNotADirectoryError)
    failure_of(shell.removeDirectory(["incoming", "a"]), ftp.PermissionDeniedError)  # not empty
    result_of(shell.removeDirectory(["incoming", "a", "b"]))
    result_of(shell.removeDirectory(["incoming", "a"]))
    failure_of(shell.access(["incoming", "a"]), ftp.FileNotFoundError)
    failure_of(shell.removeDirectory(["pub", "readme.txt"]), ftp.IsNotADirectoryError)
    failure_of(shell.removeDirectory(["nope"]), ftp.FileNotFoundError)
    failure_of(shell.removeDirectory([]), ftp.PermissionDeniedError)


def test_delete(shell: Any) -> None:
    result_of(shell.removeFile(["pub", "readme.txt"]))
    assert files_snapshot(shell) == {}
    failure_of(shell.removeFile(["pub", "readme.txt"]), ftp.FileNotFoundError)
    failure_of(shell.removeFile(["pub", "sub"]), ftp.IsADirectoryError)


def test_read_only_variant(make: Any, journal: Journal) -> None:
    shell = make(writable=False)
    assert read(shell, ["pub", "readme.txt"]) == b"hello world"
    for d in [
        shell.openForWriting(["incoming", "x"]),
        shell.openForWriting(["pub", "readme.txt"], append=True),
        shell.makeDirectory(["incoming", "d"]),
        shell.removeDirectory(["pub", "sub"]),
        shell.removeFile(["pub", "readme.txt"]),
        shell.rename(["pub", "readme.txt"], ["r.txt"]),
    ]:
        failure_of(d, ftp.PermissionDeniedError)
    assert files_snapshot(shell) == {"pub/readme.txt": 11}
    assert journal.violations == [] and journal.uploads == []


def test_realm_shares_the_tree_and_makes_anonymous_read_only(shell: Any) -> None:
    from twisted.cred import checkers

    realm = ShellRealm(shell)
    iface, user, logout = realm.requestAvatar("alice", None, ftp.IFTPShell)
    assert iface is ftp.IFTPShell and user is shell
    _, anon, _ = realm.requestAvatar(checkers.ANONYMOUS, None, ftp.IFTPShell)
    write(user, ["incoming", "shared"], [b"x"])
    assert read(anon, ["incoming", "shared"]) == b"x"
    failure_of(anon.removeFile(["incoming", "shared"]), ftp.PermissionDeniedError)
    logout()


def test_memory_shell_seed() -> None:
    shell = MemoryShell({"/a/b.txt": "text", "c/": None, "d": None})
    assert files_snapshot(shell) == {"a/b.txt": 4}
    assert [n for n, _ in result_of(shell.list([]))] == ["a", "c", "d"]
    assert shell.read_bytes("a/b.txt") == b"text"
    for bad in ({"../x": b""}, {"a\\b": b""}, {"a": b"", "a/b": b""}):
        with pytest.raises(ValueError):
            MemoryShell(bad)


def test_memory_reader_keeps_contents_at_open() -> None:
    shell = MemoryShell({"f": b"old"})
    reader = result_of(shell.openForReading(["f"]))
    write(shell, ["f"], [b"new contents"])
    assert pump(reader, Collector()).data == b"old"
    assert read(shell, ["f"]) == b"new contents"


# --------------------------------------------------------------------------
# Jail: traversal attempts


@pytest.fixture
def jail(tmp_path: Any, journal: Journal) -> tuple[JailedShell, Any]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOP SECRET")
    root = tmp_path / "root"
    seed_dir(root, SEED)
    os.symlink(outside / "secret.txt", root / "pub" / "escape")  # file link out
    os.symlink(outside, root / "outdir")  # directory link out
    os.symlink(outside / "new.txt", root / "pub" / "dangle")  # dangling link out
    os.symlink(root / "pub" / "readme.txt", root / "inside")  # link staying in: fine
    os.symlink("../pub", root / "incoming" / "pub-again")  # relative, staying in
    shell = JailedShell(root, on_upload=journal.on_upload, on_violation=journal.on_violation)
    return shell, outside


def outside_state(outside: Any) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outside.iterdir())}


BAD_PATHS = [
    pytest.param([".."], id="dotdot"),
    pytest.param(["..", "outside", "secret.txt"], id="dotdot-file"),
    pytest.param(["pub", "..", ".."], id="dotdot-inner"),
    pytest.param(["..\\..\\etc"], id="backslash"),
    pytest.param(["..\\outside\\secret.txt"], id="backslash-file"),
    pytest.param(["%2e%2e", "outside", "secret.txt"], id="percent"),
    pytest.param(["%252e%252e"], id="double-percent"),
    pytest.param(["%2e%2e%2foutside"], id="percent-slash"),
    pytest.param(["pub", "a\0b"], id="nul"),
    pytest.param(["pub", "escape"], id="symlink-file"),
    pytest.param(["pub", "dangle"], id="symlink-dangling"),
    pytest.param(["outdir"], id="symlink-dir"),
    pytest.param(["outdir", "secret.txt"], id="through-symlink-dir"),
    pytest.param(["outdir", "fresh"], id="new-name-in-symlink-dir"),
]

OPERATIONS = {
    "read": lambda s, p: s.openForReading(p),
    "read-offset": lambda s, p: s.openForReading(p, offset=2),
    "write": lambda s, p: s.openForWriting(p),
    "write-offset": lambda s, p: s.openForWriting(p, offset=1),
    "append": lambda s, p: s.openForWriting(p, append=True),
    "list": lambda s, p: s.list(p, STAT_KEYS),
    "stat": lambda s, p: s.stat(p, ("size",)),
    "cd": lambda s, p: s.access(p),
    "mkdir": lambda s, p: s.makeDirectory(p + ["newdir"]),
    "mkdir-here": lambda s, p: s.makeDirectory(p),
    "rmdir": lambda s, p: s.removeDirectory(p),
    "delete": lambda s, p: s.removeFile(p),
    "rename-from": lambda s, p: s.rename(p, ["incoming", "got"]),
    "rename-to": lambda s, p: s.rename(["pub", "readme.txt"], p),
}


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_jail_refuses_and_reports(jail: Any, journal: Journal, path: list[str], op: str) -> None:
    shell, outside = jail
    before = outside_state(outside)
    failure_of(OPERATIONS[op](shell, path), ftp.PermissionDeniedError, ftp.FileNotFoundError)
    assert len(journal.violations) == 1, journal.violations
    target, reason = journal.violations[0]
    assert reason in {
        "parent-reference",
        "backslash",
        "percent-encoded-traversal",
        "nul-byte",
        "symlink-escape",
    }
    assert outside_state(outside) == before
    assert read(shell, ["pub", "readme.txt"]) == b"hello world"  # rename-to left it alone
    assert journal.uploads == []


@pytest.mark.parametrize("path", [p for p in BAD_PATHS if "symlink" not in p.id])
def test_memory_shell_refuses_and_reports_too(journal: Journal, path: list[str]) -> None:
    shell = MemoryShell(SEED, on_violation=journal.on_violation)
    for op in OPERATIONS.values():
        failure_of(op(shell, path), ftp.PermissionDeniedError)
    assert len(journal.violations) == len(OPERATIONS)


def test_twisted_to_segments_rejects_escapes() -> None:
    """What the FTP protocol hands the shell: '..' never climbs above the root."""
    for cwd, text in [([], ".."), ([], "../etc/passwd"), (["pub"], "../../x"), ([], "a\0b")]:
        with pytest.raises(ftp.InvalidPath):
            ftp.toSegments(cwd, text)
    assert ftp.toSegments(["pub"], "../incoming") == ["incoming"]  # stays inside
    assert ftp.toSegments(["pub"], "/etc/passwd") == ["etc", "passwd"]  # absolute: root-relative
    assert ftp.toSegments([], "..\\..\\etc") == ["..\\..\\etc"]  # backslash: one segment


@pytest.mark.parametrize(
    "cwd,text,reason",
    [
        ([], "../etc/passwd", "parent-escape"),
        (["pub"], "../../outside/secret.txt", "parent-escape"),
        ([], "a\0b", "nul-byte"),
        (["pub"], "..\\..\\etc\\passwd", "backslash"),
        ([], "%2e%2e/outside", "percent-encoded-traversal"),
    ],
)
def test_text_paths_are_checked_and_reported(
    jail: Any, journal: Journal, cwd: list[str], text: str, reason: str
) -> None:
    shell, _ = jail
    with pytest.raises(ftp.InvalidPath):
        shell.segments(cwd, text)
    assert journal.violations == [(text, reason)]


def test_absolute_names_resolve_against_root(jail: Any, journal: Journal, tmp_path: Any) -> None:
    shell, outside = jail
    for text in ["/etc/passwd", str(outside / "secret.txt")]:
        segments = shell.segments(["pub"], text)
        assert segments == text.strip("/").split("/")
        failure_of(shell.openForReading(segments), ftp.FileNotFoundError)
        failure_of(shell.list(segments), ftp.FileNotFoundError)
    # Absolute names are ordinary on FTP ("/pub/readme.txt"); they are jailed,
    # not an escape attempt, so they are not reported.
    assert journal.violations == []
    assert read(shell, shell.segments(["incoming"], "/pub/readme.txt")) == b"hello world"


def test_percent_names_cannot_be_created(jail: Any, journal: Journal) -> None:
    shell, _ = jail
    failure_of(shell.openForWriting(["%2e%2e"]), ftp.PermissionDeniedError)
    failure_of(shell.makeDirectory(["%2E%2e"]), ftp.PermissionDeniedError)
    assert not any("%" in name for name in os.listdir(shell.filesystemRoot.path))
    # an ordinary percent sign is just a character
    write(shell, ["incoming", "100%25 done"], [b"ok"])
    assert files_snapshot(shell)["incoming/100%25 done"] == 2
    assert len(journal.violations) == 2


def test_symlinks_inside_root_work_and_escapes_are_hidden(jail: Any, journal: Journal) -> None:
    shell, _ = jail
    assert read(shell, ["inside"]) == b"hello world"
    assert read(shell, ["incoming", "pub-again", "readme.txt"]) == b"hello world"
    names = [name for name, _ in result_of(shell.list([], STAT_KEYS))]
    assert names == ["incoming", "inside", "pub"]  # "outdir" is not listed
    pub = [name for name, _ in result_of(shell.list(["pub"], STAT_KEYS))]
    assert pub == ["readme.txt", "sub"]  # "escape" and "dangle" are not listed
    assert files_snapshot(shell) == {"inside": 11, "pub/readme.txt": 11}
    # removing a link inside the root removes the link, not its target
    result_of(shell.removeFile(["inside"]))
    assert read(shell, ["pub", "readme.txt"]) == b"hello world"
    assert journal.violations == []


def test_non_list_paths_are_refused(jail: Any, journal: Journal) -> None:
    shell, _ = jail
    failure_of(shell.openForReading("../outside/secret.txt"), ftp.PermissionDeniedError)
    failure_of(shell.list([b".."]), ftp.PermissionDeniedError)
    assert [reason for _, reason in journal.violations] == ["not-a-segment-list", "non-text-segment"]


# --------------------------------------------------------------------------
# Streaming


def test_chunk_size() -> None:
    assert CHUNK_SIZE == ChunkedFileSender.CHUNK_SIZE == 256 * 1024
    assert ftp_fs.ChunkedFileSender.__mro__[1].CHUNK_SIZE == 16 * 1024  # Twisted's default


def test_20mb_file_streams_in_256k_chunks(tmp_path: Any) -> None:
    root = tmp_path / "root"
    root.mkdir()
    block = bytes(range(256)) * 4096  # 1 MiB
    expected = hashlib.sha256()
    with open(root / "big.bin", "wb") as f:
        for i in range(20):
            piece = bytes([i]) + block[1:]
            f.write(piece)
            expected.update(piece)
    shell = JailedShell(root)
    reader = result_of(shell.openForReading(["big.bin"]))
    collector = Collector(keep=False)

    tracemalloc.start()
    try:
        pump(reader, collector)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert collector.streaming is False  # a pull producer, like FileSender
    assert collector.unregistered
    assert len(collector.sizes) == 80
    assert set(collector.sizes) == {256 * 1024}
    assert collector.digest.hexdigest() == expected.hexdigest()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: the file was buffered"


def test_offset_read_of_big_file_streams(tmp_path: Any) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:
        f.truncate(3 * CHUNK_SIZE + 10)
    shell = JailedShell(root)
    reader = result_of(shell.openForReading(["big.bin"], offset=CHUNK_SIZE + 5))
    collector = pump(reader, Collector(keep=False))
    assert collector.sizes == [CHUNK_SIZE, CHUNK_SIZE, 5]  # 2 * CHUNK_SIZE + 5 bytes left


def test_memory_reads_stream_in_chunks() -> None:
    shell = MemoryShell({"big": b"x" * (CHUNK_SIZE * 4 + 1)})
    collector = pump(result_of(shell.openForReading(["big"])), Collector(keep=False))
    assert collector.sizes == [CHUNK_SIZE] * 4 + [1]
    collector = pump(result_of(shell.openForReading(["big"], offset=CHUNK_SIZE * 3)), Collector())
    assert collector.sizes == [CHUNK_SIZE, 1]
