"""``Segment``: one ``.log`` of whole record batches plus its sparse ``.index`` and ``.timeindex``.

Index rule (the same when appending, recovering and rebuilding, so a rebuilt index equals the
original byte for byte): a batch gets an offset-index entry ``(base offset - segment base,
position)`` when more than ``index_interval_bytes`` lie between the start of the last indexed
batch (or the segment start) and its own start; the first batch is therefore never indexed.
At the same moment, if the segment's running maximum timestamp grew since the last time-index
entry, a time-index entry ``(running max, same relative offset)`` is added. Sealing a segment
adds one final time entry for its last batch, so a sealed segment's last time entry is its
largest timestamp.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sluice.broker.storage.files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SEGMENT_SUFFIXES,
    TIMEINDEX_SUFFIX,
    CorruptLogError,
    SegmentFile,
    open_append,
    segment_path,
)
from sluice.broker.storage.index import U32_MAX, CorruptIndexError, OffsetIndex, TimeIndex
from sluice.protocol.batch import (
    BASE_OFFSET,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    InvalidBatchError,
    check_header,
    parse_header,
    peek_size,
    validate_batch,
)
from sluice.protocol.errors import StorageError
from sluice.protocol.slices import FileSlice

_SCAN_WINDOW = 16 * 1024  # header walks read this much at a time (~ a few index intervals)
# Where recent reads ended, per segment: a consumer's next fetch starts there (see Segment.read).
READ_ENDS_KEPT = 64
_RECOVERY_CHUNK = 8 * 1024 * 1024  # recovery reads (and CRCs) this much at a time
I64_MAX = 2**63 - 1

# (position in the chunk, base offset, last offset, max timestamp) of each appended batch
BatchSpan = tuple[int, int, int, int]


def iter_headers(fd: int, start: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
    """Headers of the trusted batches in ``[start, end)``, reading a window at a time.

    Only lengths are checked (a header or length running past ``end`` raises): this walks data
    that was validated when it was written or recovered.
    """
    window = b""
    window_start = pos = start
    make, unpack = BatchHeader._make, HEADER.unpack_from
    while pos < end:
        rel = pos - window_start
        if rel + HEADER_SIZE > len(window):
            window = os.pread(fd, min(_SCAN_WINDOW, end - pos), pos)
            window_start, rel = pos, 0
            if len(window) < HEADER_SIZE:
                raise StorageError(f"truncated batch header at position {pos} (segment end {end})")
        header = make(unpack(window, rel))
        size = header.batch_length + LOG_OVERHEAD
        if size < HEADER_SIZE or pos + size > end:
            raise StorageError(f"batch at position {pos} runs past the end of its segment ({end})")
        yield pos, header
        pos += size


def _valid_batches(fd: int, pos: int, file_size: int, expected: int) -> Iterator[tuple[int, BatchHeader]]:
    """Batches from ``pos`` that are whole, pass ``validate_batch`` and carry offset ``expected``
    (then the next dense offset); stops silently at the first one that does not."""
    buf = b""
    buf_start = pos
    while file_size - pos >= LOG_OVERHEAD:
        rel = pos - buf_start
        size = peek_size(buf, rel) if rel >= 0 else None
        if size is None:
            buf = os.pread(fd, min(_RECOVERY_CHUNK, file_size - pos), pos)
            buf_start, rel = pos, 0
            size = peek_size(buf, 0)
        if size is None or size < HEADER_SIZE or pos + size > file_size:
            return
        if rel + size > len(buf):
            buf = os.pread(fd, min(max(_RECOVERY_CHUNK, size), file_size - pos), pos)
            buf_start, rel = pos, 0
            if len(buf) < size:
                return
        try:
            header = validate_batch(memoryview(buf)[rel : rel + size])
        except InvalidBatchError:
            return
        if header.base_offset != expected:
            return
        yield pos, header
        pos += size
        expected = header.next_offset


def plan_index(
    batches: Iterable[tuple[int, int, int]],
    *,
    segment_base: int,
    interval: int,
    last_offset_entry: tuple[int, int] | None,
    last_time_entry: tuple[int, int] | None,
    running_max: int | None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int | None, int | None]:
    """Apply the module's index rule to ``(position, base offset, max timestamp)`` batches that
    follow the given last entries. Returns ``(offset entries, time entries, new running max,
    base offset of the last batch or None)``."""
    last_pos = last_offset_entry[1] if last_offset_entry else 0
    last_ts = last_time_entry[0] if last_time_entry else None
    offsets: list[tuple[int, int]] = []
    times: list[tuple[int, int]] = []
    base_offset = None
    for position, base_offset, max_ts in batches:
        if running_max is None or max_ts > running_max:
            running_max = max_ts
        if position - last_pos > interval:
            rel = base_offset - segment_base
            offsets.append((rel, position))
            last_pos = position
            if last_ts is None or running_max > last_ts:
                times.append((running_max, rel))
                last_ts = running_max
    return offsets, times, running_max, base_offset


class Segment:
    """Offsets ``[base_offset, end_offset)`` stored as whole batches in ``base_offset``'s files.

    Invariants (``sanity_check`` verifies them all against the files):

    - the ``.log`` is exactly ``size`` bytes of batches back to back, with dense offsets from
      ``base_offset`` to ``end_offset``; relative offsets fit in u32;
    - every offset-index entry names the start of a batch and that batch's base offset; every
      time-index entry names a batch and the running maximum timestamp up to it; both are
      strictly increasing in every field;
    - a sealed segment never changes again (the log appends only to its last segment);
    - every ``_read_ends`` entry maps an offset to the position of the batch that starts with
      it, or ``end_offset`` to ``size`` (where the next batch will start).

    Resources are lazy: the ``.log`` descriptor and the index entries are loaded on first use and
    dropped by ``unload`` (the owning log caps how many sealed segments stay loaded). Not
    thread-safe: the owning log serialises every call.
    """

    __slots__ = (
        "directory",
        "base_offset",
        "index_interval",
        "size",
        "end_offset",
        "created_ms",
        "_last_append_ms",
        "sealed",
        "offset_index",
        "time_index",
        "_file",
        "_max_timestamp",
        "_last_batch_offset",
        "_read_ends",
    )

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        size: int,
        end_offset: int,
        index_interval: int,
        sealed: bool,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval = index_interval
        self.size = size
        self.end_offset = end_offset
        self.created_ms: int | None = None  # wall clock of the first append (segment_ms rolls)
        self._last_append_ms: int | None = None  # wall clock of the last append (retention)
        self.sealed = sealed
        self.offset_index = OffsetIndex(segment_path(directory, base_offset, INDEX_SUFFIX))
        self.time_index = TimeIndex(segment_path(directory, base_offset, TIMEINDEX_SUFFIX))
        self._file: SegmentFile | None = None
        self._max_timestamp: int | None = None  # running max (active) / largest (sealed)
        self._last_batch_offset: int | None = None  # base offset of the last batch
        # offset -> position where a recent read ended, so the next read from there (a
        # consumer's next fetch) needs no index lookup; cleared whenever the file is cut
        self._read_ends: dict[int, int] = {}

    @classmethod
    def create(cls, directory: Path, base_offset: int, index_interval: int) -> Segment:
        """A new empty active segment; its files must not exist yet."""
        segment = cls(
            directory,
            base_offset,
            size=0,
            end_offset=base_offset,
            index_interval=index_interval,
            sealed=False,
        )
        path = segment.log_path
        segment._file = SegmentFile(open_append(path, create=True), path)
        segment.offset_index.reset()
        segment.time_index.reset()
        return segment

    def __repr__(self) -> str:
        state = "sealed" if self.sealed else "active"
        return f"Segment({self.base_offset}..{self.end_offset}, {self.size} B, {state})"

    @property
    def log_path(self) -> Path:
        return segment_path(self.directory, self.base_offset, LOG_SUFFIX)

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def file(self) -> SegmentFile:
        if self._file is None:
            self._file = SegmentFile(open_append(self.log_path), self.log_path)
        return self._file

    # -- indexes -----------------------------------------------------------------------------

    def _ensure_indexes(self) -> None:
        if self.offset_index.loaded and self.time_index.loaded:
            return
        max_rel = self.end_offset - self.base_offset - 1
        try:
            self.offset_index.load(max_key=max_rel, max_value=self.size - 1)
            self.time_index.load(max_key=I64_MAX, max_value=max_rel)
        except CorruptIndexError:
            self.rebuild_indexes()

    def rebuild_indexes(self) -> None:
        """Recompute both indexes from the ``.log``'s headers (the data itself is trusted)."""
        self._max_timestamp = None
        self.offset_index.reset()
        self.time_index.reset()
        self._index(
            (pos, h.base_offset, h.max_timestamp)
            for pos, h in iter_headers(self.file().fileno(), 0, self.size)
        )
        if self.sealed:
            self._add_seal_entry()
        self.write_indexes()

    def _index(self, batches: Iterable[tuple[int, int, int]]) -> None:
        """Index batches appended after the current entries (see the module's rule)."""
        offsets, times, self._max_timestamp, last_base = plan_index(
            batches,
            segment_base=self.base_offset,
            interval=self.index_interval,
            last_offset_entry=self.offset_index.last(),
            last_time_entry=self.time_index.last(),
            running_max=self._max_timestamp,
        )
        self.offset_index.extend(offsets)
        self.time_index.extend(times)
        if last_base is not None:
            self._last_batch_offset = last_base

    def write_indexes(self) -> None:
        """Write pending index entries to their files (no fsync)."""
        self.offset_index.write_pending()
        self.time_index.write_pending()

    def _add_seal_entry(self) -> None:
        if self._max_timestamp is None or self._last_batch_offset is None:
            return
        last = self.time_index.last()
        if last is None or self._max_timestamp > last[0]:
            self.time_index.extend([(self._max_timestamp, self._last_batch_offset - self.base_offset)])

    def seal(self) -> None:
        """The log rolled past this segment: record its largest timestamp, write the indexes."""
        self.sealed = True
        self._add_seal_entry()
        self.write_indexes()

    # -- opening -----------------------------------------------------------------------------

    def open_active(self, floor: int | None = None) -> None:
        """Clean open of the last segment: trust the files, find the end from the last index
        entry with a header walk. A walk that does not land on the file's end falls back to
        ``recover`` (the files were not as clean as claimed), protecting offsets below
        ``floor``."""
        try:
            self.offset_index.load(max_key=U32_MAX, max_value=self.size - 1)
            self.time_index.load(max_key=I64_MAX, max_value=U32_MAX)
        except CorruptIndexError:
            self.recover(0, self.base_offset, floor)
            return
        entry = self.offset_index.last()
        time_entry = self.time_index.last()
        self._max_timestamp = time_entry[0] if time_entry else None
        end = self.base_offset
        try:
            for pos, header in iter_headers(self.file().fileno(), entry[1] if entry else 0, self.size):
                if entry is not None and pos == entry[1] and header.base_offset != self.base_offset + entry[0]:
                    raise StorageError("index entry does not match its batch")
                end = header.next_offset
                self._last_batch_offset = header.base_offset
                if self._max_timestamp is None or header.max_timestamp > self._max_timestamp:
                    self._max_timestamp = header.max_timestamp
        except StorageError:
            self.recover(0, self.base_offset, floor)
            return
        self.end_offset = end

    def recovery_start(self, recovery_point: int) -> tuple[int, int]:
        """``(position, offset)`` where re-validation can start: the last offset-index entry below
        ``recovery_point`` whose batch header checks out (data and indexes below the recovery
        point were fdatasync'd together), else the segment start."""
        start = (0, self.base_offset)
        try:
            self.offset_index.load(max_key=U32_MAX, max_value=max(self.size - 1, 0))
            self.time_index.load(max_key=I64_MAX, max_value=U32_MAX)
        except CorruptIndexError:
            return start
        entry = self.offset_index.lookup(recovery_point - 1 - self.base_offset)
        if entry is None:
            return start
        rel, position = entry
        try:
            header = parse_header(os.pread(self.file().fileno(), HEADER_SIZE, position))
            check_header(header)
        except InvalidBatchError:
            return start
        if header.base_offset != self.base_offset + rel:
            return start
        return position, header.base_offset

    def recover(self, start: int, expected_offset: int, floor: int | None = None) -> bool:
        """Re-validate batches (length, header, CRC, dense offsets) from ``start`` (a batch whose
        index entries are kept), rebuild the index entries after it, and cut the file at the
        first invalid byte. Returns True if bytes were cut.

        ``floor``: offsets below it were flushed (and maybe acknowledged). If the first invalid
        byte lies below it, raise ``CorruptLogError`` naming the file and position instead of
        cutting (the log files are left as they were; only derived index files may change)."""
        rel = expected_offset - self.base_offset
        if start:
            self.offset_index.truncate(self.offset_index.count_through_offset(rel))
            self.time_index.truncate(self.time_index.count_through_offset(rel))
            last_time = self.time_index.last()
            self._max_timestamp = last_time[0] if last_time else None
        else:
            self.offset_index.reset()
            self.time_index.reset()
            self._max_timestamp = None
        fd = self.file().fileno()
        file_size = os.fstat(fd).st_size
        reached = [start, expected_offset]  # end of the last valid batch, next offset

        def valid() -> Iterator[tuple[int, int, int]]:
            for pos, header in _valid_batches(fd, start, file_size, expected_offset):
                if header.last_offset - self.base_offset > U32_MAX:
                    return
                reached[:] = pos + header.size, header.next_offset
                yield pos, header.base_offset, header.max_timestamp

        self._last_batch_offset = None
        self._read_ends.clear()
        self._index(valid())
        valid_end, next_offset = reached
        if start and valid_end == start:
            return self.recover(0, self.base_offset, floor)  # the trusted entry's batch is bad
        if valid_end < file_size and floor is not None and next_offset < floor:
            raise CorruptLogError(
                f"{self.log_path}: invalid data at byte {valid_end} of {file_size} (expected the "
                f"batch with offset {next_offset}); offsets below {floor} were flushed, so "
                "truncating there would delete acknowledged records"
            )
        self.size, self.end_offset = valid_end, next_offset
        self.sealed = False
        if valid_end < file_size:
            os.ftruncate(fd, valid_end)
        self.write_indexes()
        return valid_end < file_size

    # -- appending ---------------------------------------------------------------------------

    def publish(self, chunk: memoryview, batches: list[BatchSpan], now_ms: int) -> None:
        """Make ``chunk`` part of the segment: whole, stamped batches the log has just written
        at the end of the file (readers only ever look up to ``size``). Indexes them."""
        start = self.size
        self._index((start + pos, base, max_ts) for pos, base, _, max_ts in batches)
        self.size = start + len(chunk)
        self.end_offset = batches[-1][2] + 1
        if self.created_ms is None:
            self.created_ms = now_ms
        self._last_append_ms = now_ms

    def snapshot(self) -> tuple:
        """State to ``restore`` if an append fails part way."""
        return (
            self.size,
            self.end_offset,
            self.created_ms,
            self._last_append_ms,
            self._max_timestamp,
            self._last_batch_offset,
            len(self.offset_index),
            len(self.time_index),
        )

    def restore(self, snapshot: tuple) -> None:
        """Undo appends (and a seal) since ``snapshot``: cut the file and indexes back."""
        (
            self.size,
            self.end_offset,
            self.created_ms,
            self._last_append_ms,
            self._max_timestamp,
            self._last_batch_offset,
            offset_entries,
            time_entries,
        ) = snapshot
        os.ftruncate(self.file().fileno(), self.size)
        self._read_ends.clear()
        self.offset_index.truncate(offset_entries)
        self.time_index.truncate(time_entries)
        self.sealed = False

    # -- reading -----------------------------------------------------------------------------

    def _entry(self, find: Callable[[int], tuple[int, int] | None], key: int) -> tuple[int, int] | None:
        """An offset-index lookup whose entry is checked against its batch header; a mismatch
        means a corrupt index: rebuild it from the log and look up again."""
        self._ensure_indexes()
        entry = find(key)
        if entry is not None:
            rel, position = entry
            stored = BASE_OFFSET.unpack(os.pread(self.file().fileno(), BASE_OFFSET.size, position))[0]
            if stored != self.base_offset + rel:
                self.rebuild_indexes()
                entry = find(key)
        return entry

    def _walk(
        self, entry: tuple[int, int] | None, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, BatchHeader]]:
        """Headers from an index entry's batch (or ``start``) to ``end`` (the segment's end)."""
        return iter_headers(
            self.file().fileno(), entry[1] if entry else start, self.size if end is None else end
        )

    def _locate(self, offset: int) -> tuple[int, BatchHeader]:
        """Position and header of the batch containing ``offset`` (index lookup, header walk)."""
        for pos, header in self._walk(self._entry(self.offset_index.lookup, offset - self.base_offset)):
            if header.next_offset > offset:
                return pos, header
        raise StorageError(f"offset {offset} is not in {self!r}")

    def _batch_start(self, offset: int) -> tuple[int, int]:
        """``(position, base offset)`` of the batch containing ``offset``."""
        position = self._read_ends.get(offset)
        if position is not None:
            return position, offset
        position, header = self._locate(offset)
        return position, header.base_offset

    def read(
        self, offset: int, max_bytes: int, max_offset: int | None = None
    ) -> tuple[FileSlice | None, int]:
        """Whole batches from the one containing ``offset``: as many as fit in ``max_bytes``,
        but always at least one -- of those before the batch containing ``max_offset`` (None:
        no bound). Returns the slice (None if no batch is below the bound), which holds a
        reference the caller must release, and the offset that follows it.

        Where the read ends is remembered (``READ_ENDS_KEPT`` places per segment), so a read
        from there (a consumer's next fetch), like one from the segment's first offset, starts
        without an index lookup or header walk."""
        size, end_offset = self.size, self.end_offset
        if max_offset is not None and max_offset < end_offset:
            size, end_offset = self._batch_start(max_offset)
        start = 0 if offset == self.base_offset else self._read_ends.get(offset)
        if start is None:
            start, header = self._locate(offset)
            end, following = start + header.size, header.next_offset
        else:
            end, following = start, offset  # nothing taken yet
        if start >= size:
            return None, offset
        limit = start + max_bytes
        if limit >= size:
            end, following = size, end_offset
        elif end < limit:
            # Every batch before an indexed batch starting within the budget fits: jump there.
            entry = self._entry(self.offset_index.lookup_position, limit)
            if entry is not None and entry[1] > end:
                end, following = entry[1], self.base_offset + entry[0]
            for pos, batch in self._walk(None, end, size):
                if pos + batch.size > limit and end > start:
                    break
                end, following = pos + batch.size, batch.next_offset
                if end >= limit:
                    break
        self._remember_read_end(following, end)
        return FileSlice(self.file().retain(), start, end - start), following

    def _remember_read_end(self, offset: int, position: int) -> None:
        if offset not in self._read_ends and len(self._read_ends) >= READ_ENDS_KEPT:
            self._read_ends.clear()  # readers that moved on: start over rather than track age
        self._read_ends[offset] = position

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(base offset, max timestamp)`` of the first batch with max timestamp >= ``timestamp``."""
        self._ensure_indexes()
        below = self.time_index.last_below(timestamp)  # every batch up to it is earlier
        entry = self._entry(self.offset_index.lookup, below[1]) if below else None
        for _, header in self._walk(entry):
            if header.max_timestamp >= timestamp:
                return header.base_offset, header.max_timestamp
        return None

    @property
    def last_append_ms(self) -> int | None:
        """Wall clock of the last append: remembered since this process appended to the
        segment, else the ``.log`` file's modification time (None if it is gone)."""
        if self._last_append_ms is None and self.size:
            try:
                self._last_append_ms = os.stat(self.log_path).st_mtime_ns // 1_000_000
            except FileNotFoundError:
                return None
        return self._last_append_ms

    @property
    def largest_timestamp(self) -> int | None:
        """The largest batch timestamp, None if empty. An unloaded sealed segment reads its
        ``.timeindex`` (whose last entry is that timestamp) and keeps only the number."""
        if self._max_timestamp is None and self.sealed and self.size:
            was_open, was_loaded = self.is_open, self.time_index.loaded
            try:
                max_rel = self.end_offset - self.base_offset - 1
                self.time_index.load(max_key=I64_MAX, max_value=max_rel)
                last = self.time_index.last()
                if last is None:
                    raise CorruptIndexError(f"{self.time_index.path.name} is empty")
                self._max_timestamp = last[0]
            except CorruptIndexError:
                self.rebuild_indexes()
            if not was_loaded:
                self.time_index.unload()
            if not was_open and self.is_open:
                self.unload()
        return self._max_timestamp

    def headers_from(self, offset: int) -> tuple[SegmentFile, int, int]:
        """``(retained file, start, end)`` for walking headers from the batch containing
        ``offset`` (or the segment start) outside the log's lock; release the file after."""
        if offset >= self.end_offset:
            start = self.size
        else:
            start = self._locate(offset)[0] if offset > self.base_offset else 0
        return self.file().retain(), start, self.size

    # -- durability and lifetime -------------------------------------------------------------

    @property
    def index_dirty(self) -> bool:
        """Index entries not yet written, or written but not yet fdatasync'd."""
        return self.offset_index.dirty or self.time_index.dirty

    def prepare_sync(self) -> tuple[SegmentFile, list[Path]]:
        """Under the log's lock: write pending index entries; return the retained ``.log`` and
        the index files that need an fdatasync (done by the caller without the lock)."""
        self.write_indexes()
        paths = [idx.path for idx in (self.offset_index, self.time_index) if idx.take_unsynced()]
        return self.file().retain(), paths

    def release_file(self) -> None:
        """Close the descriptor without writing anything (a refused open)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def close_file(self) -> None:
        """Close the descriptor (readers keep theirs), keeping the index entries loaded; it
        reopens on demand."""
        self.write_indexes()
        if self._file is not None:
            self._file.close()
            self._file = None

    def unload(self) -> None:
        """Close the descriptor (readers keep theirs) and drop index entries; reloaded on demand."""
        self.close_file()
        self.offset_index.unload()
        self.time_index.unload()

    def delete(self) -> None:
        """Unlink the files now; the descriptor closes when the last reader releases it."""
        for suffix in SEGMENT_SUFFIXES:
            segment_path(self.directory, self.base_offset, suffix).unlink(missing_ok=True)
        if self._file is not None:
            self._file.close()
            self._file = None
        self.offset_index.unload()
        self.time_index.unload()

    def sanity_check(self) -> None:
        """Verify every invariant in the class docstring against the files; raise on the first
        violation. Costs one header read per batch: for tests and tooling, not the hot path."""
        fd = self.file().fileno()
        if os.fstat(fd).st_size != self.size:
            raise StorageError(f"{self!r}: file is {os.fstat(fd).st_size} bytes")
        self._ensure_indexes()
        self.offset_index.sanity_check()
        self.time_index.sanity_check()
        starts: dict[int, int] = {}  # relative offset -> position
        running: dict[int, int] = {}  # relative offset -> running max timestamp
        expected, running_max = self.base_offset, None
        for pos, header in iter_headers(fd, 0, self.size):
            check_header(header)
            if header.base_offset != expected:
                raise StorageError(f"{self!r}: batch at {pos} has offset {header.base_offset}, expected {expected}")
            running_max = header.max_timestamp if running_max is None else max(running_max, header.max_timestamp)
            starts[header.base_offset - self.base_offset] = pos
            running[header.base_offset - self.base_offset] = running_max
            expected = header.next_offset
        if expected != self.end_offset or expected - 1 - self.base_offset > U32_MAX:
            raise StorageError(f"{self!r}: batches end at offset {expected}")
        for i in range(len(self.offset_index)):
            rel, pos = self.offset_index.entry(i)
            if starts.get(rel) != pos:
                raise StorageError(f"{self!r}: offset index entry {(rel, pos)} is not a batch start")
        for i in range(len(self.time_index)):
            ts, rel = self.time_index.entry(i)
            if running.get(rel) != ts:
                raise StorageError(f"{self!r}: time index entry {(ts, rel)} is not the running max")
        starts[self.end_offset - self.base_offset] = self.size
        for offset, pos in self._read_ends.items():
            if starts.get(offset - self.base_offset) != pos:
                raise StorageError(f"{self!r}: remembered read end {(offset, pos)} is not a batch start")
