"""``Fetch``: one fetch request over several partitions, read now or long-polled.

Reads return whole batches below each partition's high watermark. The request's byte budget
is shared in order: the first partition with data always returns at least one batch, even a
larger one (Kafka's KIP-74, so a consumer can never stall); once the budget is spent, later
partitions report their offsets and no data.

A fetch is answered as soon as ``min_bytes`` are there, any partition has an error, the
broker is shutting down or ``max_wait`` ran out. ``poll`` reads once; if that is not enough
it holds nothing and starts watching the partitions, so an append between ``poll`` and
``wait`` still wakes it; ``wait`` re-reads on every append to a watched partition (never on a
timer). The slices of a result hold file references: release them (``release``) once sent
or dropped. A partition's ``PartitionStats`` count a result's data once, when it is final.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import trio
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.topics import TopicRegistry
from sluice.broker.storage import release_slices
from sluice.protocol.errors import ApiError, OffsetOutOfRangeError, StorageError
from sluice.protocol.slices import FileSlice


class FetchTarget(NamedTuple):
    """Where one partition is read from, and at most how much of it."""

    topic: str
    partition: int
    offset: int
    max_bytes: int
    topic_id: str = ""  # the incarnation meant ("": whichever exists)


class FetchedPartition(NamedTuple):
    """One partition's answer: whole batches (or an error), and its offsets at read time."""

    topic: str
    partition: int
    error: ApiError | None = None
    slices: Sequence[FileSlice | bytes] = ()
    high_watermark: int = -1
    log_start_offset: int = -1
    next_offset: int = -1  # the offset after the last batch returned
    size: int = 0  # bytes in ``slices``


def release(parts: Sequence[FetchedPartition]) -> None:
    """Drop the file references a result's slices hold (sent, or never to be)."""
    for part in parts:
        release_slices(part.slices)


class Fetch:
    """A fetch in progress; see the module docstring."""

    def __init__(
        self, topics: TopicRegistry, targets: Sequence[FetchTarget], *, max_bytes: int,
        min_bytes: int, max_wait_ms: int, stopping: Callable[[], bool],
    ) -> None:
        self._topics = topics
        self._targets = targets
        self._max_bytes = max_bytes
        self._min_bytes = min_bytes
        self._max_wait_ms = max_wait_ms
        self._deadline = trio.current_time() + max_wait_ms / 1000
        self._stopping = stopping
        self._woke: trio.Event | None = None

    def poll(self) -> list[FetchedPartition] | None:
        """Read every partition now: the answer, or None -- nothing held, the partitions are
        watched from now on, ``wait`` for the answer."""
        parts, enough = self._read()
        if enough or not self._max_wait_ms:
            return self._deliver(parts)
        release(parts)
        self._woke = self._watch()
        return None

    async def wait(self) -> list[FetchedPartition]:
        """After ``poll`` returned None: the answer, once there is enough or time is up."""
        while True:
            try:
                with trio.move_on_at(self._deadline):
                    await self._woke.wait()
            finally:
                self._unwatch(self._woke)
            parts, enough = self._read()
            if enough or trio.current_time() >= self._deadline:
                return self._deliver(parts)
            release(parts)
            self._woke = self._watch()

    def _read(self) -> tuple[list[FetchedPartition], bool]:
        """Every partition's answer now, and whether that is enough to answer with."""
        out = []
        budget = self._max_bytes
        total = 0
        errored = False
        for target in self._targets:
            spent = budget <= 0 and total > 0
            part = self._read_one(target, 0 if spent else max(1, min(target.max_bytes, budget)))
            total += part.size
            budget -= part.size
            errored = errored or part.error is not None
            out.append(part)
        return out, total >= self._min_bytes or errored or self._stopping()

    def _read_one(self, target: FetchTarget, max_bytes: int) -> FetchedPartition:
        """One partition's whole batches from ``target.offset`` (none when ``max_bytes`` is 0)."""
        try:
            partition = self._topics.partition(target.topic, target.partition, target.topic_id)
            if not max_bytes:
                return FetchedPartition(
                    target.topic, target.partition, high_watermark=partition.high_watermark,
                    log_start_offset=partition.log_start_offset, next_offset=target.offset,
                )
            read = partition.read(target.offset, max_bytes, partition.high_watermark)
        except OffsetOutOfRangeError as exc:  # with the bounds, so the client can reset
            return FetchedPartition(
                target.topic, target.partition, exc, high_watermark=partition.high_watermark,
                log_start_offset=partition.log_start_offset,
            )
        except ApiError as exc:
            return FetchedPartition(target.topic, target.partition, exc)
        except OSError as exc:  # e.g. no descriptor left to open an older segment with
            return FetchedPartition(target.topic, target.partition, StorageError(
                f"cannot read {target.topic}[{target.partition}]: {exc.strerror or exc}"))
        slices = read.slices
        return FetchedPartition(
            target.topic, target.partition, None, slices, partition.high_watermark,
            partition.log_start_offset, read.next_offset, _size(slices),
        )

    def _deliver(self, parts: list[FetchedPartition]) -> list[FetchedPartition]:
        """The final answer: count what goes out."""
        for target, part in zip(self._targets, parts, strict=True):
            if part.size:
                partition = self._topics.find(target.topic, target.partition)
                if partition is not None:
                    stats = partition.stats
                    stats.fetches += 1
                    stats.bytes_out += part.size
                    stats.offsets_out += part.next_offset - target.offset
        return parts

    def _watch(self) -> trio.Event:
        """An event set by the next append to (or deletion of) any requested partition."""
        woke = trio.Event()
        for partition in self._partitions():
            partition.watch(woke)
        return woke

    def _unwatch(self, woke: trio.Event) -> None:
        for partition in self._partitions():
            partition.unwatch(woke)

    def _partitions(self) -> list[Partition]:
        found = (self._topics.find(t.topic, t.partition) for t in self._targets)
        return [partition for partition in found if partition is not None]


def _size(slices: Sequence[FileSlice | bytes]) -> int:
    return sum(piece.length if isinstance(piece, FileSlice) else len(piece) for piece in slices)
