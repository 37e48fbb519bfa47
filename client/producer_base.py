"""The producer engine, with no I/O (``ProducerBase``), and the bulk-send helpers both producers
use."""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Callable
from functools import partial
from itertools import repeat
from operator import itemgetter, mod

from crc32c import crc32c
from sluice.client import admin_ops as ops
from sluice.client.accumulator import Accumulator, ProducerBatch
from sluice.client.bootstrap import timeout_s
from sluice.client.errors import (
    SluiceError,
    UnknownTopicOrPartitionError,
    is_retriable,
    raise_for_error,
)
from sluice.client.network import Call, Network
from sluice.client.partitioner import StickyPartitioner, partition_for_key
from sluice.client.procedure import CONNECT
from sluice.client.records import RecordMetadata
from sluice.client.routing import TopicMeta
from sluice.client.sender import SendState, parse_acks
from sluice.protocol import messages as m
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.compression import codec_for
from sluice.protocol.errors import error_for_code

MAX_IN_FLIGHT_IDEMPOTENT = 5
MAX_TIMESTAMP = 2**63 - 1  # an i64 in the batch header
BULK_STEP = 4096  # send_batch records appended between two checks for buffer space
RETRY_BACKOFF_S = 0.1  # between two lookups of the same topics' metadata
_key, _value, _headers = itemgetter(0), itemgetter(1), itemgetter(2)


# Wall-clock time in ms: the timestamp of a record sent without one.
now_ms = wall_clock_ms


def check_config(acks, idempotent, max_in_flight: int) -> tuple[int, bool]:
    """Validated ``(acks, idempotent)``; idempotence needs acknowledgements."""
    acks = parse_acks(acks)
    if idempotent is None:
        idempotent = acks != 0
    if idempotent and acks == 0:
        raise ValueError("idempotent=True needs acks=1 or acks='all' (acks=0 gets no answers)")
    if idempotent and max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT:
        raise ValueError(f"idempotence allows at most {MAX_IN_FLIGHT_IDEMPOTENT} in flight")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    return acks, idempotent


def check_timestamp(timestamp) -> int:
    """A record timestamp given by the caller, checked before the record enters a batch:
    an ``int`` of milliseconds since the epoch, ``0 <= timestamp < 2**63``.

    ``TypeError`` for anything else (a float such as ``time.time() * 1000``, a bool) and
    ``ValueError`` out of range. Negative timestamps are refused, ``-1`` included (Kafka's
    "no timestamp"): pass ``timestamp=None`` for the current time. The broker refuses a batch
    holding a negative timestamp as a whole, so one bad record would fail its neighbours."""
    if type(timestamp) is not int:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise TypeError(
                "timestamp must be an int (milliseconds since the epoch) or None, not "
                f"{type(timestamp).__name__} {timestamp!r}"
            )
        timestamp = int(timestamp)
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(
            f"timestamp must be in 0..2**63-1 milliseconds since the epoch, not {timestamp}"
            + (" (use timestamp=None for the current time)" if timestamp < 0 else "")
        )
    return timestamp


def split_items(items: list) -> tuple[list | None, list, list | None]:
    """``send_batch`` items as columns ``(keys, values, headers)``; ``keys`` and ``headers``
    are None when the items are plain values. C-level unless 2- and 3-tuples are mixed."""
    n = len(items)
    tuples = list(map(type, items)).count(tuple)  # (lists and sets cost more per item)
    if not tuples:
        return None, items, None
    if tuples == n:
        lengths = list(map(len, items))
        if lengths.count(2) == n:
            return list(map(_key, items)), list(map(_value, items)), None
        if lengths.count(3) == n:
            return list(map(_key, items)), list(map(_value, items)), list(map(_headers, items))
    rows = list(map(_row, items))
    return list(map(_key, rows)), list(map(_value, rows)), list(map(_headers, rows))


def _row(item) -> tuple:
    if type(item) is not tuple:
        return None, item, None
    if len(item) == 3:
        return item
    if len(item) == 2:
        return (*item, None)
    raise ValueError(f"send_batch items are values or (key, value[, headers]), not {item!r}")


def partitions_for_keys(partitioner, keys: list, count: int) -> list[int]:
    """``partitioner(key, count)`` for every key; C-level for the default partitioner."""
    if partitioner is partition_for_key:
        return list(map(mod, map(crc32c, keys), repeat(count)))
    return list(map(partitioner, keys, repeat(count)))


def add_segments(segments: list, new: list) -> None:
    """Append ``(batch, start, count)`` segments, merging contiguous ones of a batch."""
    for segment in new:
        if segments:
            batch, start, count = segments[-1]
            if batch is segment[0] and start + count == segment[1]:
                segments[-1] = (batch, start, count + segment[2])
                continue
        segments.append(segment)


class BulkResult:
    """The records of one ``send_batch`` call: ``segments`` ``(batch, first index, count)``,
    at most one per batch, in append order; ``order[j]`` is the input position of the j-th
    appended record (None when appended in input order)."""

    __slots__ = ("segments", "order")

    def __init__(self, segments: list[tuple[ProducerBatch, int, int]], order=None) -> None:
        self.segments = segments
        self.order = order

    def __len__(self) -> int:
        return sum(count for _, _, count in self.segments)

    def done(self) -> bool:
        return all(batch.done for batch, _, _ in self.segments)

    def _input_order(self, appended: list) -> list:
        if self.order is None:
            return appended
        inverse = sorted(range(len(appended)), key=self.order.__getitem__)
        return list(map(appended.__getitem__, inverse))

    def _metadata(self) -> list[RecordMetadata]:
        """Every record's metadata in input order (all batches done; raises the error of the
        first failed batch)."""
        out: list[RecordMetadata] = []
        # A burst of ~10^5 tuples, none of them garbage: defer the collections it would
        # trigger (they cost several times the building itself).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for batch, start, count in self.segments:
                out += batch.metadata_range(start, count)
        finally:
            if collecting:
                gc.enable()
        return self._input_order(out)

    def _locations(self) -> tuple[list[ProducerBatch], list[int]]:
        """Every record's batch and index in it, in input order."""
        batches: list[ProducerBatch] = []
        indexes: list[int] = []
        for batch, start, count in self.segments:
            batches += repeat(batch, count)
            indexes += range(start, start + count)
        return self._input_order(batches), self._input_order(indexes)


class ProducerBase:
    """The producer engine, sans-IO: options, batching, routing each partition's batches to
    its leader, answers, retries, metadata lookups, epochs. The trio and the blocking
    ``Producer`` append records and wait in their own way; their driver runs ``tick`` and
    moves the bytes (``client.network``).

    What goes out when (``tick``): records join their partition's open batch until the batch
    is full or the sender drains it -- a batch lingers ``linger_ms``, and past that it still
    stays open while its partition has a batch in flight, so under load each round trip
    carries what came meanwhile (Kafka's accumulator: a batch closes when the sender takes
    it, not when its linger ends). A broker gets at most ``max_in_flight`` requests at once,
    each with at most one batch per partition it leads (``SendState``). An answer that says
    another broker leads the partition, or a lost connection, makes the producer look the
    topic's leaders up again before it sends more of it.

    ``clock`` is the monotonic clock batches linger by (trio's or ``time.monotonic``).
    ``compression``: None (default), "gzip", "snappy", "lz4" or "zstd"; each batch's records
    are compressed as a whole, as Kafka's producers do (consumers decompress, the broker
    stores the batch as sent).
    Time limits (README: "Time limits"): ``delivery_timeout_ms`` bounds a record's whole life;
    ``request_timeout_ms`` each answer; retries wait ``retry_backoff_ms`` doubling up to
    ``retry_backoff_max_ms``; a lost connection is reopened for ``reconnect_timeout_ms``.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        clock: Callable[[], float],
        acks=1,
        linger_ms: float = 5,
        batch_bytes: int = 1024 * 1024,
        buffer_bytes: int = 32 * 1024 * 1024,
        idempotent: bool | None = None,
        retries: int = 2**31 - 1,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: float = 100,
        retry_backoff_max_ms: float = 1000,
        reconnect_timeout_ms: int = 30_000,
        max_in_flight: int = 5,
        partitioner=partition_for_key,
        compression: str | None = None,
    ) -> None:
        acks, idempotent = check_config(acks, idempotent, max_in_flight)
        codec = codec_for(compression)
        self.request_timeout_s = timeout_s("request_timeout_ms", request_timeout_ms)
        self.reconnect_timeout_s = timeout_s("reconnect_timeout_ms", reconnect_timeout_ms, zero=True)
        backoff_s = timeout_s("retry_backoff_ms", retry_backoff_ms, zero=True)
        backoff_max_s = timeout_s("retry_backoff_max_ms", retry_backoff_max_ms, zero=True)
        if backoff_max_s < backoff_s:
            raise ValueError("retry_backoff_max_ms must be at least retry_backoff_ms")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.linger_s = linger_ms / 1000
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight
        self.partitioner = partitioner
        self._sticky = StickyPartitioner()
        self._acc = Accumulator(batch_bytes, clock, self._on_seal, codec)
        self._state = SendState(
            self._acc,
            acks=acks,
            idempotent=idempotent,
            retries=retries,
            delivery_timeout_s=timeout_s("delivery_timeout_ms", delivery_timeout_ms),
            request_timeout_ms=int(request_timeout_ms),
            retry_backoff_s=backoff_s,
            retry_backoff_max_s=backoff_max_s,
        )
        self.net = Network(bootstrap, client_id=client_id, clock=clock,
                           request_timeout_s=self.request_timeout_s,
                           reconnect_timeout_s=self.reconnect_timeout_s)
        self.net.watchers.append(self._channel_down)
        self._partitions: dict[str, int] = {}
        self._in_flight: dict[int, int] = {}  # produce requests awaiting answers, per broker
        self._refresh: set[str] = set()  # topics whose leaders must be looked up again
        self._refresh_at = 0.0  # when a lookup may be sent (a backoff after each one)
        self._lookup: Call | None = None
        self._id_call: Call | None = None
        self._wake_at = math.inf
        self._closing = False
        self._kick = _nothing  # the driver's: new work for the engine

    # -- the engine's turn --------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Act on the time: expire, look topics up, renew the epoch, send what may go."""
        state = self._state
        expiry = state.expire(now)
        wake = min(expiry, state.wake_time())
        if state.stale_topics or self._refresh:
            if self._lookup is None and now >= self._refresh_at:
                self._look_up_again(now)
            if self._lookup is None:
                wake = min(wake, self._refresh_at)
        linger_due = self._acc.seal_expired(now, self.linger_s, state.inflight)
        if linger_due is not None and linger_due < wake:
            wake = linger_due
        if state.epoch_due:  # a new epoch before anything else is sent
            if self._id_call is None:
                request = state.producer_id_request(now)
                if request is not None:
                    self._id_call = self.net.submit(Call(request, self._producer_id_answered))
        else:
            while (sent := state.next_request(now, self._node_for)) is not None:
                self._send(*sent)
        self._completed()
        self._wake_at = wake

    def wake_time(self) -> float:
        return self._wake_at

    def _node_for(self, tp: tuple[str, int]) -> int | None:
        """The broker ``tp``'s next batch may go to now: its leader, if its connection is
        ready (else it is opened) and has room for another request; else None."""
        if tp[0] in self._refresh:
            return None
        net = self.net
        node = net.metadata.leader(*tp)
        if node is None:
            self._refresh.add(tp[0])
            return None
        channel = net.channel(node)
        if not channel.ready:
            net.use(channel)
            return None
        if self._in_flight.get(node, 0) >= self.max_in_flight:
            return None
        return node

    def _send(self, request: m.ProduceRequest, batches: list[ProducerBatch]) -> None:
        node = self.net.metadata.leader(batches[0].topic, batches[0].partition)
        on_answer = None
        if self._state.acks:
            self._in_flight[node] = self._in_flight.get(node, 0) + 1
            on_answer = partial(self._answered, node, batches)
        self.net.submit(Call(request, on_answer), self.net.channel(node))

    def _answered(self, node: int, batches: list[ProducerBatch], response, error) -> None:
        """A produce answer (or the loss of its connection)."""
        self._in_flight[node] -= 1
        state = self._state
        if error is not None:
            state.on_failure(batches, error)
        else:
            state.on_response(batches, response)
        if state.misrouted:
            self._refresh |= state.misrouted
            state.misrouted.clear()
        self._forget_stale_counts()
        self._completed()

    def _channel_down(self, channel, error: BaseException, unreachable: bool) -> None:
        """A broker's connection was lost: its partitions' leaders are looked up again. It
        cannot be reopened: what waits to go to it fails (``BrokerUnreachableError``)."""
        if channel.node is None or channel.purpose:
            return
        leader = self.net.metadata.leader
        led = {tp for tp in (*self._acc.ready, *self._acc.open, *self._state.retrying)
               if leader(*tp) == channel.node}
        if unreachable:
            self._state.fail_all(error, led.__contains__)
            self._completed()
        else:
            self._refresh |= {topic for topic, _ in led}

    def _look_up_again(self, now: float) -> None:
        topics = sorted(self._state.stale_topics | self._refresh)
        self._refresh_at = now + RETRY_BACKOFF_S
        self._lookup = self.net.submit(
            Call(ops.metadata(topics), partial(self._looked_up_again, topics)))

    def _looked_up_again(self, topics: list[str], response, error) -> None:
        """Fresh metadata for the topics an answer (or a lost connection) put in doubt: a
        topic deleted or recreated is followed (``SendState.reset_topic``), leaders are
        rerouted to. After a retriable failure it is asked again after a backoff."""
        self._lookup = None
        state = self._state
        found = {}
        if error is None:
            try:
                raise_for_error(response)
                found = self.net.metadata.update(response)
            except SluiceError as exc:
                error = exc
        for topic in topics:
            meta = found.get(topic, error)
            if isinstance(meta, UnknownTopicOrPartitionError):
                meta = None
            elif isinstance(meta, BaseException):
                if is_retriable(meta):  # connection lost, broker restarting: soon again
                    continue
                state.stale_topics.discard(topic)
                self._refresh.discard(topic)
                state.fail_all(meta)
                continue
            self._refresh.discard(topic)
            self._learned(topic, meta)
        self._completed()

    def _producer_id_answered(self, response, error) -> None:
        """The answer to ``InitProducerId``; on failure ``SendState`` says when to ask again.
        If the broker stays unreachable past the reconnect window, what is pending fails."""
        self._id_call = None
        state = self._state
        if error is None and response.error:
            error = error_for_code(response.error, response.message)
        if error is None:
            state.on_producer_id(response)
        else:
            if not is_retriable(error):
                state.fail_all(error)
            state.on_producer_id_failed(self.net.clock())
        self._completed()

    def _completed(self) -> None:
        """Hand what ``SendState`` just finished to the driver (whose waiters to wake)."""
        completed = self._state.completed
        if completed:
            net = self.net
            for batch in completed:
                if batch.waiter is not None:
                    net.completed.append(batch)
            completed.clear()
            net.bump()

    # -- procedures (run by either driver) -----------------------------------------------------

    def _start_procedure(self):
        """Connect; an idempotent producer gets its id first (errors reach the caller)."""
        yield CONNECT
        request = self._state.producer_id_request(self.net.clock())
        if request is not None:
            self._state.on_producer_id((yield Call(request)))

    def _look_up(self, topic: str):
        """The topic's partition count, asked now (``UnknownTopicOrPartitionError`` if it
        does not exist)."""
        try:
            meta = yield from self.net.look_up(topic)
        except UnknownTopicOrPartitionError:
            self._learned(topic, None)
            self._completed()
            raise
        self._learned(topic, meta)
        self._completed()
        return meta.partitions

    # -- records --------------------------------------------------------------------------------

    def _append(self, topic: str, value, key, headers, timestamp: int,
                partition: int | None) -> tuple[ProducerBatch, int]:
        """Add one record to its partition's open batch (the topic's partition count is
        known); its batch and index there."""
        count = self._partitions[topic]
        if partition is None:
            if key is None:
                partition = self._sticky.partition(topic, count)
            elif self.partitioner is partition_for_key:
                partition = crc32c(key) % count  # (the default, without a call)
            else:
                partition = self.partitioner(key, count)
        elif not 0 <= partition < count:
            raise ValueError(f"{topic} has partitions 0..{count - 1}, not {partition}")
        return self._acc.append(topic, partition, key, value, headers, timestamp)

    def _on_seal(self, batch: ProducerBatch) -> None:
        """A batch was sealed and queued for sending: keyless records move on."""
        count = self._partitions.get(batch.topic)
        if count:
            self._sticky.batch_sealed(batch.topic, batch.partition, count)

    def _learned(self, topic: str, meta: TopicMeta | None) -> None:
        """Metadata of ``topic`` arrived (None: no such topic): route by it from now on. A
        new incarnation of the topic resets its partition count and sequence numbers (see
        ``SendState.reset_topic``)."""
        if meta is None:
            self._partitions.pop(topic, None)
            self._state.reset_topic(topic, None)
        else:
            self._partitions[topic] = meta.partitions
            self._state.reset_topic(topic, meta.topic_id, meta.partitions)

    def _forget_stale_counts(self) -> None:
        """Topics an answer marked stale: new records wait for fresh metadata to route by
        (``send`` looks it up; ``send_nowait`` raises ``WouldBlock`` meanwhile)."""
        for topic in self._state.stale_topics:
            self._partitions.pop(topic, None)

    def _plan_bulk(self, topic: str, items: list, partition: int | None):
        """``send_batch`` items grouped by partition: ``(groups, order)``, each group
        ``(partition, keys, values, headers)`` (partition None: the sticky one at each step),
        ``order`` as in ``BulkResult``. The partition of each record is the one ``send`` would
        pick; grouping is a stable sort, so each partition keeps the input order."""
        count = self._partitions[topic]
        keys, values, headers = split_items(items)
        if partition is not None:
            if not 0 <= partition < count:
                raise ValueError(f"{topic} has partitions 0..{count - 1}, not {partition}")
            return [(partition, keys, values, headers)], None
        n = len(values)
        if count == 1:
            return [(0, keys, values, headers)], None
        keyless = n if keys is None else keys.count(None)
        if keyless == n:
            return [(None, keys, values, headers)], None
        if keyless:
            sticky = self._sticky.partition(topic, count)
            partitioner = self.partitioner
            parts = [sticky if k is None else partitioner(k, count) for k in keys]
        else:
            parts = partitions_for_keys(self.partitioner, keys, count)
        sizes = Counter(parts)
        if len(sizes) == 1:
            return [(parts[0], keys, values, headers)], None
        order = sorted(range(n), key=parts.__getitem__)
        keys = list(map(keys.__getitem__, order))
        values = list(map(values.__getitem__, order))
        if headers is not None:
            headers = list(map(headers.__getitem__, order))
        groups = []
        i = 0
        for part in sorted(sizes):
            j = i + sizes[part]
            groups.append((part, keys[i:j], values[i:j], None if headers is None else headers[i:j]))
            i = j
        return groups, order

    @staticmethod
    def _bulk_steps(groups):
        """The groups cut into steps of at most ``BULK_STEP`` records."""
        for part, keys, values, headers in groups:
            n = len(values)
            if n <= BULK_STEP:
                yield part, keys, values, headers
                continue
            for i in range(0, n, BULK_STEP):
                j = i + BULK_STEP
                yield (part, None if keys is None else keys[i:j], values[i:j],
                       None if headers is None else headers[i:j])

    def _append_bulk(self, topic: str, step, timestamp: int, segments: list) -> bool:
        """Append one step to the accumulator; whether it started a new batch."""
        part, keys, values, headers = step
        if part is None:
            part = self._sticky.partition(topic, self._partitions[topic])
        new = self._acc.append_values(topic, part, values, timestamp, keys, headers)
        add_segments(segments, new)
        return any(start == 0 for _, start, _ in new)


def _nothing() -> None:
    """No driver yet: nothing to kick."""
