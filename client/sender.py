"""What the producer sends next and what it does with the answers, sans-IO.

Shared by the trio and the blocking producers; they only move the requests and responses, and
wait until the times this state names (``expire``'s return value, ``wake_time``).

Ordering and idempotence invariants:

* a produce request carries at most ONE batch per partition, and at most ``max_in_flight``
  (<= 5) requests are outstanding, so at most 5 batches per partition are unacknowledged --
  exactly the window the broker remembers for deduplication;
* sequence numbers are assigned when a batch is first sent and, within a producer epoch, never
  change afterwards: a retry resends the same bytes and the broker answers a duplicate with its
  original offsets;
* when a batch fails retriably its partition is *muted*: nothing new is sent for it until
  every outstanding batch of the partition has answered, then the failed ones are requeued at
  the front in sequence order, to go after a backoff (``retry_backoff_s``, doubled per attempt
  up to ``retry_backoff_max_s``). So retries never reorder records, and never storm;
* a sequence number is never reused for other data. A numbered batch that is given up (not
  retriable, out of retries or out of delivery time) may be in the log: its request may have
  been carried out unanswered, and even an error answer can come after the append (an
  ``acks=all`` flush that failed or timed out). Renumbering later batches into its range could
  make the broker take new data for a retry of it, acknowledge it and keep the old. So a new
  epoch becomes *due* instead (``epoch_due``): nothing more is sent until every request in flight
  has answered, then it asks for a new epoch (``InitProducerId``; the broker wants a newer
  epoch to start at sequence 0) and every partition starts again at 0, as in Kafka's KIP-360.
  Of the numbered batches still pending then, those no attempt of which can have been written
  (every attempt was refused by an answer) are renumbered in the new epoch; the others fail
  with the error that left their outcome unknown, since resending them could store them twice;
* a record's whole life is bounded by ``delivery_timeout_s``: ``expire`` fails the batches that
  outlive it wherever they are (open, queued, muted or in flight), so every delivery resolves
  in time whatever the broker does.

Topic incarnations (``reset_topic``): a batch is sent, and resent, to the incarnation of its
topic it first went to (``topic_id`` in the request), whose sequence numbers it carries (a
batch renumbered in a new epoch keeps it too). An error that a deleted or recreated topic
explains (``TOPIC_CHANGE_ERRORS``) marks the topic *stale*: nothing more is sent for it until
the I/O layer has fetched its metadata and called ``reset_topic``. A new incarnation starts its
partitions' sequences at 0 in the current epoch (its log knows nothing of this producer); what
was sent to the old one fails with ``UnknownTopicIdError`` (it is never resent to the new one)
and needs no new epoch, since its sequence numbers died with the old log. So a numbered batch
given up while its topic is stale leaves a hole that is judged when the metadata comes
(``held_holes``): the same incarnation makes a new epoch due, another one does not.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from sluice.client.accumulator import Accumulator, ProducerBatch
from sluice.client.errors import DeliveryTimeoutError, is_retriable
from sluice.protocol import messages as m
from sluice.protocol.batch import NO_SEQUENCE
from sluice.protocol.errors import (
    NotLeaderError,
    OutOfOrderSequenceError,
    RequestTimedOutError,
    StorageError,
    UnknownProducerIdError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
SEQUENCE_WRAP = 2**31
EXPIRY_STEP_S = 0.05  # batches may expire this much late, so expiry scans stay few
MAX_EPOCH = 2**15 - 1  # an i16 on the wire: past it the producer asks for a new id
ACKS = {0: 0, 1: 1, -1: -1, "all": -1, "1": 1, "0": 0, "-1": -1}
# Errors an acks=all answer can carry although the batch was appended (its flush failed or
# timed out): such an answer does not prove the batch absent from the log.
AFTER_APPEND_ERRORS = (RequestTimedOutError, StorageError)
# Errors that say the request went to a broker that does not lead the partition (now).
ROUTING_ERRORS = (NotLeaderError,)
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
    """Sequencing, in-flight bookkeeping, retry, expiry, epoch and topic-incarnation decisions
    for one producer (their invariants: the module's docstring)."""

    def __init__(
        self,
        accumulator: Accumulator,
        *,
        acks: int,
        idempotent: bool,
        retries: int,
        delivery_timeout_s: float,
        request_timeout_ms: int,
        retry_backoff_s: float = 0.1,
        retry_backoff_max_s: float = 1.0,
    ) -> None:
        self.acc = accumulator
        self.acks = acks
        self.idempotent = idempotent
        self.retries = retries
        self.delivery_timeout_s = delivery_timeout_s
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.producer_id = -1
        self.producer_epoch = -1
        # No id yet, or a numbered batch was given up: nothing is sent before a new epoch.
        self.epoch_due = idempotent
        self.next_sequence: dict[tuple[str, int], int] = {}
        self.inflight: dict[tuple[str, int], deque[ProducerBatch]] = {}
        self.retrying: dict[tuple[str, int], list[ProducerBatch]] = {}
        self.retry_at: dict[tuple[str, int], float] = {}  # requeued retries wait till then
        # The error that started a partition's trouble, to report for the batches refused
        # only because they came after it (out of order), instead of their refusal.
        self.cause: dict[tuple[str, int], BaseException] = {}
        self.completed: list[ProducerBatch] = []  # finished since the I/O layer last looked
        # Topic incarnations: the id each topic's new batches go to (None: deleted), the
        # topics held back until ``reset_topic`` brings fresh metadata, and the stale topics
        # a numbered batch was given up for, whose need of a new epoch that metadata decides.
        self.topic_ids: dict[str, str | None] = {}
        self.stale_topics: set[str] = set()
        self.held_holes: set[str] = set()
        # Topics an answer said another broker leads now: the I/O layer looks their leaders
        # up again (their failed batches wait in ``retrying`` meanwhile).
        self.misrouted: set[str] = set()
        self._id_retry_at = 0.0
        self._id_failures = 0
        self._expiry_due = 0.0

    def backoff(self, attempts: int) -> float:
        """The wait before attempt ``attempts + 1``: doubling from ``retry_backoff_s``."""
        return min(self.retry_backoff_s * 2 ** max(0, attempts - 1), self.retry_backoff_max_s)

    # -- producer id and epoch ---------------------------------------------------------------

    def _renewal_waits(self) -> bool:
        """Whether a due id or epoch request must wait for something other than time:
        answers to requests in flight, or (for a new epoch) records to send."""
        return any(self.inflight.values()) or (
            self.producer_id >= 0 and not any(self.acc.ready.values())
        )

    def producer_id_request(self, now: float) -> m.InitProducerIdRequest | None:
        """The ``InitProducerId`` request to send now, if the producer needs an id (at start)
        or a new epoch (once nothing is in flight, when there is something to send); else
        None."""
        if not self.epoch_due:
            return None
        if now < self._id_retry_at or self._renewal_waits():
            return None
        if self.producer_id < 0 or self.producer_epoch >= MAX_EPOCH:
            return m.InitProducerIdRequest()
        return m.InitProducerIdRequest(
            producer_id=self.producer_id, producer_epoch=self.producer_epoch
        )

    def on_producer_id(self, response: m.InitProducerIdResponse) -> None:
        renewed = self.producer_id >= 0
        self.producer_id = response.producer_id
        self.producer_epoch = response.producer_epoch
        self._id_failures = 0
        self.epoch_due = False
        if renewed:
            self._restart_sequences()

    def on_producer_id_failed(self, now: float) -> None:
        """The ``InitProducerId`` request failed: ask again after a backoff."""
        self._id_failures += 1
        self._id_retry_at = now + self.backoff(self._id_failures)

    def _restart_sequences(self) -> None:
        """A new epoch: every partition starts at sequence 0 (nothing is in flight), so no
        hole is left to judge. A batch renumbered here keeps the topic incarnation it was
        first sent to (``reset_topic`` fails it if that one is gone)."""
        self.next_sequence.clear()
        self.cause.clear()
        self.held_holes.clear()
        for tp, queue in self.acc.ready.items():
            kept: deque[ProducerBatch] = deque()
            for batch in queue:
                if batch.base_sequence == NO_SEQUENCE:
                    kept.append(batch)
                elif batch.maybe_written:  # may be in the log: never sent again
                    self._finish(batch, error=batch.last_error)
                else:  # every attempt was refused: numbered afresh when sent
                    batch.base_sequence = NO_SEQUENCE
                    batch.data = None
                    kept.append(batch)
            self.acc.ready[tp] = kept

    # -- sending ----------------------------------------------------------------------------

    def next_request(
        self, now: float, node_of: Callable[[tuple[str, int]], int | None] | None = None
    ) -> tuple[m.ProduceRequest, list[ProducerBatch]] | None:
        """The next produce request (one batch per unmuted partition), or None.

        With ``node_of`` (the broker a partition's batch may go to now, or None: not now),
        the request is for one broker: the first partition with something to send picks it.
        """
        if self.epoch_due:
            return None
        batches: list[ProducerBatch] = []
        parts: list[m.ProducePartition] = []
        total = 0
        node = None
        backoff, stale = self.retry_at, self.stale_topics
        for tp, queue in self.acc.ready.items():
            if backoff and tp in backoff:
                if now < backoff[tp]:
                    continue
                del backoff[tp]
            if not queue or tp in self.retrying or tp[0] in stale:
                continue
            if batches and total + queue[0].size > MAX_REQUEST_BYTES:
                continue
            if node_of is not None:
                target = node_of(tp)
                if target is None or (batches and target != node):
                    continue
                node = target
            batch = queue.popleft()
            if not batch.attempts:  # first send: to the incarnation known now, for good
                batch.topic_id = self.topic_ids.get(tp[0]) or ""
            data = batch.data if batch.data is not None else self._encode(batch, tp)
            if data is None:
                continue
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

    def _encode(self, batch: ProducerBatch, tp: tuple[str, int]) -> bytearray | None:
        """Number and encode a batch on its first send; None (and the batch failed, its
        sequence not taken) if its records cannot be encoded."""
        seq = self.next_sequence.get(tp, 0) if self.idempotent else NO_SEQUENCE
        batch.base_sequence = seq
        try:
            data = batch.encode(self.producer_id, self.producer_epoch)
        except Exception as exc:  # e.g. a value msgpack cannot pack: only this batch fails
            batch.base_sequence = NO_SEQUENCE
            self._finish(batch, error=exc)
            return None
        if self.idempotent:
            self.next_sequence[tp] = (seq + len(batch)) % SEQUENCE_WRAP
        return data

    # -- answers ----------------------------------------------------------------------------

    def on_response(self, batches: list[ProducerBatch], response: m.ProduceResponse) -> None:
        results = response.partitions
        if response.error or len(results) != len(batches):
            error = error_for_code(response.error or 1, response.message or "bad produce response")
            self.on_failure(batches, error)
            return
        for batch, result in zip(batches, results, strict=True):
            self._forget(batch)
            if batch.done:  # expired while in flight: its delivery has its answer already
                continue
            if not result.error:
                self._finish(batch, result.base_offset)
                if self.cause:
                    self.cause.pop((batch.topic, batch.partition), None)
                continue
            error = error_for_code(result.error, result.message)
            if self.acks == -1 and isinstance(error, AFTER_APPEND_ERRORS):
                batch.maybe_written = True
            self._failed(batch, error)
        self._release_retries()

    def on_failure(self, batches: list[ProducerBatch], error: BaseException) -> None:
        """The whole request failed (no answer: connection lost or timed out; or a top-level
        error): whether its batches were written is unknown."""
        for batch in batches:
            self._forget(batch)
            if not batch.done:
                batch.maybe_written = True
                self._failed(batch, error)
        self._release_retries()

    def _failed(self, batch: ProducerBatch, error: BaseException) -> None:
        tp = (batch.topic, batch.partition)
        if self._sent_to_old_topic(batch):  # never resent (and no new epoch: see _give_up)
            self._finish(batch, error=_sent_to_deleted_topic(batch, error))
            return
        hole_due = self.epoch_due or batch.topic in self.held_holes
        if isinstance(error, OutOfOrderSequenceError) and (tp in self.retrying or hole_due):
            # Refused only for coming after a failed batch: it goes again (renumbered in a new
            # epoch if need be), and if it runs out of time the first failure is the reason.
            error = self.cause.get(tp, error)
            retriable = True
        else:
            self.cause[tp] = error
            retriable = is_retriable(error)
            if isinstance(error, ROUTING_ERRORS):
                self.misrouted.add(batch.topic)
        batch.last_error = error
        left = self.delivery_timeout_s - (self.acc.clock() - batch.created)
        if retriable and batch.attempts <= self.retries and self.backoff(batch.attempts) < left:
            self.retrying.setdefault(tp, []).append(batch)
            return
        if isinstance(error, TOPIC_CHANGE_ERRORS):
            self.stale_topics.add(batch.topic)
        self._give_up(batch, error)

    def _give_up(self, batch: ProducerBatch, error: BaseException) -> None:
        """Fail a batch for good. If it was numbered, its sequence numbers must not be used
        again: a new epoch is due -- or, for a stale topic, due if ``reset_topic`` finds the
        same incarnation."""
        self._finish(batch, error=error)
        if batch.base_sequence == NO_SEQUENCE or self._sent_to_old_topic(batch):
            return  # no number taken, or numbers of a log deleted since: nothing to protect
        if batch.topic in self.stale_topics:
            self.held_holes.add(batch.topic)
        else:
            self.epoch_due = True

    def _sent_to_old_topic(self, batch: ProducerBatch) -> bool:
        """Whether the batch went to an incarnation of its topic that was deleted since."""
        return self.topic_ids.get(batch.topic, batch.topic_id) != batch.topic_id

    def _forget(self, batch: ProducerBatch) -> None:
        queue = self.inflight.get((batch.topic, batch.partition))
        if queue:
            if queue[0] is batch:
                queue.popleft()
            elif batch in queue:
                queue.remove(batch)

    def _release_retries(self) -> None:
        """Requeue the failed batches of partitions with nothing left in flight."""
        for tp in [tp for tp in self.retrying if not self.inflight.get(tp)]:
            batches = sorted(self.retrying.pop(tp), key=lambda b: b.base_sequence)
            if not batches:
                continue
            self.acc.ready.setdefault(tp, deque()).extendleft(reversed(batches))
            self.retry_at[tp] = self.acc.clock() + self.backoff(batches[0].attempts)

    def _finish(self, batch: ProducerBatch, base_offset: int = -1, error=None) -> None:
        if not batch.done:
            self.acc.finish(batch, base_offset, error)
            self.completed.append(batch)

    # -- time -------------------------------------------------------------------------------

    def wake_time(self) -> float:
        """When a driver with room for another request, waiting for answers, should stop
        waiting to send something: the end of a backoff; ``inf`` if only answers can help
        (a new epoch waits for every request in flight)."""
        if self.epoch_due:
            return math.inf if self._renewal_waits() else self._id_retry_at
        return min(self.retry_at.values(), default=math.inf)

    def expire(self, now: float) -> float:
        """Fail every batch older than the delivery timeout, wherever it is; returns when
        to call again (a call before then returns at once: nothing can have expired)."""
        if now < self._expiry_due:
            return self._expiry_due
        limit = now - self.delivery_timeout_s
        oldest = now
        acc = self.acc
        for tp, batch in list(acc.open.items()):
            if batch.created <= limit:
                del acc.open[tp]
                self._expired(batch)
            else:
                oldest = min(oldest, batch.created)
        for queues in (acc.ready, self.retrying):
            for tp, queue in queues.items():
                if any(batch.created <= limit for batch in queue):
                    for batch in queue:
                        if batch.created <= limit:
                            self._expired(batch)
                    queue = queues[tp] = type(queue)(b for b in queue if not b.done)
                oldest = min(oldest, min((batch.created for batch in queue), default=now))
        for queue in self.inflight.values():  # they stay in flight until answered
            for batch in queue:
                if batch.done:
                    continue
                if batch.created <= limit:
                    batch.maybe_written = True  # sent, no answer yet
                    self._expired(batch)
                else:
                    oldest = min(oldest, batch.created)
        # Not sooner than EXPIRY_STEP_S from now: under a freeze, batches expire a step at a
        # time, instead of a scan of everything pending per batch.
        self._expiry_due = max(oldest + self.delivery_timeout_s, now + EXPIRY_STEP_S)
        return self._expiry_due

    def _expired(self, batch: ProducerBatch) -> None:
        why = f"; last error: {batch.last_error}" if batch.last_error is not None else ""
        sent = "; it was sent, so it may have been written" if batch.maybe_written else ""
        error = DeliveryTimeoutError(
            f"batch of {len(batch)} record(s) for {batch.topic}[{batch.partition}] not "
            f"acknowledged within the delivery timeout ({self.delivery_timeout_s:g} s){why}{sent}"
        )
        error.__cause__ = batch.last_error
        self._give_up(batch, error)

    def reset_topic(self, topic: str, topic_id: str | None, partitions: int = 0) -> None:
        """Fresh metadata for ``topic`` (``topic_id`` None: it no longer exists).

        The same incarnation: its partitions may send again, and a hole given up while the
        topic was stale makes a new epoch due. Another one (the topic was deleted, and maybe
        created again): its sequence numbers start over at 0 in the current epoch; batches
        already sent to the old incarnation fail (those in flight when their answer comes),
        with no new epoch; unsent batches fail if the new incarnation lacks their partition,
        and otherwise go to it.
        """
        self.stale_topics.discard(topic)
        known, old = topic in self.topic_ids, self.topic_ids.get(topic)
        self.topic_ids[topic] = topic_id
        if topic in self.held_holes:
            self.held_holes.discard(topic)
            if old == topic_id:  # the same log: the hole is real
                self.epoch_due = True
        if not known or old == topic_id:
            return
        for tp, batch in list(self.acc.open.items()):
            if tp[0] == topic and tp[1] >= partitions:
                self.acc.seal(batch)
        for tp in {*self.acc.ready, *self.retrying, *self.next_sequence, *self.retry_at, *self.cause}:
            if tp[0] != topic:
                continue
            self.next_sequence.pop(tp, None)  # the new log starts at 0, in this epoch
            self.retry_at.pop(tp, None)
            self.cause.pop(tp, None)
            failed = self.retrying.pop(tp, [])
            queue = self.acc.ready.get(tp, deque())
            keep = [b for b in queue if not b.attempts and tp[1] < partitions]
            failed += [b for b in queue if b.attempts or tp[1] >= partitions]
            queue.clear()
            queue.extend(keep)
            for batch in failed:
                self._finish(batch, error=_sent_to_deleted_topic(batch, None) if batch.attempts
                             else _partition_gone(batch, topic_id, partitions))

    def fail_all(
        self, error: BaseException, where: Callable[[tuple[str, int]], bool] | None = None
    ) -> None:
        """Fail every batch not yet delivered (the producer is giving up on them); with
        ``where``, those of the partitions it is true for."""
        for tp, batch in list(self.acc.open.items()):
            if where is None or where(tp):
                self.acc.seal(batch)
        for queues in (self.acc.ready, self.inflight, self.retrying):
            for tp, queue in queues.items():
                if where is not None and not where(tp):
                    continue
                for batch in queue:
                    if not batch.done:
                        self._give_up(batch, error)
                queue.clear()
                self.retry_at.pop(tp, None)
        if self.held_holes:  # no metadata will judge them now: assume the worst
            self.held_holes.clear()
            self.epoch_due = True


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
