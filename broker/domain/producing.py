"""``Produce``: one produce request's appends and its ``acks`` -- whatever protocol carried it.

Appends happen in the order of the request's partitions. While each can run inline it does
(``append_inline``); from the first that must wait its turn or be written off the event loop
(a large one, or a partition busy with one), the rest run in ``append_rest``, which the
caller awaits before it reads its connection's next request -- so appends keep the order in
which requests arrived. ``acks=all`` then waits for every append to be committed
(``wait_committed``, bounded by the request's timeout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import trio
from sluice.broker.domain.partition import Appended, Partition
from sluice.broker.domain.topics import TopicRegistry
from sluice.broker.storage import ValidatedBatches
from sluice.protocol.errors import ApiError, RequestTimedOutError

ACKS_NONE = 0
ACKS_ALL = -1


class ProduceTarget(NamedTuple):
    """One partition's share of a produce request: its body of batches, not yet checked.

    (NamedTuples, here and below: built per request and partition, several times cheaper
    than frozen dataclasses, as immutable.)"""

    topic: str
    partition: int
    records: bytearray | memoryview
    topic_id: str = ""  # the incarnation meant ("": whichever exists)


class ProduceResult(NamedTuple):
    """Where one partition's batches went, or why they did not."""

    topic: str
    partition: int
    error: ApiError | None = None
    base_offset: int = -1
    log_start_offset: int = -1


class Produce:
    """One request's appends, in order; ``results`` has one entry per target, in order."""

    def __init__(self, topics: TopicRegistry, targets: Sequence[ProduceTarget], acks: int) -> None:
        self._topics = topics
        self._targets = targets
        self.acks = acks
        self.results: list[ProduceResult] = []
        self._next = 0  # the next target to append
        self._ready: tuple[Partition, ValidatedBatches] | None = None  # validated, not appended
        self._to_commit: list[tuple[int, Partition, int]] = []  # (result slot, partition, last)

    def append_inline(self) -> bool:
        """Append, in order, the targets that may run inline; True if that was all of them,
        False if the rest must go through ``append_rest``."""
        while self._next < len(self._targets):
            target = self._targets[self._next]
            validated = self._validate(target)
            if validated is not None and not validated[0].can_append_now(validated[1]):
                self._ready = validated
                return False
            self._next += 1
            if validated is None:
                continue
            partition, batches = validated
            try:
                appended = partition.append(batches)
            except ApiError as exc:
                self._failed(target, exc)
                continue
            self._appended(target, partition, appended)
        return True

    async def append_rest(self) -> None:
        """The appends ``append_inline`` left, each in its partition's turn."""
        while self._next < len(self._targets):
            target = self._targets[self._next]
            self._next += 1
            validated, self._ready = self._ready or self._validate(target), None
            if validated is not None:
                partition, batches = validated
                try:
                    appended = await partition.append_in_turn(batches)
                except ApiError as exc:
                    self._failed(target, exc)
                    continue
                self._appended(target, partition, appended)

    def _validate(self, target: ProduceTarget) -> tuple[Partition, ValidatedBatches] | None:
        """The partition and its validated batches, or None (the error result recorded)."""
        try:
            partition = self._topics.partition(target.topic, target.partition, target.topic_id)
            return partition, partition.validate(target.records)
        except ApiError as exc:
            self._failed(target, exc)
            return None

    def _failed(self, target: ProduceTarget, exc: ApiError) -> None:
        self.results.append(ProduceResult(target.topic, target.partition, error=exc))

    def _appended(self, target: ProduceTarget, partition: Partition, appended: Appended) -> None:
        self.results.append(ProduceResult(
            target.topic, target.partition, base_offset=appended.base_offset,
            log_start_offset=partition.log_start_offset,
        ))
        if self.acks == ACKS_ALL:
            self._to_commit.append((len(self.results) - 1, partition, appended.last_offset))

    @property
    def must_wait(self) -> bool:
        """``acks=all`` and something was appended: ``wait_committed`` before answering."""
        return bool(self._to_commit)

    async def wait_committed(self, timeout_ms: int) -> None:
        """Wait until every append is committed, for at most ``timeout_ms``; an append that
        could not be committed gets its error in ``results`` (``RequestTimedOutError`` if the
        time ran out first)."""
        with trio.move_on_after(timeout_ms / 1000) as scope:
            for slot, partition, last_offset in self._to_commit:
                try:
                    await partition.wait_committed(last_offset)
                except ApiError as exc:
                    self._replace(slot, exc)
        if scope.cancelled_caught:
            timeout = RequestTimedOutError(f"not flushed within {timeout_ms} ms")
            for slot, partition, last_offset in self._to_commit:
                if partition.committed_offset <= last_offset:
                    self._replace(slot, timeout)

    def _replace(self, slot: int, exc: ApiError) -> None:
        result = self.results[slot]
        self.results[slot] = ProduceResult(result.topic, result.partition, error=exc)
