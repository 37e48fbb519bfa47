"""A partition as the broker serves it: its log, its producers, its waiters, its flusher.

* Appends happen one at a time, in the order they are asked for; batches are checked against
  the idempotent-producer state first, and duplicates are answered with their original
  offsets without being written again. A small append runs inline on the event loop
  (``append``: one ``os.write``). A large one (``OFF_LOOP_APPEND_BYTES`` or more; an 8 MiB
  write took ~20-30 ms on the benchmark VM) is written by a worker thread while the loop
  serves everyone else (``append_in_turn``); appends to the partition that arrive meanwhile
  wait their turn behind it (a FIFO lock), and readers see none of its bytes until all of
  them are written (see ``BaseLog.append``).
* Long-polling fetches register a ``trio.Event`` with ``watch``; the next append to any
  watched partition sets it, so a waiting fetch wakes on append, never on a timer.
* ``acks=all`` producers wait on ``wait_flushed(offset)``. One flusher task per partition
  runs ``log.flush()`` (fdatasync) in a worker thread while appends go on; each fsync covers
  everything appended before it started, so concurrent producers share fsyncs (group
  commit). Invariant: a waiter is woken only once ``log.flushed_offset > offset``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import trio
from sluice.broker.domain.producers import Duplicate, ProducerStates
from sluice.broker.storage.base import AppendResult
from sluice.protocol.batch import BatchHeader
from sluice.protocol.errors import StorageError, UnknownTopicOrPartitionError

# Appends of this many bytes or more are written by a worker thread (``append_in_turn``).
# Below it the thread hop (~0.1 ms) costs more than the write; above it a write holds the
# event loop for longer than a small request's whole round trip.
OFF_LOOP_APPEND_BYTES = 512 * 1024


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
        self._turn = trio.Lock()  # held by an append that waits or writes off the loop (FIFO)
        self.closed = False
        self._flush_waiters: list[tuple[int, trio.Event]] = []
        self._flush_wanted = trio.Event()
        self._flush_error: BaseException | None = None
        self.flushes = 0

    # -- appends -----------------------------------------------------------------------------

    def can_append_now(self, nbytes: int) -> bool:
        """Whether an append of ``nbytes`` may run inline right now (``append``), rather than
        through ``append_in_turn``: it is small, and no other append is in progress or
        waiting."""
        return nbytes < OFF_LOOP_APPEND_BYTES and not self._turn.locked()

    def append(self, records: bytearray | memoryview, headers: Sequence[BatchHeader]) -> Appended:
        """Append validated batches (``headers`` parsed from ``records``, in order) inline.

        Batches already written by an idempotent producer are skipped and reported at their
        original offsets. Raises the producer errors before writing anything. Only when
        ``can_append_now`` (else ``StorageError``: appends must not overtake one another)."""
        if self._turn.locked():
            raise StorageError(f"{self.topic}[{self.index}] is busy with another append; retry")
        return self._append_inline(records, headers)

    async def append_in_turn(
        self, records: bytearray | memoryview, headers: Sequence[BatchHeader]
    ) -> Appended:
        """``append``, after the appends asked for before it; a large one is written by a
        worker thread (not cancellable once started: its outcome is known when this returns)."""
        async with self._turn:
            try:
                if len(records) < OFF_LOOP_APPEND_BYTES:
                    return self._append_inline(records, headers)
                plan = _AppendPlan(self, records, headers)
                for piece in plan.pieces():
                    plan.written(await trio.to_thread.run_sync(self.log.append, piece))
                return plan.appended()
            except StorageError:
                if self.closed:  # deleted while this append waited or was being written
                    raise UnknownTopicOrPartitionError(
                        f"{self.topic}[{self.index}] was deleted"
                    ) from None
                raise

    def _append_inline(self, records, headers: Sequence[BatchHeader]) -> Appended:
        if len(headers) == 1:  # the usual case, straight through
            header = headers[0]
            duplicate = self.producers.check(header)
            if duplicate is not None:
                return Appended(duplicate.first_offset, duplicate.last_offset)
            result = self.log.append(records)
            self.producers.record(header, result.base_offset)
            self.wake_watchers()
            return Appended(result.base_offset, result.last_offset)
        plan = _AppendPlan(self, records, headers)
        for piece in plan.pieces():
            plan.written(self.log.append(piece))
        return plan.appended()

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
        self.wake_watchers()
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


class _AppendPlan:
    """One request's batches for a partition, as log appends: all of them at once when none
    was written before (the usual case), else one by one, skipping the duplicates (retries of
    batches already written) and reporting them at their original offsets. The producer state
    is updated after each append, so it always matches the log."""

    def __init__(self, partition: Partition, records, headers: Sequence[BatchHeader]) -> None:
        self._partition = partition
        self._records = records
        self._headers = headers
        # Every producer error is raised here, before anything is written.
        self._verdicts = [partition.producers.check(h) for h in headers]
        self._writing: Sequence[BatchHeader] = ()
        self._first: int | None = None
        self._last: int | None = None

    def pieces(self) -> Iterator[bytearray | memoryview]:
        """What to append, in order; call ``written`` with each one's result."""
        if all(v is None for v in self._verdicts):
            self._writing = self._headers
            yield self._records
            return
        view = memoryview(self._records)
        position = 0
        for header, verdict in zip(self._headers, self._verdicts, strict=True):
            piece = view[position : position + header.size]
            position += header.size
            if isinstance(verdict, Duplicate):
                self._cover(verdict.first_offset, verdict.last_offset)
            else:
                self._writing = (header,)
                yield piece

    def written(self, result: AppendResult) -> None:
        offset = result.base_offset
        for header in self._writing:
            self._partition.producers.record(header, offset)
            offset += header.last_offset_delta + 1
        self._cover(result.base_offset, result.last_offset)
        self._partition.wake_watchers()

    def _cover(self, first: int, last: int) -> None:
        if self._first is None:
            self._first = first
        self._last = last

    def appended(self) -> Appended:
        assert self._first is not None and self._last is not None, "no batches"
        return Appended(self._first, self._last)
