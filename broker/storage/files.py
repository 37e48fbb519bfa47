"""File naming, durable metadata writes, and reference-counted segment file handles.

Segment files are named by their base offset padded to 20 digits so that a plain directory
listing sorts them numerically. Metadata files are replaced atomically (tmp, fsync, rename,
fsync dir) so a crash leaves either the old or the new content, never a mix.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sluice.protocol.errors import StorageError
from sluice.protocol.slices import FileSlice

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)
NAME_DIGITS = 20
LOCK_FILE = ".lock"
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC


def segment_path(directory: Path, base_offset: int, suffix: str) -> Path:
    """``directory/<base offset, 20 digits><suffix>``."""
    return directory / f"{base_offset:0{NAME_DIGITS}d}{suffix}"


def parse_segment_name(name: str, suffix: str) -> int | None:
    """The base offset encoded in ``name`` if it is a segment file with ``suffix``, else None."""
    stem = name[: -len(suffix)] if name.endswith(suffix) else ""
    if len(stem) != NAME_DIGITS or not stem.isascii() or not stem.isdigit():
        return None
    return int(stem)


def open_append(path: Path, *, create: bool = False) -> int:
    """Open ``path`` for reading (pread) and appending; ``create`` requires it to be new."""
    flags = _OPEN_FLAGS | (os.O_CREAT | os.O_EXCL if create else 0)
    return os.open(path, flags, 0o644)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data``, looping over short writes (``os.write`` may stop early)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that file creations, renames and unlinks in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fdatasync_path(path: Path) -> None:
    """fdatasync a file by name; a file deleted meanwhile (retention) needs no sync."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class HandleQuota:
    """How many descriptors of sealed (no longer appended to) segments may stay open between
    reads, across every log that shares this quota (a broker's). A log keeps a sealed
    segment's descriptor after using it only with a token from here; without one it closes it
    at once, and the next read opens it again (an open and a close, ~12 us here). So the
    descriptors a broker keeps are one per partition (its active segment) plus at most
    ``limit``. None: no limit (each log's own LRU still caps it). Thread-safe."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        return self._taken

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self._taken >= self.limit:
                return False
            self._taken += 1
            return True

    def give(self) -> None:
        with self._lock:
            self._taken -= 1


class CorruptLogError(StorageError):
    """Invalid data below a log's flushed offset: recovery refuses to truncate acknowledged
    records away (the operator may, deliberately: ``sluice broker --repair-truncate T-P``)."""


class SegmentFile:
    """An open ``.log`` file descriptor shared by its segment and in-flight readers.

    Invariant: the descriptor stays open while the reference count is positive. The segment
    holds one reference (dropped by ``close``); every ``FileSlice`` handed out holds another
    (dropped by the sender's ``release``). So a segment deleted or evicted while a fetch is
    sending from it keeps its descriptor until the fetch lets go, and a descriptor number is
    never reused under a reader's feet. ``retain``/``release`` are thread-safe (the flusher
    retains from a worker thread).
    """

    __slots__ = ("path", "_fd", "_refs", "_owned", "_lock")

    def __init__(self, fd: int, path: Path) -> None:
        self.path = path
        self._fd = fd
        self._refs = 1
        self._owned = True
        self._lock = threading.Lock()

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    @property
    def refcount(self) -> int:
        return self._refs

    def retain(self) -> SegmentFile:
        with self._lock:
            if self._refs <= 0:
                raise ValueError(f"{self.path} is closed")
            self._refs += 1
        return self

    def release(self) -> None:
        with self._lock:
            if self._refs <= 0:
                raise ValueError(f"{self.path} released more often than retained")
            self._refs -= 1
            if self._refs:
                return
            fd, self._fd = self._fd, -1
        os.close(fd)

    def close(self) -> None:
        """Drop the owner's reference (once); readers still holding it keep the fd open."""
        if self._owned:
            self._owned = False
            self.release()

    def __repr__(self) -> str:
        return f"SegmentFile({self.path.name}, fd={self._fd}, refs={self._refs})"


def release_slices(pieces: Iterable[object]) -> None:
    """Drop the file references held by the ``FileSlice``s among ``pieces`` (a read's slices,
    a response's body): once they are sent, or once they never will be."""
    for piece in pieces:
        if isinstance(piece, FileSlice):
            piece.file.release()


class DataDirectoryInUseError(StorageError):
    """Another process holds the data directory's lock."""


class DirectoryLock:
    """An exclusive ``flock`` on ``D/.lock``: taken before anything in ``D`` is read or written,
    held until ``release`` (after the last write), so a second broker on the same data
    directory is refused instead of corrupting it. The kernel drops the lock when the holder
    dies, even by SIGKILL, so a crash never leaves a stale lock; the pid written in the file
    only serves the error message."""

    def __init__(self, fd: int, path: Path) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        """Lock ``directory`` (created if missing), or raise ``DataDirectoryInUseError``."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirectoryInUseError(
                f"data directory {directory.resolve()} is in use by another broker{by}; "
                "stop it, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
