"""What the producer sends next and what it does with the answers, sans-IO.

Shared by the trio and the blocking producers; they only move the requests and responses.

Ordering and idempotence invariants:

* a produce request carries at most ONE batch per partition, and at most ``max_in_flight``
  (<= 5) requests are outstanding, so at most 5 batches per partition are unacknowledged --
  exactly the window the broker remembers for deduplication;
* sequence numbers are assigned when a batch is first sent and never change afterwards, so a
  retry resends the same bytes and the broker answers a duplicate with its original offsets;
* when a batch fails retriably its partition is *muted*: nothing new is sent for it until
  every outstanding batch of the partition has answered, then the failed ones are requeued at
  the front in sequence order. So retries never reorder records.
* a batch that fails for good (not retriable, retries or delivery time exhausted) leaves a
  hole in the sequence; the batches after it (rejected as out of order by the broker, since
  the hole was never written) are renumbered from the hole before they are retried.

Topic incarnations (``reset_topic``): a batch is sent, and resent, to the incarnation of its
topic it first went to (``topic_id`` in the request), whose sequence numbers it carries. An
error that a deleted or recreated topic explains (``TOPIC_CHANGE_ERRORS``) marks the topic
*stale*: nothing more is sent for it until the I/O layer has fetched its metadata and called
``reset_topic``. A new incarnation starts its partitions' sequences at 0; what was sent to the
old one fails with ``UnknownTopicIdError`` (it is never resent to the new one).
"""

from __future__ import annotations

from collections import deque

from sluice.client.accumulator import Accumulator, ProducerBatch
from sluice.client.errors import DeliveryTimeoutError, is_retriable
from sluice.protocol import messages as m
from sluice.protocol.batch import NO_SEQUENCE
from sluice.protocol.errors import (
    OutOfOrderSequenceError,
    UnknownProducerIdError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
SEQUENCE_WRAP = 2**31
ACKS = {0: 0, 1: 1, -1: -1, "all": -1, "1": 1, "0": 0, "-1": -1}
# Errors a topic deleted (and maybe created again) under the producer explains.
TOPIC_CHANGE_ERRORS = (
    UnknownTopicOrPartitionError, UnknownTopicIdError, OutOfOrderSequenceError, UnknownProducerIdError,
)


def parse_acks(acks) -> int:
    try:
        return ACKS[acks]
    except (KeyError, TypeError):
        raise ValueError(f"acks must be 0, 1, 'all' or -1, got {acks!r}") from None


class SendState:
    """Sequencing, in-flight bookkeeping and retry decisions for one producer."""

    def __init__(
        self,
        accumulator: Accumulator,
        *,
        acks: int,
        idempotent: bool,
        retries: int,
        delivery_timeout_s: float,
        request_timeout_ms: int,
    ) -> None:
        self.acc = accumulator
        self.acks = acks
        self.idempotent = idempotent
        self.retries = retries
        self.delivery_timeout_s = delivery_timeout_s
        self.request_timeout_ms = request_timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        self.next_sequence: dict[tuple[str, int], int] = {}
        self.inflight: dict[tuple[str, int], deque[ProducerBatch]] = {}
        self.retrying: dict[tuple[str, int], list[ProducerBatch]] = {}
        self.renumber_from: dict[tuple[str, int], int] = {}
        self.completed: list[ProducerBatch] = []  # finished since the I/O layer last looked
        # Topic incarnations: the id each topic's new batches go to (None: deleted), and the
        # topics held back until ``reset_topic`` brings fresh metadata.
        self.topic_ids: dict[str, str | None] = {}
        self.stale_topics: set[str] = set()

    def next_request(self, now: float) -> tuple[m.ProduceRequest, list[ProducerBatch]] | None:
        """The next produce request (one batch per unmuted partition), or None."""
        batches: list[ProducerBatch] = []
        parts: list[m.ProducePartition] = []
        total = 0
        for tp, queue in self.acc.ready.items():
            if tp in self.retrying or tp[0] in self.stale_topics:
                continue
            while queue and queue[0].base_sequence == NO_SEQUENCE and queue[0].attempts == 0 and (
                now - queue[0].created > self.delivery_timeout_s
            ):
                self._finish(queue.popleft(), error=DeliveryTimeoutError(
                    f"batch for {tp[0]}[{tp[1]}] not sent within the delivery timeout"))
            if not queue or (batches and total + queue[0].size > MAX_REQUEST_BYTES):
                continue
            batch = queue.popleft()
            if not batch.attempts:
                batch.topic_id = self.topic_ids.get(tp[0]) or ""
            if self.idempotent and batch.base_sequence == NO_SEQUENCE:
                seq = self.next_sequence.get(tp, 0)
                batch.base_sequence = seq
                self.next_sequence[tp] = (seq + len(batch)) % SEQUENCE_WRAP
            data = batch.encode(self.producer_id, self.producer_epoch)
            batch.attempts += 1
            total += len(data)
            batches.append(batch)
            parts.append(m.ProducePartition(
                topic=tp[0], partition=tp[1], records=data, topic_id=batch.topic_id))
            if self.acks:
                self.inflight.setdefault(tp, deque()).append(batch)
        if not batches:
            return None
        request = m.ProduceRequest(
            acks=self.acks, timeout_ms=self.request_timeout_ms, partitions=parts
        )
        if not self.acks:  # nobody will answer: delivered as soon as it is written
            for batch in batches:
                self._finish(batch)
        return request, batches

    def on_response(self, batches: list[ProducerBatch], response: m.ProduceResponse) -> None:
        results = response.partitions
        if response.error or len(results) != len(batches):
            error = error_for_code(response.error or 1, response.message or "bad produce response")
            self.on_failure(batches, error)
            return
        for batch, result in zip(batches, results, strict=True):
            if not result.error:
                self._forget(batch)
                self._finish(batch, result.base_offset)
            else:
                self._failed(batch, error_for_code(result.error, result.message))
        self._release_retries()

    def on_failure(self, batches: list[ProducerBatch], error: BaseException) -> None:
        """The whole request failed (connection lost, top-level error)."""
        for batch in batches:
            self._failed(batch, error)
        self._release_retries()

    def _failed(self, batch: ProducerBatch, error: BaseException) -> None:
        tp = (batch.topic, batch.partition)
        self._forget(batch)
        if self.topic_ids.get(batch.topic, batch.topic_id) != batch.topic_id:
            self._finish(batch, error=_sent_to_deleted_topic(batch, error))
            return
        muted = tp in self.retrying
        retriable = is_retriable(error) or (muted and isinstance(error, OutOfOrderSequenceError))
        in_time = self.acc.clock() - batch.created < self.delivery_timeout_s
        if retriable and batch.attempts <= self.retries and in_time:
            self.retrying.setdefault(tp, []).append(batch)
            return
        if isinstance(error, TOPIC_CHANGE_ERRORS):
            self.stale_topics.add(batch.topic)
        self._finish(batch, error=error)
        if self.idempotent and batch.base_sequence != NO_SEQUENCE:
            hole = self.renumber_from.get(tp, batch.base_sequence)
            self.renumber_from[tp] = min(hole, batch.base_sequence)
            self.retrying.setdefault(tp, [])

    def _forget(self, batch: ProducerBatch) -> None:
        queue = self.inflight.get((batch.topic, batch.partition))
        if queue:
            if queue[0] is batch:
                queue.popleft()
            else:
                queue.remove(batch)

    def _release_retries(self) -> None:
        """Requeue the failed batches of partitions with nothing left in flight."""
        for tp in [tp for tp in self.retrying if not self.inflight.get(tp)]:
            batches = sorted(self.retrying.pop(tp), key=lambda b: b.base_sequence)
            hole = self.renumber_from.pop(tp, None)
            if hole is not None:
                seq = hole
                for batch in batches:
                    if batch.base_sequence > hole:
                        batch.data = None  # never written: safe to re-encode renumbered
                        batch.base_sequence = seq
                        seq = (seq + len(batch)) % SEQUENCE_WRAP
                self.next_sequence[tp] = seq
            queue = self.acc.ready.setdefault(tp, deque())
            queue.extendleft(reversed(batches))

    def _finish(self, batch: ProducerBatch, base_offset: int = -1, error=None) -> None:
        self.acc.finish(batch, base_offset, error)
        self.completed.append(batch)

    def reset_topic(self, topic: str, topic_id: str | None, partitions: int = 0) -> None:
        """Fresh metadata for ``topic`` (``topic_id`` None: it no longer exists).

        The same incarnation: its partitions may send again. Another one (the topic was
        deleted, and maybe created again): sequence numbers start over; batches already sent
        to the old incarnation fail (those in flight when their answer comes); unsent batches
        fail if the new incarnation lacks their partition, and otherwise go to it.
        """
        self.stale_topics.discard(topic)
        known, old = topic in self.topic_ids, self.topic_ids.get(topic)
        self.topic_ids[topic] = topic_id
        if not known or old == topic_id:
            return
        for tp, batch in list(self.acc.open.items()):
            if tp[0] == topic and tp[1] >= partitions:
                self.acc.seal(batch)
        for tp in {*self.acc.ready, *self.retrying, *self.next_sequence, *self.renumber_from}:
            if tp[0] != topic:
                continue
            self.next_sequence.pop(tp, None)
            self.renumber_from.pop(tp, None)
            failed = self.retrying.pop(tp, [])
            queue = self.acc.ready.get(tp, deque())
            keep = [b for b in queue if not b.attempts and tp[1] < partitions]
            failed += [b for b in queue if b.attempts or tp[1] >= partitions]
            queue.clear()
            queue.extend(keep)
            for batch in failed:
                self._finish(batch, error=_sent_to_deleted_topic(batch, None) if batch.attempts
                             else _partition_gone(batch, topic_id, partitions))

    def fail_all(self, error: BaseException) -> None:
        """Fail every batch not yet delivered (the producer is giving up)."""
        self.acc.seal_all()
        for queue in (*self.acc.ready.values(), *self.inflight.values(), *self.retrying.values()):
            for batch in queue:
                self._finish(batch, error=error)
            queue.clear()


def _sent_to_deleted_topic(batch: ProducerBatch, error: BaseException | None) -> BaseException:
    """The error of a batch sent to an incarnation of its topic that was deleted since."""
    if isinstance(error, (UnknownTopicIdError, UnknownTopicOrPartitionError)):
        return error  # the broker's own words
    return UnknownTopicIdError(
        f"topic {batch.topic!r} was deleted while a batch for its partition {batch.partition} "
        f"was in flight to it; it is not resent to a topic created since under that name"
        + (f" (last error: {error})" if error is not None else "")
    )


def _partition_gone(batch: ProducerBatch, topic_id: str | None, partitions: int) -> BaseException:
    """The error of an unsent batch whose partition the topic no longer has."""
    if topic_id is None:
        return UnknownTopicOrPartitionError(f"topic {batch.topic!r} was deleted")
    return UnknownTopicOrPartitionError(
        f"{batch.topic}[{batch.partition}] no longer exists: the topic was created again "
        f"with {partitions} partition(s)")
