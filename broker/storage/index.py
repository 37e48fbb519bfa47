"""Sparse, fixed-width, append-only index files: ``OffsetIndex`` and ``TimeIndex``.

Both are derived data. They hold no checksum and are never preallocated (a crash can't leave a
zero-filled tail that looks like entries); after an unclean shutdown, or when a load-time
sanity check fails, the owning segment rebuilds them from the log. Entries live in memory (a
bytearray, loaded lazily) and reach the file in batches: ``write_pending`` runs at flush, roll
and close, so the append path never pays an extra system call for the index.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from sluice.broker.storage.files import write_all
from sluice.protocol.errors import StorageError

U32_MAX = 2**32 - 1


class CorruptIndexError(StorageError):
    """An index file is missing, torn or inconsistent with its log; rebuild it."""


class _SparseIndex:
    """Entries of ``ENTRY`` layout, strictly increasing in every field, kept in ``_buf``.

    ``_written`` bytes of ``_buf`` are in the file; the rest are pending. The in-memory copy is
    authoritative while loaded.
    """

    ENTRY: struct.Struct
    OFFSET_FIELD: int  # which field is the relative offset
    MIN_LAST: tuple[int, int]  # a real last entry is at least this (a zeroed tail is not)

    __slots__ = ("path", "_buf", "_written", "_unsynced")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buf: bytearray | None = None
        self._written = 0
        self._unsynced = False  # the file changed since the last take_unsynced()

    # -- loading -----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._buf is not None

    def load(self, *, max_key: int, max_value: int) -> None:
        """Read the file and run the cheap checks (size, last entry within bounds).

        ``max_key``/``max_value`` bound the last entry's first/second field (inclusive).
        Raises ``CorruptIndexError``; the caller rebuilds.
        """
        if self._buf is not None:
            return
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise CorruptIndexError(f"{self.path.name} is missing") from None
        size = self.ENTRY.size
        if len(data) % size:
            raise CorruptIndexError(f"{self.path.name} has a torn entry ({len(data)} bytes)")
        self._buf = bytearray(data)
        self._written = len(data)
        try:
            self._check_tail(max_key, max_value)
        except CorruptIndexError:
            self.unload()
            raise

    def _check_tail(self, max_key: int, max_value: int) -> None:
        n = len(self)
        if not n:
            return
        last = self.entry(n - 1)
        if not all(low <= v for low, v in zip(self.MIN_LAST, last, strict=True)) or last[0] > max_key or last[1] > max_value:
            raise CorruptIndexError(f"{self.path.name}: last entry {last} beyond the log")
        if n > 1 and not all(a < b for a, b in zip(self.entry(n - 2), last, strict=True)):
            raise CorruptIndexError(f"{self.path.name}: last entries not increasing")

    def unload(self) -> None:
        """Forget the in-memory entries (write pending ones first unless discarding)."""
        self._buf = None
        self._written = 0

    def reset(self) -> None:
        """Empty the index in memory and on disk (start of a rebuild)."""
        try:
            had_entries = self.path.stat().st_size > 0
        except FileNotFoundError:
            had_entries = False
        with open(self.path, "wb"):
            pass
        self._buf = bytearray()
        self._written = 0
        # Emptying a file needs an fdatasync; creating one only the directory fsync.
        self._unsynced = self._unsynced or had_entries

    # -- access ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._buffer()) // self.ENTRY.size

    def _buffer(self) -> bytearray:
        if self._buf is None:
            raise AssertionError(f"{self.path.name} used before load")
        return self._buf

    def entry(self, i: int) -> tuple[int, int]:
        return self.ENTRY.unpack_from(self._buffer(), i * self.ENTRY.size)

    def last(self) -> tuple[int, int] | None:
        buf = self._buffer()
        size = self.ENTRY.size
        return self.ENTRY.unpack_from(buf, len(buf) - size) if len(buf) >= size else None

    def _count(self, key: int, field: int, *, strict: bool) -> int:
        """How many entries have ``field`` <= ``key`` (< if ``strict``), by binary search."""
        buf = self._buffer()
        unpack = self.ENTRY.unpack_from
        size = self.ENTRY.size
        lo, hi = 0, len(buf) // size
        while lo < hi:
            mid = (lo + hi) // 2
            value = unpack(buf, mid * size)[field]
            if value < key or (value == key and not strict):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _floor(self, key: int, field: int, *, strict: bool) -> tuple[int, int] | None:
        """The last entry whose ``field`` is <= ``key`` (< if ``strict``)."""
        count = self._count(key, field, strict=strict)
        return self.entry(count - 1) if count else None

    def count_through_offset(self, relative_offset: int) -> int:
        """How many entries point at relative offsets <= ``relative_offset``."""
        return self._count(relative_offset, self.OFFSET_FIELD, strict=False)

    def sanity_check(self) -> None:
        """Full O(n) check: every field strictly increasing."""
        previous: tuple[int, int] | None = None
        for i in range(len(self)):
            current = self.entry(i)
            if previous is not None and not all(
                a < b for a, b in zip(previous, current, strict=True)
            ):
                raise CorruptIndexError(f"{self.path.name}: entry {i} {current} after {previous}")
            previous = current

    # -- mutation ----------------------------------------------------------------------------

    def extend(self, entries: list[tuple[int, int]]) -> None:
        """Append entries in memory (they must continue the strictly increasing sequence)."""
        if not entries:
            return
        last = self.last()
        first = entries[0]
        field = self.OFFSET_FIELD  # one field checked here (hot path); sanity_check does all
        if last is not None and first[field] <= last[field]:
            raise AssertionError(f"{self.path.name}: entry {first} does not follow {last}")
        buf = self._buffer()
        pack = self.ENTRY.pack
        for entry in entries:
            buf += pack(*entry)

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` entries, in memory and on disk."""
        buf = self._buffer()
        keep = count * self.ENTRY.size
        if keep >= len(buf):
            return
        del buf[keep:]
        if keep < self._written:
            try:
                os.truncate(self.path, keep)
            except FileNotFoundError:
                keep = 0  # rewritten whole by write_pending
            self._written = keep
            self._unsynced = True

    def write_pending(self) -> bool:
        """Write the entries not yet in the file; True if anything was written."""
        if self._buf is None or self._written == len(self._buf):
            return False
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.lseek(fd, self._written, os.SEEK_SET)
            write_all(fd, memoryview(self._buf)[self._written :])
            os.ftruncate(fd, len(self._buf))
        finally:
            os.close(fd)
        self._written = len(self._buf)
        self._unsynced = True
        return True

    @property
    def dirty(self) -> bool:
        """Entries are pending, or the file changed since its last fdatasync."""
        return self._unsynced or (self._buf is not None and self._written != len(self._buf))

    def take_unsynced(self) -> bool:
        """True (once) if the file changed since the last call: it needs an fdatasync."""
        unsynced, self._unsynced = self._unsynced, False
        return unsynced


class OffsetIndex(_SparseIndex):
    """``(relative offset u32, position u32)``: the batch whose base offset is
    ``segment base + relative offset`` starts at ``position`` in the ``.log``.
    """

    ENTRY = struct.Struct(">II")
    OFFSET_FIELD = 0
    MIN_LAST = (1, 1)  # the first batch of a segment is never indexed
    __slots__ = ()

    def lookup(self, relative_offset: int) -> tuple[int, int] | None:
        """The last entry at or below ``relative_offset``."""
        return self._floor(relative_offset, 0, strict=False)

    def lookup_position(self, position: int) -> tuple[int, int] | None:
        """The last entry whose batch starts at or before ``position``."""
        return self._floor(position, 1, strict=False)


class TimeIndex(_SparseIndex):
    """``(timestamp i64, relative offset u32)``: every batch up to and including the one at
    ``relative offset`` has ``max_timestamp <= timestamp`` (the segment's running maximum).
    """

    ENTRY = struct.Struct(">qI")
    OFFSET_FIELD = 1
    MIN_LAST = (-(2**63), 0)
    __slots__ = ()

    def last_below(self, timestamp: int) -> tuple[int, int] | None:
        """The last entry whose timestamp is < ``timestamp``: the answer lies after it."""
        return self._floor(timestamp, 0, strict=True)
