"""Graphs whose weights lie in a file beside them (ONNX external data), loaded from verified bytes.

Export writes each graph's weights to `<graph>.data` (the default). Opened by path, ONNX Runtime would map
that file itself: fast, but what it maps is whatever is on disk then, not the bytes the loader verified, and a
file overwritten in place under a running service changes its weights (or kills it with SIGBUS). So the
runtime gives the backends a private copy instead (`PrivateCopy`): the kernel copies each weight file
into a new temporary folder only this process's user can open, the loader hashes the copies (what is
checked is what gets loaded), ONNX Runtime maps them from there (`WeightsFolder`, by the session option
that names where external weights are looked up), and the loader checks that what it mapped are those very
files and faults them in (`PrivateCopy.settle`). The folder is removed as soon as the session is built:
the mapped copies live on, unnamed, until the session closes, and nobody can swap them. OpenVINO reads its
graph and weights from the same kind of folder.

Where no private folder can be written or trusted (no room in TMPDIR, a read-only file system, a TMPDIR
others may write without the sticky bit), on Windows and with ONNX Runtime before 1.24
(`sessions.weights_folder_supported`), the loader reads the weight files into memory, hashes those bytes
and hands them over (`ExternalWeights`): ONNX Runtime copies
what it needs while it builds the session (`SessionOptions.add_external_initializers_from_files_in_memory`),
OpenVINO reads a private copy written from them.

A location the graph names but the bundle does not list is never looked up anywhere: the private folder
holds only the listed files, and a session built from bytes alone is pointed at a folder that cannot exist
(graph bytes alone would otherwise resolve such names against the current directory).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PairbertError

GRAPH_COPY = "graph.onnx"  # the graph's name in a private copy (weight files keep theirs)
FOLDER_OPTION = "session.model_external_initializers_file_folder_path"  # ONNX Runtime >= 1.21
COPY_PREFIX = "pairbert-weights-"  # then the loading process's pid: pairbert-weights-<pid>-<random>
POSIX_MODES = os.name != "nt"  # whether a folder's mode bits say who may write to it
STALE_AFTER_S = 60  # a folder is locked a moment after it is made: older and unlocked is stale


class ExternalWeightsError(PairbertError, ValueError):
    pass


def _check_plain(name: object) -> None:
    plain = isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
    if not plain or name == GRAPH_COPY:  # (the private copy's graph has that name)
        raise ExternalWeightsError(f"weight file name {name!r} is not a plain file name (nor {GRAPH_COPY!r})")


@dataclass(frozen=True)
class ExternalWeights:
    """A graph's bytes and its weight files' bytes, by the name the graph gives each file (verified by the
    caller)."""

    graph: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.files:
            _check_plain(name)

    def add_to(self, options) -> None:
        """Give an ONNX Runtime SessionOptions the weight files' contents."""
        if self.files:
            if not hasattr(options, "add_external_initializers_from_files_in_memory"):
                raise ExternalWeightsError(
                    "this onnxruntime cannot take weight files from memory: install onnxruntime >= 1.24 "
                    "(pairbert[cpu]), or re-export the bundle with --no-external-data"
                )
            names = list(self.files)
            options.add_external_initializers_from_files_in_memory(
                names, [self.files[n] for n in names], [len(self.files[n]) for n in names]
            )

    def write_private_copy(self, folder: Path) -> Path:
        """Write the graph and its weight files into `folder` (a private temporary folder) and return the
        graph's path there: for OpenVINO, which reads external weights only beside a graph on disk."""
        graph = Path(folder) / GRAPH_COPY
        for path, data in [(graph, self.graph)] + [(Path(folder) / n, d) for n, d in self.files.items()]:
            with open(path, "xb") as f:
                f.write(data)
        return graph


def look_nowhere_else(options) -> None:
    """A session built from bytes looks up external weights it was not given in a folder that cannot exist
    (below /dev/null, which is not a folder), not in the current directory."""
    options.add_session_config_entry(FOLDER_OPTION, os.path.join(os.devnull, "pairbert-no-weights"))


@dataclass(frozen=True)
class WeightsFolder:
    """A graph's bytes and the private folder (a `PrivateCopy`'s) that holds its weight files under the
    names the graph gives them (verified by the caller)."""

    graph: bytes
    folder: Path

    def add_to(self, options) -> None:
        """Point an ONNX Runtime SessionOptions at the folder: it maps the weight files from there."""
        options.add_session_config_entry(FOLDER_OPTION, str(self.folder))

    def write_graph(self) -> Path:
        """Write the graph beside its weights (for OpenVINO, which reads both from disk); its path."""
        graph = Path(self.folder) / GRAPH_COPY
        with open(graph, "xb") as f:
            f.write(self.graph)
        return graph


class CopyFailed(Exception):
    """No private copy could be made (no room in TMPDIR, a read-only file system, an unreadable source): the
    loader reads the files into memory instead."""


class CopyReplaced(ExternalWeightsError):
    """What the backend mapped from the private folder is not the copy that was hashed: someone replaced
    the folder or a file in it while it loaded (a TMPDIR others can write to)."""


class PrivateCopy:
    """A new temporary folder (0700) that receives a copy of each source file under its name, copied by the
    kernel on Linux (`sendfile`: no bytes pass through Python), and hashes each copy as it grows: a second
    thread calls `sha256` while `copy` runs, so the hashing hides behind the copy and the session build that
    follows it. Each copy is written, hashed and checked through the one descriptor that created it. The
    folder is locked (flock) for its life, so a later load can tell a folder whose process died from a live
    one (`remove_stale_copies`; a process forked meanwhile holds the lock too, until it exits).

        copy = PrivateCopy({"model.onnx.data": path})     # CopyFailed: no folder could be made
        hashing = pool.submit(copy.sha256, "model.onnx.data")
        copy.copy()                                       # CopyFailed (sha256 then raises it too)
        ... the backend opens the files in copy.folder ...  (copy.abandon() if interrupted before copy())
        copy.settle()                                     # CopyReplaced; faults the mapped copies in
        copy.remove()                                     # what the backend mapped lives on, unnamed
    """

    CHUNK = 1 << 24  # bytes per kernel copy: how closely the hashing follows

    def __init__(self, sources: dict[str, Path]):
        for name in sources:
            _check_plain(name)
        self.sources = {name: Path(source) for name, source in sources.items()}
        self._changed = threading.Condition()
        self._copied = dict.fromkeys(self.sources, 0)
        self._finished: set[str] = set()
        self._failure: str | None = None
        self._fds: dict[str, int] = {}  # each copy's own descriptor, from its creation to remove()
        self.folder, self._lock = make_private_folder()

    def copy(self) -> None:
        try:
            for name, source in self.sources.items():
                self._copy_one(source, name)
        except BaseException as exc:  # an interrupt too: the hashing thread must not wait for ever
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            self._fail(f"{getattr(exc, 'filename', None) or self.folder}: {why}")
            if isinstance(exc, OSError):
                raise CopyFailed(self._failure) from None
            raise

    def abandon(self) -> None:
        """Release the hashing thread when the copy will not finish (an interrupt before `copy` ran)."""
        if len(self._finished) < len(self.sources):
            self._fail(f"{self.folder}: the copy was abandoned")

    def _fail(self, why: str) -> None:
        with self._changed:
            self._failure = self._failure or why
            self._changed.notify_all()

    def _copy_one(self, source: Path, name: str) -> None:
        """As many bytes as `source` had when opened: a file that grows meanwhile is not followed, and one
        that shrinks ends the copy (its hash then tells)."""
        target = self.folder / name
        self._fds[name] = fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        with open(source, "rb") as src:
            size, offset = os.fstat(src.fileno()).st_size, 0
            while offset < size:
                try:
                    sent = _copy_range(src, fd, offset, min(size - offset, self.CHUNK))
                except OSError as exc:  # say which copy failed, from where
                    raise OSError(exc.errno, exc.strerror, f"{source} -> {target}") from None
                if sent == 0:
                    break
                offset += sent
                self._report(name, offset, finished=False)
        self._report(name, offset, finished=True)

    def _report(self, name: str, copied: int, finished: bool) -> None:
        with self._changed:
            self._copied[name] = copied
            if finished:
                self._finished.add(name)
            self._changed.notify_all()

    def _progress(self, name: str, done: int) -> tuple[int, bool]:
        """(bytes copied, finished) once the copy of `name` is past `done` or finished; CopyFailed if not."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._failure or name in self._finished or self._copied[name] > done
            )
            if self._failure:
                raise CopyFailed(self._failure)
            return self._copied[name], name in self._finished

    def sha256(self, name: str) -> str:
        """The sha256 of the copy of `name`, read as the copy grows (from another thread than `copy`'s)."""
        digest, done, finished = hashlib.sha256(), 0, False
        try:
            while not finished:
                copied, finished = self._progress(name, done)
                while done < copied:
                    block = os.pread(self._fds[name], min(copied - done, 1 << 22), done)
                    if not block:
                        raise CopyFailed(f"{self.folder / name}: shorter than what was copied into it")
                    digest.update(block)
                    done += len(block)
        except (OSError, AttributeError) as exc:  # (no os.pread: not POSIX)
            raise CopyFailed(f"{self.folder / name}: {getattr(exc, 'strerror', None) or exc}") from None
        return digest.hexdigest()

    def settle(self) -> int:
        """Once the backend has opened the copies: check that every file it still maps from the folder is the
        copy made (and hashed) under that name (CopyReplaced if not), and fault those mappings in, so
        resident memory holds the whole weights from the start rather than growing as embedding rows are
        first used (which reads like a leak on a service's memory graph). The bytes populated (0 where the
        kernel cannot). Linux only: elsewhere there is no /proc/self/maps to read, and nothing is checked."""
        mapped = _mappings_under(self.folder)
        ours = {name: os.fstat(fd).st_ino for name, fd in self._fds.items()}
        strangers = sorted({path for _, _, inode, path in mapped if ours.get(Path(path).name) != inode})
        if strangers:
            raise CopyReplaced(
                f"{strangers[0]}: not the private copy that was hashed (was {self.folder} replaced while "
                "loading? TMPDIR must not be writable by others)"
            )
        return _populate([(start, end) for start, end, _, _ in mapped])

    def remove(self) -> None:
        remove_private_folder(self.folder, self._lock)
        for fd in self._fds.values():
            os.close(fd)
        self._fds, self._lock = {}, None


def make_private_folder() -> tuple[Path, int | None]:
    """A new 0700 folder in TMPDIR named for pairbert's copies, and the fd of its lock (None where folders
    cannot be locked): every private copy, ONNX Runtime's or OpenVINO's, lives in one, so a load killed
    midway leaves a folder that `remove_stale_copies` finds. CopyFailed where none can be made or trusted."""
    root = Path(tempfile.gettempdir())
    try:
        _refuse_unsafe(root)
        remove_stale_copies(root)
        folder = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-", dir=root))
    except OSError as exc:
        raise CopyFailed(f"{root}: {exc.strerror or exc}") from None
    return folder, _try_lock(folder)


def remove_private_folder(folder: Path, lock: int | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        os.close(lock)


def _refuse_unsafe(root: Path) -> None:
    """A TMPDIR that others may write to without the sticky bit lets them rename our folder away and put
    theirs in its place: no private copy there (the weights are read into memory instead)."""
    if not POSIX_MODES:  # Windows makes modes up (every writable folder reads 0o777, never sticky)
        return
    info = os.stat(root)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise CopyFailed(f"{root}: writable by others without the sticky bit")


def _try_lock(folder: str | Path) -> int | None:
    """An fd holding an exclusive flock on `folder` until it is closed (or the process ends); None if someone
    holds it, or where folders cannot be locked (not POSIX, a file system without flock)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_copies(root: Path) -> int:
    """Remove the private folders that loads killed between copying and building left in `root` (the window
    is a fraction of a second: a folder otherwise goes as soon as its session is built, but a service
    crash-looping through it would leave a copy of its weights each time). A folder is stale when nobody
    holds its lock (its loading process is gone, whatever its pid was: a container's service has the same
    pid after every restart) and it is older than STALE_AFTER_S (a folder made a moment ago may not be
    locked yet). Only this user's folders. The number removed; never raises."""
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(COPY_PREFIX)]
        me = os.getuid()
    except (AttributeError, OSError):
        return 0
    removed, now = 0, time.time()
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != me or now - info.st_mtime < STALE_AFTER_S:
            continue
        fd = _try_lock(entry.path)  # None: a live load holds it (or it cannot be judged): left alone
        if fd is not None:
            shutil.rmtree(entry.path, ignore_errors=True)
            os.close(fd)
            removed += 1
    return removed


def _mappings_under(folder: Path) -> list[tuple[int, int, int, str]]:
    """(start, end, inode, path) of this process's mappings of files in `folder` (Linux; [] elsewhere)."""
    try:  # (a path that is not UTF-8 comes back as surrogates, as from os.path.realpath)
        lines = Path("/proc/self/maps").read_text(errors="surrogateescape").splitlines()
    except (OSError, ValueError):
        return []
    prefix = f"{os.path.realpath(folder)}{os.sep}"  # /proc shows resolved paths (a TMPDIR through a link)
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end, int(fields[4]), fields[5].removesuffix(" (deleted)")))
    return found


MADV_POPULATE_READ = 22  # Linux >= 5.14 (Python's mmap module names it from 3.12 on)


def _populate(ranges: list[tuple[int, int]]) -> int:
    """madvise(MADV_POPULATE_READ) each range; the bytes populated (stops at the first the kernel refuses:
    a kernel before 5.14, or not Linux)."""
    if not ranges:
        return 0
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return 0
    populated = 0
    for start, end in ranges:
        if madvise(start, end - start, MADV_POPULATE_READ) != 0:
            break
        populated += end - start
    return populated


def _copy_range(src, dst: int, offset: int, count: int) -> int:
    """Copy `count` bytes at `offset` of the file `src` to the end of what was written to the descriptor
    `dst`: by the kernel where it can copy file to file (Linux), else through a buffer. The bytes copied (0
    at the end of `src`)."""
    try:
        return os.sendfile(dst, src.fileno(), offset, count)
    except (AttributeError, OSError) as exc:  # no os.sendfile (Windows), or to sockets only (macOS)
        if isinstance(exc, OSError) and exc.errno not in _NO_FILE_SENDFILE:
            raise
    src.seek(offset)
    block = src.read(count)
    return os.write(dst, block) if block else 0


_NO_FILE_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.ENOTSUP)
