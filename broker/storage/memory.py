"""``MemoryLog``: the ``FileLog`` interface with the batches held in memory (no files).

Used by the broker's in-memory mode and by the storage tests, which run one suite against
both. Segments exist here too so that rolling and retention behave exactly as on disk.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator

from sluice.broker.storage.base import BaseLog
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.segment import BatchSpan
from sluice.protocol.batch import BatchHeader, parse_header
from sluice.protocol.clock import wall_clock_ms


class MemorySegment:
    """Batches ``[base_offset, end_offset)`` as separate ``bytes``; ``_bases`` is parallel."""

    __slots__ = ("base_offset", "end_offset", "size", "created_ms", "last_append_ms",
                 "largest_timestamp", "_batches", "_bases", "_max_ts")

    def __init__(self, base_offset: int) -> None:
        self.base_offset = self.end_offset = base_offset
        self.size = 0
        self.created_ms: int | None = None
        self.last_append_ms: int | None = None
        self.largest_timestamp: int | None = None
        self._batches: list[bytes] = []
        self._bases: list[int] = []
        self._max_ts: list[int] = []

    def publish(self, chunk: memoryview, batches: list[BatchSpan], now_ms: int) -> None:
        """Keep a copy of ``chunk``'s batches (nothing is written before: no files)."""
        ends = [pos for pos, *_ in batches[1:]] + [len(chunk)]
        for (pos, base, _, max_ts), end in zip(batches, ends, strict=True):
            self._batches.append(bytes(chunk[pos:end]))
            self._bases.append(base)
            self._max_ts.append(max_ts)
            if self.largest_timestamp is None or max_ts > self.largest_timestamp:
                self.largest_timestamp = max_ts
        self.size += len(chunk)
        self.end_offset = batches[-1][2] + 1
        if self.created_ms is None:
            self.created_ms = now_ms
        self.last_append_ms = now_ms

    def _index_of(self, offset: int) -> int:
        return max(bisect_right(self._bases, offset) - 1, 0)

    def read(
        self, offset: int, max_bytes: int, max_offset: int | None = None
    ) -> tuple[bytes | None, int]:
        """As ``Segment.read``: whole batches from the one containing ``offset``, at least one
        of those ending at or below ``max_offset``; and the offset that follows them."""
        first = self._index_of(offset)
        stop = len(self._batches)
        if max_offset is not None and max_offset < self.end_offset:
            stop = self._index_of(max_offset)
        if first >= stop:
            return None, offset
        taken = [self._batches[first]]
        total = len(taken[0])
        for batch in self._batches[first + 1 : stop]:
            if total + len(batch) > max_bytes:
                break
            taken.append(batch)
            total += len(batch)
        after = first + len(taken)
        return b"".join(taken), self._bases[after] if after < len(self._bases) else self.end_offset

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        for base, max_ts in zip(self._bases, self._max_ts, strict=True):
            if max_ts >= timestamp:
                return base, max_ts
        return None

    def headers_from(self, offset: int) -> Iterator[BatchHeader]:
        if offset >= self.end_offset:
            return
        for batch in self._batches[self._index_of(offset) :]:
            yield parse_header(batch)


class MemoryLog(BaseLog):
    """A partition in memory; ``flushed_offset`` is always the end (nothing to sync)."""

    def __init__(self, config: TopicConfig, now_ms: Callable[[], int] = wall_clock_ms) -> None:
        super().__init__(config, now_ms, [MemorySegment(0)])

    @property
    def label(self) -> str:
        return "the in-memory log"

    def _create_segment(self, base_offset: int) -> MemorySegment:
        return MemorySegment(base_offset)

    @property
    def flushed_offset(self) -> int:
        return self.log_end_offset

    def flush(self) -> int:
        return self.log_end_offset

    def read_bytes(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        return b"".join(self.read(offset, max_bytes, max_offset).slices)

    def scan_headers(self, from_offset: int) -> Iterator[BatchHeader]:
        with self._lock:
            from_offset = max(from_offset, self.log_start_offset)
            segments = self._segments[bisect_right(self._bases, from_offset) - 1 :]
        for segment in segments:
            yield from segment.headers_from(from_offset)

    def close(self) -> None:
        self._closed = True

    def delete(self) -> None:
        self.close()
        self._segments[:] = [MemorySegment(self.log_end_offset)]
        self._bases[:] = [self.log_end_offset]
