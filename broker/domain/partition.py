"""A partition as the broker serves it: its log, its producers, its waiters, its flusher.

Offsets, from the bottom up: ``log_start_offset`` <= ``committed_offset`` <= ``log_end_offset``
and ``high_watermark`` <= ``log_end_offset``.

* **Appends** happen one at a time, in the order they are asked for, of batches validated
  once (``validate``); batches are checked against the idempotent-producer state first, and
  duplicates are answered with their original offsets without being written again. A small
  append runs inline on the event loop (``append``: one ``os.write``). A large one
  (``OFF_LOOP_APPEND_BYTES`` or more; an 8 MiB write took ~20-30 ms on the benchmark VM) is
  written by a worker thread while the loop serves everyone else (``append_in_turn``);
  appends to the partition that arrive meanwhile wait their turn behind it (a FIFO lock), and
  readers see none of its bytes until all of them are written (see ``BaseLog.append``).
* **High watermark**: what readers may see -- consumers read below it (``read``'s
  ``max_offset``). On one broker it is the log end: an ``acks=1`` record is visible as soon
  as it is appended, as in Kafka with one replica. (With replication it becomes the smallest
  flushed offset of the in-sync replicas, and equals ``committed_offset``.)
* **Committed offset**: below it, records are as safe as this broker can make them --
  ``acks=all``'s promise, awaited with ``wait_committed(offset)``. On one broker it is the
  flushed offset: one flusher task per partition runs ``log.flush()`` (fdatasync) in a worker
  thread while appends go on; each fsync covers everything appended before it started, so
  concurrent producers share fsyncs (group commit). Invariant: a waiter is woken only once
  ``committed_offset > offset``, or with the error that stopped it.
* **Long polls** register a ``trio.Event`` with ``watch``; the next append (or the
  partition's end) sets it, so a waiting fetch wakes on append, never on a timer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import trio
from sluice.broker.domain.producers import Duplicate, ProducerStates
from sluice.broker.domain.stats import PartitionStats
from sluice.broker.domain.validation import validate_produce
from sluice.broker.storage import AppendResult, PartitionLog, ReadResult, ValidatedBatches
from sluice.protocol.errors import (
    InvalidRequestError,
    StorageError,
    UnknownTopicOrPartitionError,
)
from sluice.protocol.limits import EARLIEST, LATEST

# Appends of this many bytes or more are written by a worker thread (``append_in_turn``).
# Below it the thread hop (~0.1 ms) costs more than the write; above it a write holds the
# event loop for longer than a small request's whole round trip.
OFF_LOOP_APPEND_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Appended:
    """Where one append's batches ended up: offsets ``base_offset``..``last_offset``."""

    base_offset: int
    last_offset: int


class Partition:
    """One topic-partition: log + producer state + long-poll and durability waiters."""

    def __init__(
        self, topic: str, index: int, log: PartitionLog, producers: ProducerStates | None = None,
        *, topic_id: str,
    ) -> None:
        self.topic = topic
        self.topic_id = topic_id  # the incarnation of the topic this partition belongs to
        self.index = index
        self.log = log
        self.producers = producers if producers is not None else ProducerStates()
        self.stats = PartitionStats()
        self._watchers: set[trio.Event] = set()
        self._turn = trio.Lock()  # held by an append that waits or writes off the loop (FIFO)
        self.closed = False
        self._commit_waiters: list[tuple[int, trio.Event]] = []
        self._flush_wanted = trio.Event()
        self._flush_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Partition({self.topic}[{self.index}])"

    # -- offsets -----------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    @property
    def segment_count(self) -> int:
        return self.log.segment_count

    @property
    def high_watermark(self) -> int:
        """Readers see offsets below it (see the module docstring): on one broker, the log end."""
        return self.log.log_end_offset

    @property
    def committed_offset(self) -> int:
        """Offsets below it are committed (see the module docstring): on one broker, flushed."""
        return self.log.flushed_offset

    # -- appends -----------------------------------------------------------------------------

    def validate(self, records: bytearray | memoryview) -> ValidatedBatches:
        """A produce body for this partition checked against its topic's rules, once."""
        return validate_produce(records, self.log.config.max_message_bytes)

    def can_append_now(self, batches: ValidatedBatches) -> bool:
        """Whether ``append`` may take ``batches`` inline right now, rather than
        ``append_in_turn``: they are small, and no other append is in progress or waiting."""
        return batches.size < OFF_LOOP_APPEND_BYTES and not self._turn.locked()

    def append(self, batches: ValidatedBatches) -> Appended:
        """Append validated batches inline (only when ``can_append_now``, else
        ``StorageError``: appends must not overtake one another).

        Batches already written by an idempotent producer are skipped and reported at their
        original offsets. Raises the producer errors before writing anything."""
        if self._turn.locked():
            raise StorageError(f"{self.topic}[{self.index}] is busy with another append; retry")
        return self._append_inline(batches)

    async def append_in_turn(self, batches: ValidatedBatches) -> Appended:
        """``append``, after the appends asked for before it; a large one is written by a
        worker thread (not cancellable once started: its outcome is known when this returns)."""
        async with self._turn:
            try:
                if batches.size < OFF_LOOP_APPEND_BYTES:
                    return self._append_inline(batches)
                plan = _AppendPlan(self, batches)
                for piece in plan.pieces():
                    plan.written(piece, await trio.to_thread.run_sync(self.log.append, piece))
                return plan.appended()
            except StorageError:
                if self.closed:  # deleted while this append waited or was being written
                    raise UnknownTopicOrPartitionError(
                        f"{self.topic}[{self.index}] was deleted"
                    ) from None
                raise

    def _append_inline(self, batches: ValidatedBatches) -> Appended:
        if batches.batch_count == 1:  # the usual case, straight through
            header = batches.headers[0]
            duplicate = self.producers.check(header)
            if duplicate is not None:
                self.stats.duplicates += 1
                return Appended(duplicate.first_offset, duplicate.last_offset)
            result = self.log.append(batches)
            self.producers.record(header, result.base_offset)
            self._appended(batches)
            return Appended(result.base_offset, result.last_offset)
        plan = _AppendPlan(self, batches)
        for piece in plan.pieces():
            plan.written(piece, self.log.append(piece))
        return plan.appended()

    def _appended(self, batches: ValidatedBatches) -> None:
        """``batches`` are in the log: count them and wake the long polls."""
        stats = self.stats
        stats.appends += 1
        stats.batches_in += batches.batch_count
        stats.records_in += batches.record_count
        stats.bytes_in += batches.size
        if batches.batch_count == 1:
            stats.batch_bytes.observe(batches.size)
        else:
            for header in batches.headers:
                stats.batch_bytes.observe(header.size)
        self.wake_watchers()

    # -- reads -------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole batches from ``offset`` (see ``PartitionLog.read``), none reaching past
        ``max_offset`` -- consumers pass ``high_watermark``. The slices hold file references:
        ``storage.release_slices`` them once sent or dropped."""
        return self.log.read(offset, max_bytes, max_offset)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(base offset, max timestamp)`` of the first batch whose max timestamp reaches
        ``timestamp`` (batch granularity), or None."""
        return self.log.offset_for_timestamp(timestamp)

    def list_offset(self, timestamp: int) -> tuple[int, int]:
        """``(offset, timestamp)`` answering a list-offsets query, as both protocols ask it:
        ``EARLIEST`` (-2) the log start, ``LATEST`` (-1) the high watermark (timestamp -1 for
        both), a timestamp >= 0 ``offset_for_timestamp`` (``(-1, -1)`` if no batch reaches
        it); any other negative value is an ``InvalidRequestError``."""
        if timestamp == EARLIEST:
            return self.log_start_offset, -1
        if timestamp == LATEST:
            return self.high_watermark, -1
        if timestamp < 0:
            raise InvalidRequestError(f"invalid timestamp {timestamp}")
        found = self.offset_for_timestamp(timestamp)
        return found if found is not None else (-1, -1)

    def watch(self, event: trio.Event) -> None:
        """Set ``event`` at the next append (or when the partition closes)."""
        if self.closed:
            event.set()
        else:
            self._watchers.add(event)

    def unwatch(self, event: trio.Event) -> None:
        self._watchers.discard(event)

    def wake_watchers(self) -> None:
        """Wake every waiting fetch (on append, delete, or shutdown)."""
        for event in self._watchers:
            event.set()
        self._watchers.clear()

    def close(self) -> None:
        """The partition is going away (topic deleted): wake every waiter; the flusher ends."""
        self.closed = True
        self.wake_watchers()
        self._flush_error = UnknownTopicOrPartitionError(f"{self.topic}[{self.index}] was deleted")
        for _, done in self._commit_waiters:
            done.set()
        self._commit_waiters.clear()
        self._flush_wanted.set()

    # -- durability --------------------------------------------------------------------------

    async def wait_committed(self, offset: int) -> None:
        """Wait until everything up to and including ``offset`` is committed (on one broker:
        fdatasync'd). ``StorageError`` if the flush failed, ``UnknownTopicOrPartitionError``
        if the partition was deleted first."""
        if self.committed_offset > offset:
            await trio.lowlevel.checkpoint()
            return
        if self.closed:
            raise UnknownTopicOrPartitionError(f"{self.topic}[{self.index}] was deleted")
        done = trio.Event()
        self._commit_waiters.append((offset, done))
        self._flush_wanted.set()
        await done.wait()
        if self.committed_offset <= offset:
            if isinstance(self._flush_error, UnknownTopicOrPartitionError):
                raise self._flush_error
            raise StorageError(f"flush failed: {self._flush_error}")

    async def run_flusher(self) -> None:
        """Group commit: fsync whenever someone waits, waking all covered waiters; returns
        when the partition closes."""
        while True:
            await self._flush_wanted.wait()
            if self.closed:
                return
            self._flush_wanted = trio.Event()
            began = time.perf_counter()
            try:
                await trio.to_thread.run_sync(self.log.flush)
                self._flush_error = None
            except (OSError, StorageError) as exc:
                self._flush_error = exc
                self.stats.flush_failures += 1
            self.stats.flushes += 1
            self.stats.flush_durations.observe(time.perf_counter() - began)
            self._wake_committed()

    def _wake_committed(self) -> None:
        committed = self.committed_offset
        failed = self._flush_error is not None
        still_waiting = []
        for offset, done in self._commit_waiters:
            if offset < committed or failed:
                done.set()
            else:
                still_waiting.append((offset, done))
        self._commit_waiters = still_waiting
        if still_waiting:
            self._flush_wanted.set()


class _AppendPlan:
    """One append's batches as log appends: all of them at once when none was written before
    (the usual case), else one by one, skipping the duplicates (retries of batches already
    written) and reporting them at their original offsets. The producer state is updated
    after each append, so it always matches the log."""

    def __init__(self, partition: Partition, batches: ValidatedBatches) -> None:
        self._partition = partition
        self._batches = batches
        # Every producer error is raised here, before anything is written.
        self._verdicts = [partition.producers.check(h) for h in batches.headers]
        self._first: int | None = None
        self._last: int | None = None

    def pieces(self) -> Iterator[ValidatedBatches]:
        """What to append, in order; call ``written`` with each one and its result."""
        if all(v is None for v in self._verdicts):
            yield self._batches
            return
        for i, verdict in enumerate(self._verdicts):
            if isinstance(verdict, Duplicate):
                self._partition.stats.duplicates += 1
                self._cover(verdict.first_offset, verdict.last_offset)
            else:
                yield self._batches.batch(i)

    def written(self, piece: ValidatedBatches, result: AppendResult) -> None:
        offset = result.base_offset
        for header in piece.headers:
            self._partition.producers.record(header, offset)
            offset += header.last_offset_delta + 1
        self._cover(result.base_offset, result.last_offset)
        self._partition._appended(piece)

    def _cover(self, first: int, last: int) -> None:
        if self._first is None:
            self._first = first
        self._last = last

    def appended(self) -> Appended:
        assert self._first is not None and self._last is not None, "no batches"
        return Appended(self._first, self._last)
