"""The trio ``Producer``: the producer engine (``ProducerBase``) on the trio driver.

The hot path is ``send_nowait``: pick a partition, append a row, return a handle -- no
awaiting, no per-record allocation beyond the row and the handle; a record that starts a new
batch kicks the driver. ``send`` is the same plus an await only when the buffer is full
(backpressure) or the topic's metadata is unknown. The driver's task sends what the engine
drains, and each connection's reader hands answers straight to the engine and wakes the
waiters -- no task of ours has to wake up between the answer arriving and ``await handle``
returning. The driver also wakes at the engine's times (lingers, backoffs, delivery
timeouts), so ``await handle`` and ``flush()`` return in time whatever the broker does.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from time import time_ns as _time_ns

import trio
from sluice.client.accumulator import ProducerBatch
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.errors import ClientClosedError
from sluice.client.lifecycle import ClientLifecycle
from sluice.client.producer_base import BulkResult, ProducerBase, check_timestamp, now_ms
from sluice.client.records import RecordMetadata


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
        super().__init__(bootstrap, client_id=client_id, clock=trio.current_time, **options)
        self._opened_batch = False  # the last send opened a batch: the next one checkpoints

    # -- lifecycle -------------------------------------------------------------------------

    def _parts(self) -> list:
        return [self]

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        self._kick = self._driver.kick
        await self._driver.run(self._start_procedure())
        stack.push_async_callback(self._drain)

    async def _drain(self) -> None:
        """Deliver what was accepted; the driver stops afterwards."""
        self._closing = True
        await self.flush()

    # -- sending -----------------------------------------------------------------------------

    def send_nowait(
        self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None
    ) -> DeliveryHandle:
        """Queue one record; raises ``trio.WouldBlock`` if the buffer is full or the topic's
        partition count is not known yet (``await send(...)`` waits for both instead)."""
        if self._acc.pending_bytes >= self.buffer_bytes or topic not in self._partitions:
            raise trio.WouldBlock
        if self._closing:
            raise ClientClosedError("producer is closed")
        return self._queue(topic, value, key, headers, timestamp, partition)

    async def send(
        self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None
    ) -> DeliveryHandle:
        """Queue one record, waiting only for buffer space or topic metadata.

        A checkpoint once per batch, not per record: the send after one that opened a batch
        checkpoints before its record is queued (a cancelled send sent nothing), which also
        lets the driver send that batch. trio's full checkpoint costs ~3.5 us and even its
        cancel check alone ~0.3 us per send (-13% per-record throughput, measured); a record
        joining an open batch returns without either."""
        if (self._opened_batch or self._acc.pending_bytes >= self.buffer_bytes
                or topic not in self._partitions):
            await self._ready_for(topic)
        elif self._closing:
            raise ClientClosedError("producer is closed")
        handle = self._queue(topic, value, key, headers, timestamp, partition)
        self._opened_batch = not handle.index
        return handle

    def _queue(self, topic: str, value, key, headers, timestamp, partition) -> DeliveryHandle:
        batch, index = self._append(
            topic, value, key, headers,
            _time_ns() // 1_000_000 if timestamp is None else check_timestamp(timestamp), partition,
        )
        if not index:
            self._kick()  # a new batch: the driver drains it when its time comes
        return DeliveryHandle(batch, index)

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
            self._kick()
        return BulkDelivery(segments, order)

    async def _ready_for(self, topic: str) -> None:
        """A checkpoint, then until the topic's partition count is known and the buffer has
        room. Both are checked after the last await, so the caller can append at once: while
        it waited, an answer may have made the count stale (a recreated topic) again."""
        await trio.lowlevel.checkpoint()
        acc = self._acc
        while topic not in self._partitions or acc.pending_bytes >= self.buffer_bytes:
            if topic not in self._partitions:
                await self._driver.run(self._look_up(topic))
            else:
                acc.seal_all()
                self._kick()
                await self._driver.wait(lambda: acc.pending_bytes < self.buffer_bytes)
        if self._closing:
            raise ClientClosedError("producer is closed")

    async def flush(self) -> None:
        """Send everything queued so far and wait until it is delivered or failed."""
        acc = self._acc
        acc.seal_all()
        self._kick()
        await self._driver.wait(lambda: not acc.incomplete)

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count (cached; looked up again once an answer says the
        topic was deleted or recreated)."""
        await self._ready_for(topic)
        return self._partitions[topic]
