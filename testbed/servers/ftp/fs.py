"""Filesystems behind the testbed FTP server: IFTPShell over a jailed real directory or an in-memory tree.
Both refuse (and report) paths escaping the root, stream in 256 KiB chunks and take REST/APPE offsets."""

from __future__ import annotations

import errno
import functools
import io
import os
import stat as stat_mod
import time
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote

from twisted.cred import checkers, portal
from twisted.internet import defer, interfaces
from twisted.logger import Logger
from twisted.protocols import basic, ftp
from twisted.python.filepath import FilePath, Permissions
from zope.interface import implementer

__all__ = [
    "CHUNK_SIZE",
    "ChunkedFileSender",
    "JailedShell",
    "MAX_SEGMENTS",
    "MemoryShell",
    "PathTooDeep",
    "ShellRealm",
    "check_segment",
    "files_snapshot",
    "make_shell",
]

_log = Logger()

#: Bytes read per producer step; Twisted's FileSender default is 16 KiB.
CHUNK_SIZE = 256 * 1024

UploadCallback = Callable[[str, int], Any]
ViolationCallback = Callable[[Any, str], Any]

#: Segments a path may have: deeper ones are refused before any lookup (PATH_MAX allows ~2,048 anyway).
MAX_SEGMENTS = 256

# How many rounds of percent-decoding we look through ("%252e" -> "%2e" -> ".").
_MAX_DECODE_ROUNDS = 4
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _noop(*args: Any) -> None:
    return None


class ChunkedFileSender(basic.FileSender):
    """A L{basic.FileSender} reading C{CHUNK_SIZE} (256 KiB) per resumeProducing."""

    CHUNK_SIZE = CHUNK_SIZE


# --------------------------------------------------------------------------
# Path checks shared by both shells.


def check_segment(segment: Any) -> str | None:
    """Return why C{segment} is not an acceptable path segment, or None if it is.

    Backslashes are refused outright (a Windows-style separator; never
    treated as one, never allowed as a literal).  Percent-encoding is a
    literal on FTP, but a segment whose decoding is a traversal element
    ("%2e%2e", "%2f", "%5c", "%00", also double-encoded) is refused too,
    so nothing downstream that decodes names can be walked out of the root.
    """
    if not isinstance(segment, str):
        return "non-text-segment"
    if segment == "..":
        return "parent-reference"
    if segment in ("", "."):
        return "empty-segment"
    if "\0" in segment:
        return "nul-byte"
    if "/" in segment:
        return "separator-in-segment"
    if "\\" in segment:
        return "backslash"
    decoded = segment
    for _ in range(_MAX_DECODE_ROUNDS):
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
        if decoded in (".", "..") or any(c in decoded for c in "/\\\0"):
            return "percent-encoded-traversal"
    return None


class PathTooDeep(ftp.InvalidPath):
    """A text path with more than C{MAX_SEGMENTS} segments: bad input, refused before any lookup."""


def _display(segments: Sequence[str]) -> str:
    return "/" + "/".join(str(s) for s in segments)


_ERRNO_MAP = {
    errno.ENOENT: ftp.FileNotFoundError,
    errno.EACCES: ftp.PermissionDeniedError,
    errno.EPERM: ftp.PermissionDeniedError,
    errno.EROFS: ftp.PermissionDeniedError,
    errno.ELOOP: ftp.PermissionDeniedError,
    errno.ENOTEMPTY: ftp.PermissionDeniedError,
    errno.EBUSY: ftp.PermissionDeniedError,
    errno.EINVAL: ftp.PermissionDeniedError,
    errno.EXDEV: ftp.PermissionDeniedError,
    errno.ENAMETOOLONG: ftp.FileNotFoundError,
    errno.ENOTDIR: ftp.IsNotADirectoryError,
    errno.EEXIST: ftp.FileExistsError,
    errno.EISDIR: ftp.IsADirectoryError,
}


def _returns_deferred(method: Callable[..., Any]) -> Callable[..., defer.Deferred]:
    """Run C{method} synchronously; return its result (or error) as a fired Deferred.

    OSErrors are mapped to the FTP errors the protocol knows how to answer.
    """

    @functools.wraps(method)
    def wrapper(self: Any, path: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        try:
            result = method(self, path, *args, **kwargs)
        except OSError as e:
            cls = _ERRNO_MAP.get(e.errno) if e.errno is not None else None
            if cls is None:
                return defer.fail()
            shown = _display(path) if isinstance(path, (list, tuple)) else str(path)
            return defer.fail(cls(shown))
        except Exception:
            return defer.fail()
        return defer.succeed(result)

    return wrapper


class _ShellBase:
    """Callbacks, path validation and the REST-aware extensions common to both shells."""

    writable: bool
    on_upload: UploadCallback
    on_violation: ViolationCallback

    def read_only(self):
        """The same tree and callbacks, refusing every modification (``with_callbacks`` is each shell's)."""
        return self.with_callbacks(writable=False)

    def _init_callbacks(
        self,
        writable: bool,
        on_upload: UploadCallback | None,
        on_violation: ViolationCallback | None,
    ) -> None:
        self.writable = bool(writable)
        self.on_upload = on_upload if on_upload is not None else _noop
        self.on_violation = on_violation if on_violation is not None else _noop

    # -- reporting ---------------------------------------------------------

    def _report(self, target: Any, reason: str) -> None:
        if isinstance(target, (list, tuple)):
            target = list(target)
        try:
            self.on_violation(target, reason)
        except Exception:
            _log.failure("on_violation callback failed for {target!r}", target=target)

    def _refuse(self, target: Any, reason: str) -> ftp.PermissionDeniedError:
        """Report a violation; return the error to raise."""
        self._report(target, reason)
        shown = _display(target) if isinstance(target, (list, tuple)) else str(target)
        return ftp.PermissionDeniedError(shown.replace("\0", "\\0"))

    def _uploaded(self, path_text: str, size: int) -> None:
        try:
            self.on_upload(path_text, size)
        except Exception:
            _log.failure("on_upload callback failed for {path!r}", path=path_text)

    def _validated(self, path: Any) -> list[str]:
        if isinstance(path, (str, bytes)) or not isinstance(path, Iterable):
            raise self._refuse([str(path)], "not-a-segment-list")
        segments = list(path)
        if len(segments) > MAX_SEGMENTS:
            raise self._refuse(segments[:8] + ["..."], "too-many-segments")
        for segment in segments:
            reason = check_segment(segment)
            if reason is not None:
                raise self._refuse(segments, reason)
        return segments

    def _require_writable(self, path: Sequence[str]) -> None:
        if not self.writable:
            raise ftp.PermissionDeniedError(_display(path) + " (read-only)")

    @staticmethod
    def _check_offset(path: Sequence[str], offset: Any) -> int:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ftp.CmdArgSyntaxError(f"bad offset {offset!r} for {_display(path)}")
        return offset

    # -- text paths (for the protocol) ---------------------------------------

    def segments(self, cwd: Sequence[str], path_text: str) -> list[str]:
        """C{ftp.toSegments} plus reporting: resolve C{path_text} against C{cwd}.

        Raises C{ftp.InvalidPath} (after calling on_violation) for names that
        climb above the root, contain NUL, backslashes or encoded traversal;
        the FTP protocol turns InvalidPath into "550 no such file".  Twisted's
        own C{ftp_*} commands call the module-level C{toSegments}, which
        rejects the same escapes without reporting them: a server subclass
        that wants them journaled should resolve names through this method.
        """
        try:
            segs = ftp.toSegments(list(cwd), path_text)
        except ftp.InvalidPath:
            reason = "nul-byte" if "\0" in path_text else "parent-escape"
            self._report(path_text, reason)
            raise
        if len(segs) > MAX_SEGMENTS:
            raise PathTooDeep(list(cwd), path_text)
        for segment in segs:
            reason = check_segment(segment)
            if reason is not None:
                self._report(path_text, reason)
                raise ftp.InvalidPath(list(cwd), path_text)
        return segs



# --------------------------------------------------------------------------
# Reading and writing.


@implementer(ftp.IReadFile)
class _ChunkedReader:
    """IReadFile streaming a file object through L{ChunkedFileSender}."""

    def __init__(self, fObj: Any) -> None:
        self.fObj = fObj
        self._sent = False

    def _close(self, passthrough: Any) -> Any:
        self.fObj.close()
        return passthrough

    def send(self, consumer: interfaces.IConsumer) -> defer.Deferred:
        assert not self._sent, "Can only call IReadFile.send *once* per instance"
        self._sent = True
        d = ChunkedFileSender().beginFileTransfer(self.fObj, consumer)
        d.addBoth(self._close)
        return d

    def close(self) -> None:
        """Release the file if send() is never going to be called."""
        self.fObj.close()


class _BufferReader(io.RawIOBase):
    """Read-only file object over a bytearray, slicing at most C{n} bytes per read."""

    def __init__(self, buf: bytearray, offset: int) -> None:
        super().__init__()
        self._buf = buf
        self._pos = offset

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from closed file")
        end = len(self._buf) if n is None or n < 0 else self._pos + n
        chunk = bytes(self._buf[self._pos : end])
        self._pos += len(chunk)
        return chunk

    def readinto(self, b: Any) -> int:  # pragma: no cover - RawIOBase contract
        chunk = self.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


@implementer(interfaces.IConsumer)
class _UploadConsumer:
    """Consumer handed to the DTP: each chunk goes to the sink as it arrives."""

    def __init__(self, write: Callable[[bytes], None], finish: Callable[[], int]) -> None:
        self._write = write
        self._finish = finish
        self._size: int | None = None
        self.producer: Any = None
        self.received = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        assert streaming

    def unregisterProducer(self) -> None:
        self.producer = None
        self.finish()

    def write(self, data: bytes) -> None:
        if self._size is not None:
            raise ValueError("upload already finished")
        self._write(data)
        self.received += len(data)

    def finish(self) -> int:
        """Close the sink (idempotent); return the resulting file size."""
        if self._size is None:
            self._size = self._finish()
        return self._size


@implementer(ftp.IWriteFile)
class _UploadFile:
    """IWriteFile: receive() hands out the consumer, close() reports the upload."""

    def __init__(self, consumer: _UploadConsumer, path_text: str, report: Callable[[str, int], None]) -> None:
        self._consumer = consumer
        self._path_text = path_text
        self._report = report
        self._received = False
        self._closed = False

    def receive(self) -> defer.Deferred:
        assert not self._received, "Can only call IWriteFile.receive *once* per instance"
        self._received = True
        return defer.succeed(self._consumer)

    def close(self) -> defer.Deferred:
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        try:
            size = self._consumer.finish()
        except Exception:
            return defer.fail()
        self._report(self._path_text, size)
        return defer.succeed(None)

    def abort(self) -> None:
        """Release the file without reporting an upload (the transfer failed); what arrived stays."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.finish()
        except Exception:
            _log.failure("closing an aborted upload of {path!r} failed", path=self._path_text)


def _write_all(fObj: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = fObj.write(view)
        if n is None:  # pragma: no cover - only for non-blocking descriptors
            continue
        view = view[n:]


# --------------------------------------------------------------------------
# The jailed real directory.


@implementer(ftp.IFTPShell)
class JailedShell(_ShellBase, ftp.FTPShell):
    """FTPShell confined to C{root}, with symlinks resolved and checked at every step.

    Each path component is looked at in turn (one lstat), a symlink is
    resolved with realpath and must stay inside the (real) root, so a link
    pointing outside is refused whether it is the final name or a directory
    on the way; a path has at most MAX_SEGMENTS components.  Removal and rename act on
    the directory entry itself (a link inside root is removed, not its target).
    """

    def __init__(
        self,
        root: FilePath | str | os.PathLike,
        *,
        writable: bool = True,
        on_upload: UploadCallback | None = None,
        on_violation: ViolationCallback | None = None,
    ) -> None:
        if not isinstance(root, FilePath):
            root = FilePath(os.fsdecode(os.fspath(root)))
        real = os.path.realpath(root.path)
        if not os.path.isdir(real):
            raise ValueError(f"FTP root {root.path!r} is not a directory")
        ftp.FTPShell.__init__(self, FilePath(real))
        self.root = root
        self._root_real = real
        self._root_prefix = real if real.endswith(os.sep) else real + os.sep
        self._init_callbacks(writable, on_upload, on_violation)

    def with_callbacks(
        self,
        *,
        writable: bool | None = None,
        on_upload: UploadCallback | None = None,
        on_violation: ViolationCallback | None = None,
    ) -> "JailedShell":
        """The same tree with other callbacks (each defaults to this shell's), e.g. one per connection."""
        return JailedShell(
            self.root,
            writable=self.writable if writable is None else writable,
            on_upload=on_upload or self.on_upload,
            on_violation=on_violation or self.on_violation,
        )

    # -- resolution --------------------------------------------------------------

    def _inside(self, real: str) -> bool:
        return real == self._root_real or real.startswith(self._root_prefix)

    def _locate(self, path: Any) -> tuple[list[str], str, str]:
        """Validate C{path}; return (segments, real path, real path of the entry's directory).

        Raises PermissionDeniedError (after on_violation) if any prefix of the
        path resolves outside the root.
        """
        segments = self._validated(path)
        current = parent = self._root_real
        missing = False
        for segment in segments:
            parent = current
            current = os.path.join(current, segment)
            if missing:
                continue  # below a missing entry nothing can be a link: realpath appends it as is
            # One lstat per segment keeps this linear: only a link needs realpath (which
            # re-resolves every prefix, so calling it per segment made the walk quadratic).
            try:
                is_link = stat_mod.S_ISLNK(os.lstat(current).st_mode)
            except OSError:
                missing = True
                continue
            if is_link:
                current = os.path.realpath(current)
                if not self._inside(current):
                    raise self._refuse(segments, "symlink-escape")
        return segments, current, parent

    def _entry(self, path: Any) -> tuple[list[str], str, str]:
        """Like _locate, for operations on the directory entry (not the link target)."""
        segments, real, parent = self._locate(path)
        if not segments:
            raise ftp.PermissionDeniedError("/ (the root)")
        return segments, real, os.path.join(parent, segments[-1])

    def _path(self, path: Any) -> FilePath:  # used by any inherited code path
        return FilePath(self._locate(path)[1])

    # -- IFTPShell -----------------------------------------------------------------

    @_returns_deferred
    def makeDirectory(self, path: Sequence[str]) -> None:
        segments, real, _ = self._locate(path)
        self._require_writable(segments)
        os.makedirs(real)

    @_returns_deferred
    def removeDirectory(self, path: Sequence[str]) -> None:
        segments, _, entry = self._entry(path)
        self._require_writable(segments)
        if stat_mod.S_ISREG(os.lstat(entry).st_mode):
            raise ftp.IsNotADirectoryError(_display(segments))
        os.rmdir(entry)

    @_returns_deferred
    def removeFile(self, path: Sequence[str]) -> None:
        segments, _, entry = self._entry(path)
        self._require_writable(segments)
        if stat_mod.S_ISDIR(os.lstat(entry).st_mode):
            raise ftp.IsADirectoryError(_display(segments))
        os.remove(entry)

    @_returns_deferred
    def rename(self, fromPath: Sequence[str], toPath: Sequence[str]) -> None:
        src_segments, _, src = self._entry(fromPath)
        dst_segments, _, dst = self._entry(toPath)
        self._require_writable(src_segments)
        os.lstat(src)  # FileNotFoundError before anything else
        os.rename(src, dst)

    @_returns_deferred
    def access(self, path: Sequence[str]) -> None:
        _, real, _ = self._locate(path)
        os.listdir(real)

    @_returns_deferred
    def stat(self, path: Sequence[str], keys: Sequence[str] = ()) -> list[Any]:
        _, real, _ = self._locate(path)
        os.stat(real)
        return self._statNode(FilePath(real), keys)

    @_returns_deferred
    def list(self, path: Sequence[str], keys: Sequence[str] = ()) -> list[tuple[str, list[Any]]]:
        segments, real, _ = self._locate(path)
        st = os.stat(real)
        if not stat_mod.S_ISDIR(st.st_mode):
            return [("/".join(segments), self._statNode(FilePath(real), keys) if keys else [])]
        results = []
        for name in sorted(os.listdir(real)):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                continue  # undecodable on-disk name: cannot be sent or named back
            child = os.path.realpath(os.path.join(real, name))
            if not self._inside(child):
                continue  # a link out of the jail is not shown
            try:
                attrs = self._statNode(FilePath(child), keys) if keys else []
            except OSError:
                continue  # dangling link or vanished entry
            results.append((name, attrs))
        return results

    @_returns_deferred
    def openForReading(self, path: Sequence[str], offset: int = 0) -> _ChunkedReader:
        segments, real, _ = self._locate(path)
        offset = self._check_offset(segments, offset)
        st = os.stat(real)
        if stat_mod.S_ISDIR(st.st_mode):
            raise ftp.IsADirectoryError(_display(segments))
        if not stat_mod.S_ISREG(st.st_mode):
            raise ftp.PermissionDeniedError(_display(segments) + " (not a regular file)")
        fd = os.open(real, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY)
        fObj = os.fdopen(fd, "rb")
        try:
            if offset:
                fObj.seek(offset)
        except BaseException:
            fObj.close()
            raise
        return _ChunkedReader(fObj)

    @_returns_deferred
    def openForWriting(
        self, path: Sequence[str], offset: int = 0, append: bool = False
    ) -> _UploadFile:
        """Open for STOR (truncate), REST+STOR (keep C{offset} bytes, write after) or APPE.

        With C{append} the offset is ignored.  An offset beyond the current
        end of the file is refused with CmdArgSyntaxError (501).
        """
        segments, real, _ = self._locate(path)
        self._require_writable(segments)
        offset = 0 if append else self._check_offset(segments, offset)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
            if offset:
                raise
        if st is not None:
            if stat_mod.S_ISDIR(st.st_mode):
                raise ftp.IsADirectoryError(_display(segments))
            if not stat_mod.S_ISREG(st.st_mode):
                raise ftp.PermissionDeniedError(_display(segments) + " (not a regular file)")
            if offset > st.st_size:
                raise ftp.CmdArgSyntaxError(
                    f"offset {offset} beyond end of {_display(segments)} ({st.st_size} bytes)"
                )
        flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        if append:
            flags |= os.O_APPEND
        elif not offset:
            flags |= os.O_TRUNC
        fd = os.open(real, flags, 0o644)
        try:
            if offset:
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
            fObj = os.fdopen(fd, "wb", buffering=0)  # unbuffered: write-through
        except BaseException:
            os.close(fd)
            raise

        def finish() -> int:
            try:
                return os.fstat(fObj.fileno()).st_size
            finally:
                fObj.close()

        consumer = _UploadConsumer(functools.partial(_write_all, fObj), finish)
        return _UploadFile(consumer, "/".join(segments), self._uploaded)

    # -- snapshot ------------------------------------------------------------------

    def files(self) -> dict[str, int]:
        """Every regular file under root (links resolving inside root included)."""
        out: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(self._root_real):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                real = os.path.realpath(full)
                if not self._inside(real):
                    continue
                try:
                    st = os.stat(real)
                except OSError:
                    continue
                if stat_mod.S_ISREG(st.st_mode):
                    rel = os.path.relpath(full, self._root_real).replace(os.sep, "/")
                    out[rel] = st.st_size
        return out


# --------------------------------------------------------------------------
# The in-memory tree.


class _MemFile:
    __slots__ = ("data", "mtime")

    def __init__(self, data: bytes | bytearray = b"") -> None:
        self.data = bytearray(data)
        self.mtime = time.time()


class _MemDir:
    __slots__ = ("children", "mtime")

    def __init__(self) -> None:
        self.children: dict[str, _MemFile | _MemDir] = {}
        self.mtime = time.time()


@implementer(ftp.IFTPShell)
class MemoryShell(_ShellBase):
    """IFTPShell over an in-memory tree built from C{{"dir/name": b"data", "empty/": None}}."""

    owner = "testbed"
    group = "testbed"

    def __init__(
        self,
        files: Mapping[str, bytes | str | None] | None = None,
        *,
        writable: bool = True,
        on_upload: UploadCallback | None = None,
        on_violation: ViolationCallback | None = None,
        _tree: _MemDir | None = None,
    ) -> None:
        self._init_callbacks(writable, on_upload, on_violation)
        self._tree = _tree if _tree is not None else _MemDir()
        for key, value in (files or {}).items():
            self._seed(key, value)

    def with_callbacks(
        self,
        *,
        writable: bool | None = None,
        on_upload: UploadCallback | None = None,
        on_violation: ViolationCallback | None = None,
    ) -> "MemoryShell":
        """A view of the same tree with other callbacks (each defaults to this shell's)."""
        return MemoryShell(
            writable=self.writable if writable is None else writable,
            on_upload=on_upload or self.on_upload,
            on_violation=on_violation or self.on_violation,
            _tree=self._tree,
        )

    def _seed(self, key: str, value: bytes | str | None) -> None:
        is_dir = key.endswith("/") or value is None
        segments = [s for s in key.strip("/").split("/") if s]
        for segment in segments:
            reason = check_segment(segment)
            if reason is not None:
                raise ValueError(f"bad FTP file name {key!r}: {reason}")
        if not segments:
            if is_dir:
                return
            raise ValueError(f"bad FTP file name {key!r}")
        directory = self._tree
        for segment in segments[:-1]:
            node = directory.children.setdefault(segment, _MemDir())
            if not isinstance(node, _MemDir):
                raise ValueError(f"{key!r}: {segment!r} is already a file")
            directory = node
        name = segments[-1]
        existing = directory.children.get(name)
        if is_dir:
            if existing is None:
                directory.children[name] = _MemDir()
            elif not isinstance(existing, _MemDir):
                raise ValueError(f"{key!r} is already a file")
            return
        if isinstance(existing, _MemDir):
            raise ValueError(f"{key!r} is already a directory")
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        directory.children[name] = _MemFile(data)

    # -- lookup ------------------------------------------------------------------

    def _lookup(self, segments: Sequence[str]) -> _MemFile | _MemDir | None:
        node: _MemFile | _MemDir = self._tree
        for segment in segments:
            if not isinstance(node, _MemDir):
                return None
            child = node.children.get(segment)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, segments: Sequence[str]) -> _MemDir:
        """The directory that holds (or would hold) the last segment."""
        node: _MemFile | _MemDir = self._tree
        for i, segment in enumerate(segments[:-1]):
            assert isinstance(node, _MemDir)
            child = node.children.get(segment)
            if child is None:
                raise ftp.FileNotFoundError(_display(segments[: i + 1]))
            if not isinstance(child, _MemDir):
                raise ftp.IsNotADirectoryError(_display(segments[: i + 1]))
            node = child
        assert isinstance(node, _MemDir)
        return node

    def _existing(self, segments: Sequence[str]) -> _MemFile | _MemDir:
        node = self._lookup(segments)
        if node is None:
            raise ftp.FileNotFoundError(_display(segments))
        return node

    def _stat_node(self, node: _MemFile | _MemDir, keys: Sequence[str]) -> list[Any]:
        is_dir = isinstance(node, _MemDir)
        values = {
            "size": 0 if is_dir else len(node.data),  # type: ignore[union-attr]
            "directory": is_dir,
            "permissions": Permissions(0o755 if is_dir else 0o644),
            "hardlinks": 2 if is_dir else 1,
            "modified": node.mtime,
            "owner": self.owner,
            "group": self.group,
        }
        return [values[k] for k in keys]

    # -- IFTPShell -----------------------------------------------------------------

    @_returns_deferred
    def makeDirectory(self, path: Sequence[str]) -> None:
        segments = self._validated(path)
        self._require_writable(segments)
        if not segments or self._lookup(segments) is not None:
            raise ftp.FileExistsError(_display(segments))
        node = self._tree
        for i, segment in enumerate(segments):  # like os.makedirs
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _MemDir()
                node.mtime = time.time()
            elif not isinstance(child, _MemDir):
                raise ftp.IsNotADirectoryError(_display(segments[: i + 1]))
            node = child

    @_returns_deferred
    def removeDirectory(self, path: Sequence[str]) -> None:
        segments = self._validated(path)
        self._require_writable(segments)
        if not segments:
            raise ftp.PermissionDeniedError("/ (the root)")
        node = self._existing(segments)
        if not isinstance(node, _MemDir):
            raise ftp.IsNotADirectoryError(_display(segments))
        if node.children:
            raise ftp.PermissionDeniedError(_display(segments) + " (directory not empty)")
        parent = self._parent(segments)
        del parent.children[segments[-1]]
        parent.mtime = time.time()

    @_returns_deferred
    def removeFile(self, path: Sequence[str]) -> None:
        segments = self._validated(path)
        self._require_writable(segments)
        node = self._existing(segments)
        if isinstance(node, _MemDir):
            raise ftp.IsADirectoryError(_display(segments))
        parent = self._parent(segments)
        del parent.children[segments[-1]]
        parent.mtime = time.time()

    @_returns_deferred
    def rename(self, fromPath: Sequence[str], toPath: Sequence[str]) -> None:
        src = self._validated(fromPath)
        dst = self._validated(toPath)
        self._require_writable(src)
        if not src or not dst:
            raise ftp.PermissionDeniedError("/ (the root)")
        node = self._existing(src)
        if src == dst:
            return
        if isinstance(node, _MemDir) and dst[: len(src)] == src:
            raise ftp.PermissionDeniedError(_display(dst) + " (inside the source directory)")
        dst_parent = self._parent(dst)
        target = dst_parent.children.get(dst[-1])
        if target is not None:  # replace like os.rename does
            if isinstance(node, _MemDir) and not isinstance(target, _MemDir):
                raise ftp.IsNotADirectoryError(_display(dst))
            if not isinstance(node, _MemDir) and isinstance(target, _MemDir):
                raise ftp.IsADirectoryError(_display(dst))
            if isinstance(target, _MemDir) and target.children:
                raise ftp.PermissionDeniedError(_display(dst) + " (directory not empty)")
        src_parent = self._parent(src)
        del src_parent.children[src[-1]]
        dst_parent.children[dst[-1]] = node
        src_parent.mtime = dst_parent.mtime = time.time()

    @_returns_deferred
    def access(self, path: Sequence[str]) -> None:
        segments = self._validated(path)
        if not isinstance(self._existing(segments), _MemDir):
            raise ftp.IsNotADirectoryError(_display(segments))

    @_returns_deferred
    def stat(self, path: Sequence[str], keys: Sequence[str] = ()) -> list[Any]:
        segments = self._validated(path)
        return self._stat_node(self._existing(segments), keys)

    @_returns_deferred
    def list(self, path: Sequence[str], keys: Sequence[str] = ()) -> list[tuple[str, list[Any]]]:
        segments = self._validated(path)
        node = self._existing(segments)
        if isinstance(node, _MemFile):
            return [("/".join(segments), self._stat_node(node, keys))]
        return [(name, self._stat_node(child, keys)) for name, child in sorted(node.children.items())]

    @_returns_deferred
    def openForReading(self, path: Sequence[str], offset: int = 0) -> _ChunkedReader:
        segments = self._validated(path)
        offset = self._check_offset(segments, offset)
        node = self._existing(segments)
        if isinstance(node, _MemDir):
            raise ftp.IsADirectoryError(_display(segments))
        # Uploads replace node.data with a fresh bytearray, so a reader keeps
        # the contents as they were when it was opened (like an open fd).
        return _ChunkedReader(_BufferReader(node.data, offset))

    @_returns_deferred
    def openForWriting(
        self, path: Sequence[str], offset: int = 0, append: bool = False
    ) -> _UploadFile:
        """STOR (truncate), REST+STOR (keep C{offset} bytes) or APPE; same rules as JailedShell."""
        segments = self._validated(path)
        self._require_writable(segments)
        offset = 0 if append else self._check_offset(segments, offset)
        if not segments:
            raise ftp.IsADirectoryError("/")
        parent = self._parent(segments)
        node = parent.children.get(segments[-1])
        if isinstance(node, _MemDir):
            raise ftp.IsADirectoryError(_display(segments))
        if node is None:
            if offset:
                raise ftp.FileNotFoundError(_display(segments))
            node = parent.children[segments[-1]] = _MemFile()
            parent.mtime = time.time()
        if offset > len(node.data):
            raise ftp.CmdArgSyntaxError(
                f"offset {offset} beyond end of {_display(segments)} ({len(node.data)} bytes)"
            )
        if append:
            data = bytearray(node.data)
        else:
            data = bytearray(node.data[:offset])
        node.data = data
        node.mtime = time.time()
        file_node = node

        def write(chunk: bytes) -> None:
            data.extend(chunk)
            file_node.mtime = time.time()

        def finish() -> int:
            return len(data)

        return _UploadFile(_UploadConsumer(write, finish), "/".join(segments), self._uploaded)

    # -- snapshot ------------------------------------------------------------------

    def files(self) -> dict[str, int]:
        out: dict[str, int] = {}

        def walk(node: _MemDir, prefix: str) -> None:
            for name, child in sorted(node.children.items()):
                if isinstance(child, _MemDir):
                    walk(child, prefix + name + "/")
                else:
                    out[prefix + name] = len(child.data)

        walk(self._tree, "")
        return out

    def read_bytes(self, path_text: str) -> bytes:
        """Contents of a file by its relative path (for assertions)."""
        node = self._lookup([s for s in path_text.strip("/").split("/") if s])
        if not isinstance(node, _MemFile):
            raise KeyError(path_text)
        return bytes(node.data)


# --------------------------------------------------------------------------
# Helpers for the server.


def make_shell(
    root: str | os.PathLike | None = None,
    files: Mapping[str, bytes | str | None] | None = None,
    writable: bool = True,
    on_upload: UploadCallback | None = None,
    on_violation: ViolationCallback | None = None,
) -> JailedShell | MemoryShell:
    """A JailedShell over C{root} if given, else a MemoryShell seeded from C{files}."""
    if root is not None:
        if files:
            raise ValueError("give either an FTP root directory or in-memory files, not both")
        return JailedShell(root, writable=writable, on_upload=on_upload, on_violation=on_violation)
    return MemoryShell(files, writable=writable, on_upload=on_upload, on_violation=on_violation)


def files_snapshot(shell: JailedShell | MemoryShell) -> dict[str, int]:
    """Every file in the shell's tree: relative path ("pub/readme.txt") -> size in bytes."""
    return shell.files()


@implementer(portal.IRealm)
class ShellRealm:
    """Realm handing out one shared shell: C{shell} to users, C{anonymous} to anonymous logins.

    C{anonymous} defaults to C{shell.read_only()}; pass C{shell} itself to let
    anonymous users write.
    """

    def __init__(self, shell: JailedShell | MemoryShell, anonymous: Any = None) -> None:
        self.shell = shell
        self.anonymous = anonymous if anonymous is not None else shell.read_only()

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces_: Any) -> tuple[Any, Any, Callable[[], None]]:
        if ftp.IFTPShell not in interfaces_:
            raise NotImplementedError("Only IFTPShell interface is supported by this realm")
        avatar = self.anonymous if avatarId is checkers.ANONYMOUS else self.shell
        return (ftp.IFTPShell, avatar, _noop)

