"""The trio ``Producer``: accumulate records per partition, send batches pipelined.

The hot path is ``send_nowait``: pick a partition, append a row, return a handle -- no
awaiting, no per-record allocation beyond the row and the handle. ``send`` is the same plus
an await only when the buffer is full (backpressure) or the topic's metadata is unknown.
A sender task seals lingered batches and writes requests (up to ``max_in_flight`` at once);
the connection's reader hands each response, in order, straight to ``SendState`` (which
decides what is delivered, failed or retried) and wakes the waiters -- no task of ours has to
wake up between the answer arriving and ``await handle`` returning. An expiry task fails
what outlives ``delivery_timeout_ms`` (``SendState.expire``) even while the sender waits on a
reconnect, so ``await handle`` and ``flush()`` return in time whatever the broker does.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from functools import partial
from time import time_ns as _time_ns

import trio
from sluice.client.accumulator import ProducerBatch
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.errors import (
    ClientClosedError,
    ConnectionLostError,
    SluiceError,
    UnknownTopicOrPartitionError,
    is_retriable,
)
from sluice.client.lifecycle import ClientLifecycle
from sluice.client.producer_base import BulkResult, ProducerBase, check_timestamp, now_ms
from sluice.client.records import RecordMetadata
from sluice.protocol import messages as m


class DeliveryHandle:
    """Awaitable delivery result of one record: ``RecordMetadata`` or the error."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self.batch = batch
        self.index = index

    def done(self) -> bool:
        return self.batch.done

    def result(self) -> RecordMetadata:
        """The result of a completed delivery (``RuntimeError`` if still pending)."""
        if not self.batch.done:
            raise RuntimeError("delivery is still pending")
        return self.batch.metadata(self.index)

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self) -> RecordMetadata:
        batch = self.batch
        if not batch.done:
            if batch.waiter is None:
                batch.waiter = trio.Event()
            await batch.waiter.wait()
        else:
            await trio.lowlevel.checkpoint()
        return batch.metadata(self.index)


class BulkDelivery(BulkResult):
    """Awaitable delivery results of a ``send_batch`` call: ``RecordMetadata`` per record,
    in input order (or the error of the first failed batch). Awaiting waits once per batch
    still in flight, and not at all when every batch is already done."""

    __slots__ = ()

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self) -> list[RecordMetadata]:
        waited = False
        for batch, _, _ in self.segments:
            if not batch.done:
                if batch.waiter is None:
                    batch.waiter = trio.Event()
                await batch.waiter.wait()
                waited = True
        if not waited:
            await trio.lowlevel.checkpoint()  # trio's rule: an async call always checkpoints
        return self._metadata()


RETRY_BACKOFF_S = 0.1  # before asking again for metadata the broker could not give


class Producer(ProducerBase, ClientLifecycle):
    """Async producer; use as ``async with Producer(...) as producer:``.

    Closing delivers everything accepted before it returns (or fails it with its error).
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-producer",
        **options,
    ) -> None:
        """``options``: see ``ProducerBase`` (acks, linger_ms, batch_bytes, buffer_bytes...)."""
        super().__init__(clock=trio.current_time, **options)
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._wake = trio.Event()
        self._space = trio.Event()
        self._progress = trio.Event()
        self._closing = False
        self._requests_in_flight = 0
        self._refresh_at = 0.0  # when stale topics may be looked up again

    # -- lifecycle -------------------------------------------------------------------------

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        state = self._state
        request = state.producer_id_request(trio.current_time())
        if request is not None:  # idempotent: an id first (errors reach ``async with``)
            state.on_producer_id(await self._cluster.request(request))
        nursery.start_soon(self._sender)
        nursery.start_soon(self._expirer)
        stack.push_async_callback(self._drain)

    async def _drain(self) -> None:
        """Deliver what was accepted; the sender is cancelled afterwards."""
        self._closing = True
        await self.flush()

    # -- sending -----------------------------------------------------------------------------

    def send_nowait(
        self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None
    ) -> DeliveryHandle:
        """Queue one record; raises ``trio.WouldBlock`` if the buffer is full or the topic's
        partition count is not known yet (``await send(...)`` waits for both instead)."""
        acc = self._acc
        if acc.pending_bytes >= self.buffer_bytes:
            raise trio.WouldBlock
        count = self._partitions.get(topic)
        if count is None or self._closing:
            if self._closing:
                raise ClientClosedError("producer is closed")
            raise trio.WouldBlock
        if partition is None:
            if key is None:
                partition = self._sticky.partition(topic, count)
            else:
                partition = self.partitioner(key, count)
        elif not 0 <= partition < count:
            raise ValueError(f"{topic} has partitions 0..{count - 1}, not {partition}")
        batch, index = acc.append(
            topic, partition, key, value, headers,
            _time_ns() // 1_000_000 if timestamp is None else check_timestamp(timestamp),
        )
        if not index:
            self._wake.set()
        return DeliveryHandle(batch, index)

    async def send(
        self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None
    ) -> DeliveryHandle:
        """Queue one record, waiting only for buffer space or topic metadata."""
        if self._acc.pending_bytes >= self.buffer_bytes or topic not in self._partitions:
            await self._ready_for(topic)
        return self.send_nowait(
            topic, value, key=key, headers=headers, timestamp=timestamp, partition=partition
        )

    async def send_batch(
        self, topic: str, items, *, timestamp=None, partition=None
    ) -> BulkDelivery:
        """Queue many records at once; ``await`` the result for their ``RecordMetadata``.

        ``items`` are values (bytes), or ``(key, value)`` / ``(key, value, headers)`` tuples.
        Records go to the partitions ``send`` would pick, each partition's in input order;
        the batch columns are extended in bulk, without per-record Python code (except to
        copy headers).
        """
        items = items if isinstance(items, list) else list(items)
        timestamp = now_ms() if timestamp is None else check_timestamp(timestamp)
        await self._ready_for(topic)
        groups, order = self._plan_bulk(topic, items, partition)
        segments: list = []
        for step in self._bulk_steps(groups):
            await self._ready_for(topic)
            self._append_bulk(topic, step, timestamp, segments)
            self._wake.set()
        return BulkDelivery(segments, order)

    async def _ready_for(self, topic: str) -> None:
        if topic not in self._partitions:
            try:
                meta = await self._cluster.topic(topic, refresh=True)
            except UnknownTopicOrPartitionError:
                self._learned(topic, None)
                raise
            self._learned(topic, meta)
            self._completed()
        while self._acc.pending_bytes >= self.buffer_bytes:
            self._acc.seal_all()
            self._wake.set()
            await self._space.wait()
        if self._closing:
            raise ClientClosedError("producer is closed")

    async def flush(self) -> None:
        """Send everything queued so far and wait until it is delivered or failed."""
        self._acc.seal_all()
        self._wake.set()
        while self._acc.incomplete:
            await self._progress.wait()

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count (cached; looked up again once an answer says the
        topic was deleted or recreated)."""
        await self._ready_for(topic)
        return self._partitions[topic]

    # -- background tasks ----------------------------------------------------------------------

    def _on_seal(self, batch: ProducerBatch) -> None:
        count = self._partitions.get(batch.topic)
        if count:
            self._sticky.batch_sealed(batch.topic, batch.partition, count)

    def _completed(self) -> None:
        """Wake whoever waits on what ``SendState`` just finished."""
        completed = self._state.completed
        if not completed:
            return
        for batch in completed:
            if batch.waiter is not None:
                batch.waiter.set()
        completed.clear()
        self._progress.set()
        self._progress = trio.Event()
        if self._acc.pending_bytes < self.buffer_bytes:
            self._space.set()
            self._space = trio.Event()

    async def _refresh_stale_topics(self) -> None:
        """Fresh metadata for the topics an error marked stale (deleted? recreated?); the
        sender holds their batches back until then (see ``SendState.reset_topic``). After a
        retriable failure it is asked again at ``_refresh_at``, the sender going on
        meanwhile."""
        state = self._state
        for topic in sorted(state.stale_topics):
            try:
                meta = await self._cluster.topic(topic, refresh=True)
            except UnknownTopicOrPartitionError:
                meta = None
            except SluiceError as exc:
                if is_retriable(exc):  # connection lost, broker restarting: try again soon
                    self._refresh_at = trio.current_time() + RETRY_BACKOFF_S
                    break
                state.stale_topics.discard(topic)
                state.fail_all(exc)
                continue
            self._learned(topic, meta)
        self._completed()

    async def _sender(self) -> None:
        state, acc = self._state, self._acc
        while True:
            if state.stale_topics and trio.current_time() >= self._refresh_at:
                await self._refresh_stale_topics()  # first: it may decide whether an epoch is due
            now = trio.current_time()
            linger_due = acc.seal_expired(now, self.linger_s, state.inflight)
            if state.epoch_due:  # a new epoch before anything else is sent
                renew = state.producer_id_request(now)
                if renew is not None:
                    await self._renew_producer_id(renew)
                    continue
            full = self._requests_in_flight >= self.max_in_flight
            next_request = None if full else state.next_request(now)
            self._completed()
            if next_request is None:
                self._wake = trio.Event()
                # Full: only an answer (which sets ``_wake``) lets anything go.
                wake_at = math.inf if full else state.wake_time()
                if linger_due is not None and not full and linger_due < wake_at:
                    wake_at = linger_due
                if state.stale_topics and self._refresh_at < wake_at:  # look again
                    wake_at = self._refresh_at
                if wake_at == math.inf:
                    await self._wake.wait()
                else:
                    with trio.move_on_at(wake_at):
                        await self._wake.wait()
                continue
            request, batches = next_request
            self._requests_in_flight += 1
            try:
                conn = await self._cluster.connection()
                pending = await conn.send(request, partial(self._answered, batches))
            except ConnectionLostError as exc:
                self._requests_in_flight -= 1
                state.on_failure(batches, exc)
                self._completed()
                continue
            except Exception as exc:  # e.g. broker unreachable for too long: give up
                self._requests_in_flight -= 1
                state.on_failure(batches, exc)
                state.fail_all(exc)
                self._completed()
                continue
            if pending is None:  # acks=0: nothing will answer
                self._requests_in_flight -= 1

    async def _renew_producer_id(self, request: m.InitProducerIdRequest) -> None:
        """Ask for a new epoch (or id); on failure ``SendState`` says when to ask again.
        If the broker stays unreachable past the reconnect window, what is pending fails."""
        state = self._state
        try:
            response = await self._cluster.request(request)
        except SluiceError as exc:
            if not is_retriable(exc):
                state.fail_all(exc)
            state.on_producer_id_failed(trio.current_time())
        else:
            state.on_producer_id(response)
        self._completed()

    async def _expirer(self) -> None:
        """Fail batches that outlive the delivery timeout, wherever they wait."""
        state = self._state
        while True:
            due = state.expire(trio.current_time())
            if state.completed:
                self._completed()
                self._wake.set()  # e.g. a new epoch may be due now
            await trio.sleep_until(due)

    def _answered(self, batches: list[ProducerBatch], response, error) -> None:
        """A produce response (or the connection's loss), called by the connection's reader."""
        self._requests_in_flight -= 1
        if error is not None:
            self._state.on_failure(batches, error)
        else:
            self._state.on_response(batches, response)
        self._forget_stale_counts()
        self._completed()
        acc = self._acc
        if acc.open or any(acc.ready.values()):  # held or queued batches may go now
            self._wake.set()
