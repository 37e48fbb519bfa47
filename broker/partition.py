"""A partition as the broker serves it: its log, its producers, its waiters, its flusher.

* Appends run inline on the event loop (storage appends are a single ``os.write``); batches
  are checked against the idempotent-producer state first, and duplicates are answered with
  their original offsets without being written again.
* Long-polling fetches register a ``trio.Event`` with ``watch``; the next append to any
  watched partition sets it, so a waiting fetch wakes on append, never on a timer.
* ``acks=all`` producers wait on ``wait_flushed(offset)``. One flusher task per partition
  runs ``log.flush()`` (fdatasync) in a worker thread while appends go on; each fsync covers
  everything appended before it started, so concurrent producers share fsyncs (group
  commit). Invariant: a waiter is woken only once ``log.flushed_offset > offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import trio
from sluice.broker.producers import Duplicate, ProducerStates
from sluice.protocol.batch import BatchHeader
from sluice.protocol.errors import StorageError, UnknownTopicOrPartitionError


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a produce request's batches for one partition ended up."""

    base_offset: int
    last_offset: int


class Partition:
    """One topic-partition: log + producer state + long-poll and durability waiters."""

    def __init__(
        self, topic: str, index: int, log, producers: ProducerStates | None = None, *, topic_id: str
    ) -> None:
        self.topic = topic
        self.topic_id = topic_id  # the incarnation of the topic this partition belongs to
        self.index = index
        self.log = log
        self.producers = producers if producers is not None else ProducerStates()
        self._watchers: set[trio.Event] = set()
        self.closed = False
        self._flush_waiters: list[tuple[int, trio.Event]] = []
        self._flush_wanted = trio.Event()
        self._flush_error: BaseException | None = None
        self.flushes = 0

    # -- appends -----------------------------------------------------------------------------

    def append(self, records: bytearray | memoryview, headers: Sequence[BatchHeader]) -> Appended:
        """Append validated batches (``headers`` parsed from ``records``, in order).

        Batches already written by an idempotent producer are skipped and reported at their
        original offsets. Raises the producer errors before writing anything.
        """
        if len(headers) == 1:
            duplicate = self.producers.check(headers[0])
            if duplicate is not None:
                return Appended(duplicate.first_offset, duplicate.last_offset)
            result = self.log.append(records)
            self.producers.record(headers[0], result.base_offset)
            self._notify_appended()
            return Appended(result.base_offset, result.last_offset)
        return self._append_many(records, headers)

    def _append_many(self, records, headers: Sequence[BatchHeader]) -> Appended:
        verdicts = [self.producers.check(h) for h in headers]
        if all(v is None for v in verdicts):
            result = self.log.append(records)
            offset = result.base_offset
            for header in headers:
                self.producers.record(header, offset)
                offset += header.last_offset_delta + 1
            self._notify_appended()
            return Appended(result.base_offset, result.last_offset)
        # A mix of retried and new batches: write the new ones one by one, in order.
        view = memoryview(records)
        first = last = None
        position = 0
        for header, verdict in zip(headers, verdicts, strict=True):
            piece = view[position : position + header.size]
            position += header.size
            if isinstance(verdict, Duplicate):
                lo, hi = verdict.first_offset, verdict.last_offset
            else:
                result = self.log.append(piece)
                self.producers.record(header, result.base_offset)
                lo, hi = result.base_offset, result.last_offset
            first = lo if first is None else first
            last = hi
        self._notify_appended()
        return Appended(first, last)

    def _notify_appended(self) -> None:
        self.wake_watchers()

    def wake_watchers(self) -> None:
        """Wake every waiting fetch (on append, delete, or shutdown)."""
        for event in self._watchers:
            event.set()
        self._watchers.clear()

    def watch(self, event: trio.Event) -> None:
        """Set ``event`` at the next append (or when the partition closes)."""
        if self.closed:
            event.set()
        else:
            self._watchers.add(event)

    def unwatch(self, event: trio.Event) -> None:
        self._watchers.discard(event)

    def close(self) -> None:
        """The partition is going away (topic deleted): wake every waiter."""
        self.closed = True
        self._notify_appended()
        self._flush_error = UnknownTopicOrPartitionError(f"{self.topic}[{self.index}] was deleted")
        for _, done in self._flush_waiters:
            done.set()
        self._flush_waiters.clear()

    # -- durability --------------------------------------------------------------------------

    async def wait_flushed(self, offset: int) -> None:
        """Wait until everything up to and including ``offset`` is fdatasync'd."""
        if self.log.flushed_offset > offset:
            await trio.lowlevel.checkpoint()
            return
        if self.closed:
            raise UnknownTopicOrPartitionError(f"{self.topic}[{self.index}] was deleted")
        done = trio.Event()
        self._flush_waiters.append((offset, done))
        self._flush_wanted.set()
        await done.wait()
        if self.log.flushed_offset <= offset:
            if isinstance(self._flush_error, UnknownTopicOrPartitionError):
                raise self._flush_error
            raise StorageError(f"flush failed: {self._flush_error}")

    async def run_flusher(self) -> None:
        """Group commit: fsync whenever someone waits, waking all covered waiters."""
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            try:
                await trio.to_thread.run_sync(self.log.flush)
                self._flush_error = None
            except (OSError, StorageError) as exc:
                self._flush_error = exc
            self.flushes += 1
            self._wake_flushed()

    def _wake_flushed(self) -> None:
        flushed = self.log.flushed_offset
        failed = self._flush_error is not None
        still_waiting = []
        for offset, done in self._flush_waiters:
            if offset < flushed or failed:
                done.set()
            else:
                still_waiting.append((offset, done))
        self._flush_waiters = still_waiting
        if still_waiting:
            self._flush_wanted.set()
