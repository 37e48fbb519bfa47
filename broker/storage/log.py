"""``FileLog``: a partition stored as segment files in one directory.

Opening is lazy: only the directory listing and the active segment are read; a sealed segment
opens its descriptor and loads its indexes on first use, and at most ``max_open_segments`` of
them stay loaded (least recently used first out). Descriptors: the active segment's stays open;
a sealed segment keeps its own between operations only with a token of the ``HandleQuota``
the log shares with the others of its broker, else it closes it after each operation.

Recovery: ``recovery_point=None`` (clean shutdown) trusts every file and only walks the active
segment's headers from its last index entry to find the end. An integer ``recovery_point`` (the
last checkpointed ``flushed_offset``) re-validates from there: in the segment containing it,
from the last index entry below it (data and index entries below the recovery point were
fdatasync'd together); later segments from their first byte. Validation cuts the first segment
that has an invalid byte and deletes every segment after it.
"""

from __future__ import annotations

import os
import shutil
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from sluice.broker.storage.base import (
    AppendResult,
    BaseLog,
    PendingAppend,
    Piece,
    ReadResult,
)
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import (
    LOG_SUFFIX,
    SEGMENT_SUFFIXES,
    CorruptLogError,
    HandleQuota,
    SegmentFile,
    fdatasync_path,
    fsync_dir,
    parse_segment_name,
    release_slices,
    write_all,
)
from sluice.broker.storage.segment import Segment, iter_headers
from sluice.protocol.batch import BatchHeader
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.errors import StorageError
from sluice.protocol.slices import FileSlice

DEFAULT_MAX_OPEN_SEGMENTS = 8

__all__ = ["AppendResult", "FileLog", "ReadResult"]


class FileLog(BaseLog):
    """A partition on disk. See ``BaseLog`` for the offset invariants.

    ``flushed_offset``: every batch below it has been fdatasync'd, with its segment's index
    entries and directory entry. It only moves forward, and only in ``flush``.
    """

    def __init__(
        self,
        directory: Path,
        config: TopicConfig,
        now_ms: Callable[[], int],
        segments: list[Segment],
        max_open_segments: int,
        quota: HandleQuota,
    ) -> None:
        super().__init__(config, now_ms, segments)
        self.directory = directory
        self._loaded: OrderedDict[Segment, None] = OrderedDict()  # sealed segments, LRU order
        self._max_open = max_open_segments
        self._quota = quota
        self._holding: set[Segment] = set()  # sealed segments open with a token of the quota
        self._flushed = 0
        self._dir_dirty = False  # segment files were created or deleted since the last flush
        self._failed: str | None = None

    @classmethod
    def open(
        cls,
        directory: Path,
        config: TopicConfig,
        *,
        recovery_point: int | None,
        now_ms: Callable[[], int] = wall_clock_ms,
        max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS,
        flushed_floor: int | None = None,
        quota: HandleQuota | None = None,
    ) -> FileLog:
        """Open (creating if needed) the log in ``directory``; see the module docstring.

        ``flushed_floor``: offsets below it are known to have been flushed (the checkpointed
        recovery point). Recovery never cuts below it: invalid data or missing offsets there
        raise ``CorruptLogError`` (naming the file and position) and leave the log files as
        they were. None (the operator's ``--repair-truncate``) cuts wherever the data ends."""
        directory.mkdir(parents=True, exist_ok=True)
        sizes = _list_segments(directory)
        bases = sorted(sizes)
        interval = config.index_interval_bytes
        if bases:
            segments = [
                Segment(
                    directory,
                    base,
                    size=sizes[base],
                    end_offset=bases[i + 1] if i + 1 < len(bases) else base,
                    index_interval=interval,
                    sealed=i + 1 < len(bases),
                )
                for i, base in enumerate(bases)
            ]
        else:
            segments = [Segment.create(directory, 0, interval)]
        log = cls(directory, config, now_ms, segments, max_open_segments, quota or HandleQuota())
        try:
            if not bases:
                log._dir_dirty = True
            elif recovery_point is None:
                segments[-1].open_active(flushed_floor)
            else:
                log._recover(recovery_point, flushed_floor)
            if flushed_floor is not None and log.log_end_offset < flushed_floor:
                raise CorruptLogError(
                    f"{directory}: the log ends at offset {log.log_end_offset} but offsets "
                    f"below {flushed_floor} were flushed (segment files missing or cut short?)"
                )
        except CorruptLogError:
            for segment in log._segments:
                segment.release_file()
            raise
        if segments[-1].size:
            segments[-1].created_ms = now_ms()  # a restart restarts the segment_ms clock
        log._flushed = log.log_end_offset
        return log

    def _recover(self, recovery_point: int, floor: int | None = None) -> None:
        first = max(bisect_right(self._bases, recovery_point) - 1, 0)
        for i in range(first, len(self._segments)):
            segment = self._segments[i]
            start = segment.recovery_start(recovery_point) if i == first else (0, segment.base_offset)
            truncated = segment.recover(*start, floor)
            is_last = i + 1 == len(self._segments)
            cut = not is_last and (truncated or segment.end_offset != self._bases[i + 1])
            if cut and floor is not None and segment.end_offset < floor:
                raise CorruptLogError(
                    f"{segment.log_path}: ends at offset {segment.end_offset} but the next "
                    f"segment starts at {self._bases[i + 1]}; offsets below {floor} were flushed"
                )
            if cut:
                for later in self._segments[i + 1 :]:
                    later.delete()
                del self._segments[i + 1 :], self._bases[i + 1 :]
            elif not is_last:
                segment.seal()
            file, index_paths = segment.prepare_sync()
            try:
                _sync(file, index_paths)
            finally:
                file.release()
            self._use(segment)  # caps descriptors while recovering many segments
            self._settle(segment)
            if cut:
                break
        fsync_dir(self.directory)

    # -- lazy loading ------------------------------------------------------------------------

    def _use(self, segment: Segment) -> Segment:
        """Mark a segment used; loading happens on demand, eviction unloads the oldest."""
        if segment is self._segments[-1]:
            return segment
        loaded = self._loaded
        if segment in loaded:
            loaded.move_to_end(segment)
        else:
            loaded[segment] = None
            while len(loaded) > self._max_open:
                victim, _ = loaded.popitem(last=False)
                self._forget(victim)
                victim.unload()
        return segment

    def _settle(self, segment: Segment) -> None:
        """After an operation on ``segment``: a sealed one keeps its descriptor only with a
        token of the quota, else it is closed now (its indexes stay loaded)."""
        if segment is self._segments[-1] or segment in self._holding or not segment.is_open:
            return
        if self._quota.take():
            self._holding.add(segment)
        else:
            segment.close_file()

    def _forget(self, segment: Segment) -> None:
        """``segment`` is closing its descriptor (evicted, deleted, active again): give its
        token back."""
        if segment in self._holding:
            self._holding.discard(segment)
            self._quota.give()

    def _forget_all(self) -> None:
        for segment in list(self._holding):
            self._forget(segment)

    # -- appending ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        super()._check_open()
        if self._failed:
            raise StorageError(f"{self.directory.name} needs recovery: {self._failed}")

    @property
    def label(self) -> str:
        return self.directory.name

    def _create_segment(self, base_offset: int) -> Segment:
        self._dir_dirty = True
        return Segment.create(self.directory, base_offset, self._config.index_interval_bytes)

    def _seal(self, segment: Segment) -> None:
        segment.seal()
        self._use(segment)
        self._settle(segment)

    def _undo_point(self, active: Segment) -> tuple:
        return active.snapshot()

    def _hold(self, segment: Segment) -> SegmentFile:
        # Not retained here (that costs on every append): close and delete, which would close
        # it, first make the append in progress keep it open (``keep_files_open``).
        return segment.file()

    def _write_piece(self, piece: Piece) -> None:
        write_all(piece.file.fileno(), piece.chunk)

    def _abandon(self, pending: PendingAppend) -> None:
        """Put the log back as it was before a failed append: drop the segments it rolled to,
        cut the formerly active one back (un-sealing it) -- also past bytes written but never
        published."""
        try:
            self._drop_added(pending.new_segments)
            for segment in pending.new_segments:
                self._loaded.pop(segment, None)
                self._forget(segment)
                segment.delete()
            if not self._closed:
                active = self._segments[-1]
                self._loaded.pop(active, None)
                self._forget(active)
                active.restore(pending.undo)
        except OSError as exc:
            self._failed = f"undoing a failed append also failed: {exc}"

    def reconfigure(self, config: TopicConfig) -> None:
        super().reconfigure(config)
        with self._lock:
            self._segments[-1].index_interval = config.index_interval_bytes

    # -- reading -----------------------------------------------------------------------------

    def read_bytes(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """``read`` copied into memory (the committed offsets' replay, tests)."""
        slices = self.read(offset, max_bytes, max_offset).slices
        try:
            return b"".join(_pread_slice(piece) for piece in slices)
        finally:
            release_slices(slices)

    def scan_headers(self, from_offset: int) -> Iterator[BatchHeader]:
        """Headers of every batch from the one containing ``from_offset`` (or the log start) to
        the end, for the startup rebuild of producer state. Appends made during the scan may or
        may not be seen."""
        with self._lock:
            self._check_open()
            from_offset = max(from_offset, self.log_start_offset)
            first = bisect_right(self._bases, from_offset) - 1
            segments = list(self._segments[first:])
        for segment in segments:
            with self._lock:
                if self._closed:
                    return
                try:
                    file, start, end = self._use(segment).headers_from(from_offset)
                finally:
                    self._settle(segment)
            try:
                for _, header in iter_headers(file.fileno(), start, end):
                    yield header
            finally:
                file.release()

    # -- durability --------------------------------------------------------------------------

    @property
    def flushed_offset(self) -> int:
        return self._flushed

    def flush(self) -> int:
        """fdatasync every segment holding unflushed batches, then advance ``flushed_offset``.

        Thread-safe: the lock is held only to snapshot what to sync (files retained, so a
        concurrent retention or roll cannot close them under us), never during the fdatasync.
        """
        with self._lock:
            if self._closed:
                return self._flushed
            end = self.log_end_offset
            targets: list[tuple[SegmentFile, list[Path]]] = []
            for segment in reversed(self._segments):
                if segment.end_offset <= self._flushed and not segment.index_dirty:
                    break
                if segment is not self._segments[-1]:
                    self._use(segment)
                try:
                    targets.append(segment.prepare_sync())
                finally:
                    self._settle(segment)
            sync_dir, self._dir_dirty = self._dir_dirty, False
        try:
            for file, paths in targets:
                _sync(file, paths)
            if sync_dir:
                fsync_dir(self.directory)
        except OSError as exc:
            with self._lock:
                self._dir_dirty |= sync_dir
            raise StorageError(f"fdatasync of {self.directory.name} failed: {exc}") from exc
        finally:
            for file, _ in targets:
                file.release()
        with self._lock:
            self._flushed = max(self._flushed, end)
            return self._flushed

    def close(self) -> None:
        """Flush, write every index, release descriptors (readers keep theirs)."""
        if self._closed:
            return
        self.flush()
        with self._lock:
            self._closed = True
            if self._pending is not None:
                self._pending.keep_files_open()
            self._forget_all()
            for segment in self._segments:
                segment.unload()
            self._loaded.clear()

    def delete(self) -> None:
        """Close without flushing and remove the directory (in-flight readers keep their fds)."""
        with self._lock:
            self._closed = True
            if self._pending is not None:
                self._pending.keep_files_open()
            self._forget_all()
            for segment in self._segments:
                segment.delete()
            self._loaded.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _discard(self, segment: Segment) -> None:
        self._loaded.pop(segment, None)
        self._forget(segment)
        segment.delete()
        self._dir_dirty = True

    def sanity_check(self) -> None:
        """Check every segment's invariants and that segments are contiguous (tests, tooling)."""
        with self._lock:
            for i, segment in enumerate(self._segments):
                try:
                    self._use(segment).sanity_check()
                finally:
                    self._settle(segment)
                if i + 1 < len(self._segments) and segment.end_offset != self._bases[i + 1]:
                    raise StorageError(f"{segment!r} is not followed by offset {segment.end_offset}")

    @property
    def open_segment_count(self) -> int:
        """Segments holding a descriptor (the active one included)."""
        return sum(segment.is_open for segment in self._segments)


def _list_segments(directory: Path) -> dict[int, int]:
    """``{base offset: .log size}``; deletes index files whose ``.log`` is gone and leftover
    temporary files. Reads only the directory (plus one stat per ``.log``)."""
    sizes: dict[int, int] = {}
    orphans: list[tuple[int, Path]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            base = parse_segment_name(entry.name, LOG_SUFFIX)
            if base is not None:
                sizes[base] = entry.stat().st_size
                continue
            for suffix in SEGMENT_SUFFIXES[1:]:
                base = parse_segment_name(entry.name, suffix)
                if base is not None:
                    orphans.append((base, Path(entry.path)))
            if entry.name.endswith(".tmp"):
                orphans.append((-1, Path(entry.path)))
    for base, path in orphans:
        if base not in sizes:
            path.unlink(missing_ok=True)
    return sizes


def _sync(file: SegmentFile, index_paths: list[Path]) -> None:
    os.fdatasync(file.fileno())
    for path in index_paths:
        fdatasync_path(path)


def _pread_slice(piece: FileSlice) -> bytes:
    data = os.pread(piece.file.fileno(), piece.length, piece.position)
    if len(data) != piece.length:
        raise StorageError(f"short read of {piece.length} bytes at {piece.position}")
    return data
