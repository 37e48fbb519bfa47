"""What every partition log does the same way, whatever holds its bytes: offset assignment,
rolling, range checks, timestamp search and retention. ``FileLog`` and ``MemoryLog`` supply the
segments (same duck-typed interface: ``base_offset``, ``end_offset``, ``size``, ``created_ms``,
``largest_timestamp``, ``publish``, ``read``, ``find_timestamp``) and the hooks an append
goes through (``_create_segment``, ``_hold``, ``_write_piece``, ``_seal``, ``_abandon``).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.broker.storage.batches import ValidatedBatches
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.index import U32_MAX
from sluice.broker.storage.segment import BatchSpan
from sluice.protocol.batch import stamp
from sluice.protocol.errors import OffsetOutOfRangeError, StorageError
from sluice.protocol.slices import FileSlice


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offsets assigned to an append: ``base_offset``..``last_offset`` inclusive."""

    base_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(slots=True)
class Piece:
    """Batches of one append bound for one segment: ``chunk`` holds them back to back."""

    segment: Any
    file: Any  # what ``BaseLog._hold`` returned for the segment
    chunk: memoryview
    batches: list[BatchSpan]
    retained: bool = False  # ``file`` retained by ``keep_files_open``


class PendingAppend:
    """An append between ``BaseLog._begin`` and ``_publish``: offsets assigned and stamped,
    bytes maybe written, nothing visible to readers yet."""

    __slots__ = ("now", "undo", "pieces", "new_segments", "max_timestamp", "result")

    def __init__(self, now: int, undo: Any) -> None:
        self.now = now
        self.undo = undo  # the active segment's state before the append (``_undo_point``)
        self.pieces: list[Piece] = []
        self.new_segments: list[Any] = []  # created by rolls; added to the log at publish
        self.max_timestamp = -(2**63)
        self.result: AppendResult | None = None

    def add(self, segment: Any, file: Any, chunk: memoryview, batches: list[BatchSpan]) -> None:
        self.pieces.append(Piece(segment, file, chunk, batches))

    def keep_files_open(self) -> None:
        """Under the log's lock, before the log closes its segments' files (closed or deleted
        meanwhile): keep the ones this append is writing to open until it is over."""
        for piece in self.pieces:
            if piece.file is not None and not piece.retained:
                piece.file.retain()
                piece.retained = True

    def release_files(self) -> None:
        for piece in self.pieces:
            if piece.retained:
                piece.retained = False
                piece.file.release()


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches (file slices to send, or bytes), and the offset right after the last of
    them (the offset read from, if there were none)."""

    slices: list[FileSlice | bytes]
    next_offset: int


class BaseLog:
    """A partition: ordered segments, the last one active (the only one appended to).

    Invariants: segments are contiguous (each one's ``end_offset`` is the next one's
    ``base_offset``); offsets are dense and never reused; ``log_start_offset`` is the first
    segment's base. Every public method holds ``_lock``, so ``flush`` may run in a worker thread
    while another thread appends and reads.
    """

    def __init__(self, config: TopicConfig, now_ms: Callable[[], int], segments: list[Any]) -> None:
        self._config = config
        self._now_ms = now_ms
        self._segments = segments
        self._bases = [segment.base_offset for segment in segments]
        self._lock = threading.Lock()
        self._closed = False
        self._pending: PendingAppend | None = None  # the append in progress (one at a time)

    # -- state -------------------------------------------------------------------------------

    @property
    def config(self) -> TopicConfig:
        return self._config

    def reconfigure(self, config: TopicConfig) -> None:
        with self._lock:
            self._config = config

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].end_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the log is closed")

    def _segment_for(self, offset: int) -> Any:
        return self._segments[bisect_right(self._bases, offset) - 1]

    def _use(self, segment: Any) -> Any:
        """Hook: make ``segment`` ready for reading (FileLog loads it lazily)."""
        return segment

    def _settle(self, segment: Any) -> None:
        """Hook: an operation on ``segment`` (got from ``_use``) is over."""

    # -- appending ---------------------------------------------------------------------------

    def append(self, batches: ValidatedBatches) -> AppendResult:
        """Assign offsets to whole batches, validated once by the caller (stamped in place),
        and store them. Nothing is split or parsed again: the positions and headers travel in
        ``batches``; records are never decoded.

        Rolls to a new segment before a batch that would overflow ``segment_bytes``, arrives
        more than ``segment_ms`` after the segment's first append, or whose offsets would not fit
        the u32 relative offsets.

        Three steps: offsets are assigned and new segments created under the lock (``_begin``);
        the bytes are written *without* the lock (``_write_piece``), beyond what any reader,
        flush or retention looks at; then they are made visible under the lock (``_publish``).
        So an append may run in a worker thread while the event loop reads this log, and the
        loop never waits on the lock for the length of a large write. One append at a time:
        another one started meanwhile raises ``StorageError`` (the caller serialises them).
        A failure leaves the log as it was before and raises ``StorageError``.
        """
        try:
            pending = self._begin(batches)
            try:
                try:
                    for piece in pending.pieces:
                        self._write_piece(piece)
                except BaseException:
                    self._end(pending, publish=False)
                    raise
                self._end(pending, publish=True)
            finally:
                pending.release_files()
        except OSError as exc:
            raise StorageError(
                f"append to {self.label} failed and was undone: {exc.strerror or exc}"
            ) from exc
        return pending.result

    def _end(self, pending: PendingAppend, *, publish: bool) -> None:
        """Under the lock, in one go: make the append visible (``_publish``), or undo it
        (``_abandon``) if ``publish`` is False or publishing fails."""
        with self._lock:
            self._pending = None
            if publish:
                try:
                    self._check_open()
                    self._publish(pending)
                    return
                except BaseException:
                    self._abandon(pending)
                    raise
            self._abandon(pending)

    def _begin(self, batches: ValidatedBatches) -> PendingAppend:
        """Under the lock: stamp offsets, split the batches into one piece per segment they go
        to, creating (not yet adding) the segments this append rolls to."""
        view = batches.buffer
        with self._lock:
            self._check_open()
            if self._pending is not None:
                raise StorageError(f"another append to {self.label} is in progress")
            now = self._now_ms()
            first = offset = self.log_end_offset
            active = self._segments[-1]
            pending = PendingAppend(now, self._undo_point(active))
            self._pending = pending
            try:
                chunk_start = 0
                spans: list[BatchSpan] = []
                for pos, header in zip(batches.positions, batches.headers, strict=True):
                    size = header.size
                    last = offset + header.last_offset_delta
                    if self._should_roll(active, pos - chunk_start, size, last, now):
                        if spans:
                            pending.add(active, self._hold(active), view[chunk_start:pos], spans)
                        active = self._create_segment(offset)
                        pending.new_segments.append(active)
                        chunk_start, spans = pos, []
                    stamp(view[pos : pos + size], offset)
                    spans.append((pos - chunk_start, offset, last, header.max_timestamp))
                    pending.max_timestamp = max(pending.max_timestamp, header.max_timestamp)
                    offset = last + 1
                pending.add(active, self._hold(active), view[chunk_start:], spans)
            except BaseException:
                self._abandon(pending)
                self._pending = None
                raise
            pending.result = AppendResult(first, offset - 1, pending.max_timestamp)
            return pending

    def _publish(self, pending: PendingAppend) -> None:
        """Under the lock: make the written pieces part of the log, sealing what it rolled past."""
        active = self._segments[-1]
        for piece in pending.pieces:
            if piece.segment is not active:
                self._add_segment(piece.segment)
                self._seal(active)
                active = piece.segment
            piece.segment.publish(piece.chunk, piece.batches, pending.now)

    def _should_roll(self, segment: Any, pending: int, size: int, last_offset: int, now: int) -> bool:
        used = segment.size + pending
        if not used:
            return False
        config = self._config
        return (
            used + size > config.segment_bytes
            or (segment.created_ms is not None and now - segment.created_ms > config.segment_ms)
            or last_offset - segment.base_offset > U32_MAX
        )

    def _add_segment(self, segment: Any) -> Any:
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        return segment

    def _drop_added(self, segments: list[Any]) -> None:
        """Remove those of ``segments`` (an abandoned append's new ones) that were added."""
        while len(self._segments) > 1 and any(self._segments[-1] is s for s in segments):
            del self._segments[-1], self._bases[-1]

    # -- backend hooks for appends -------------------------------------------------------------

    @property
    def label(self) -> str:
        """How errors name this log."""
        return "the log"

    def _create_segment(self, base_offset: int) -> Any:
        """A new, empty segment starting at ``base_offset``, not yet part of the log."""
        raise NotImplementedError

    def _seal(self, segment: Any) -> None:
        """``segment`` is no longer the active one (the log rolled past it)."""

    def _undo_point(self, active: Any) -> Any:
        """What ``_abandon`` needs to put the active segment back as it is now."""

    def _hold(self, segment: Any) -> Any:
        """What the unlocked write of a piece for ``segment`` writes to (FileLog: its
        ``SegmentFile``), or None."""

    def _write_piece(self, piece: Piece) -> None:
        """Write a piece's bytes past the end of its segment (no lock held)."""

    def _abandon(self, pending: PendingAppend) -> None:
        """Under the lock: undo whatever part of ``pending`` was written or published."""
        self._drop_added(pending.new_segments)

    # -- reading -----------------------------------------------------------------------------

    def _check_range(self, offset: int) -> None:
        start, end = self.log_start_offset, self.log_end_offset
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range: the log holds [{start}, {end}]"
            )

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one containing ``offset``, from a single segment, up to
        ``max_bytes`` but at least one batch -- of those that end at or below ``max_offset``
        (exclusive; None: the log end). Empty only when nothing below the bound follows
        ``offset``. ``OffsetOutOfRangeError`` outside ``[log start, log end]``."""
        with self._lock:
            self._check_open()
            self._check_range(offset)
            end = self.log_end_offset
            bound = end if max_offset is None else min(max_offset, end)
            if offset >= bound:
                return ReadResult([], offset)
            segment = self._use(self._segment_for(offset))
            try:
                piece, next_offset = segment.read(
                    offset, max_bytes, bound if bound < segment.end_offset else None
                )
            finally:
                self._settle(segment)
            return ReadResult([piece] if piece is not None else [], next_offset)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(base offset, max timestamp)`` of the first batch whose max timestamp is >=
        ``timestamp`` (batch granularity: records are not decoded); None if none is that late."""
        with self._lock:
            self._check_open()
            for segment in self._segments:
                largest = segment.largest_timestamp
                if largest is not None and largest >= timestamp:
                    try:
                        found = self._use(segment).find_timestamp(timestamp)
                    finally:
                        self._settle(segment)
                    if found is not None:
                        return found
            return None

    # -- retention ---------------------------------------------------------------------------

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete whole segments from the oldest while one of them breaks the time rule or the
        size rule (``size - its size >= retention_bytes``); never the active segment. Returns
        how many were deleted.

        Time rule: ``now - max(largest timestamp, last append) > retention_ms``. Kafka uses the
        largest timestamp alone, so records stamped long ago (a replay, a clock at 1970) are
        deleted right after they are written; here a segment is also kept at least
        ``retention_ms`` after its last append (the wall clock of that append, or after a
        restart the ``.log`` file's modification time). Future timestamps keep a segment
        until they are ``retention_ms`` in the past, as in Kafka."""
        with self._lock:
            self._check_open()
            now = self._now_ms() if now_ms is None else now_ms
            config = self._config
            total = self.size_bytes
            removed = 0
            while len(self._segments) > 1:
                oldest = self._segments[0]
                newest = _newest(oldest.largest_timestamp, oldest.last_append_ms)
                by_time = (
                    config.retention_ms >= 0
                    and newest is not None
                    and now - newest > config.retention_ms
                )
                by_size = config.retention_bytes >= 0 and total - oldest.size >= config.retention_bytes
                if not (by_time or by_size):
                    break
                self._drop_oldest()
                total -= oldest.size
                removed += 1
            return removed

    def roll(self) -> None:
        """Seal the active segment, if it holds anything, and start a new one at the log end.

        (A log that is rewritten as a snapshot -- the committed offsets -- rolls first, so the
        segments the snapshot replaces can then be deleted whole.)"""
        with self._lock:
            self._check_open()
            if self._pending is not None:
                raise StorageError(f"cannot roll {self.label} while an append is in progress")
            active = self._segments[-1]
            if active.size:
                self._add_segment(self._create_segment(self.log_end_offset))
                self._seal(active)

    def delete_before(self, offset: int) -> int:
        """Delete the whole segments that hold only offsets below ``offset``, oldest first,
        never the active one; ``log_start_offset`` moves up. Returns how many were deleted."""
        with self._lock:
            self._check_open()
            removed = 0
            while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                self._drop_oldest()
                removed += 1
            return removed

    def _drop_oldest(self) -> None:
        """Delete the oldest (never the active) segment; ``log_start_offset`` moves up."""
        oldest = self._segments[0]
        del self._segments[0], self._bases[0]
        self._discard(oldest)

    def _discard(self, segment: Any) -> None:
        """Hook: release a segment that retention removed from the log."""


def _newest(*stamps: int | None) -> int | None:
    """The latest of the known ``stamps`` (None if none is known)."""
    known = [stamp for stamp in stamps if stamp is not None]
    return max(known) if known else None
