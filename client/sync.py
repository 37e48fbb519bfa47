"""Blocking ``Producer``, ``Consumer`` and ``Admin`` for plain scripts: no trio, plain sockets.

They are the trio clients' engine -- ``ProducerBase``, ``ConsumerBase``, ``AdminBase`` on
``client.network`` -- on the blocking driver (``client.sync_driver``), so the semantics are
the same by construction. Without a background task, the driver runs inside your calls: the
producer sends and reads answers while you keep sending (and in ``flush()``, ``close()``, a
handle's ``result()`` and ``poll(timeout)``); the consumer pipelines like the async one: it
sends the next fetch before handing you the records of the current one.

A sync group consumer (``Consumer(group_id=...)``) has no background task either: it
heartbeats, follows rebalances and auto-commits inside ``poll()`` (and so inside iteration),
between batches of records -- at least every ``fetch_max_wait_ms`` while it waits for records.
A sync consumer that stops polling for longer than ``session_timeout_ms`` is removed from the
group by the broker and its partitions go to the other members; it rejoins at its next poll.
"""

from __future__ import annotations

import math
import time
from itertools import repeat
from time import monotonic as _monotonic
from time import time_ns as _time_ns

from sluice.client.accumulator import ProducerBatch
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.consumer_base import PROCEDURES, ConsumerBase
from sluice.client.errors import ClientClosedError
from sluice.client.procedure import expose
from sluice.client.producer_base import BulkResult, ProducerBase, check_timestamp, now_ms
from sluice.client.records import Record, RecordMetadata
from sluice.client.sync_admin import Admin
from sluice.client.sync_driver import SyncDriver, blocking

POLL_S = 0.0002  # how often a send looks for answers while some are due


class SyncDeliveryHandle:
    """Delivery result of one record; ``result()`` sends and waits as needed."""

    __slots__ = ("producer", "batch", "index")

    def __init__(self, producer: Producer, batch: ProducerBatch, index: int) -> None:
        self.producer, self.batch, self.index = producer, batch, index

    def done(self) -> bool:
        return self.batch.done

    def result(self) -> RecordMetadata:
        self.producer._deliver(self.batch)
        return self.batch.metadata(self.index)


class SyncBulkDelivery(BulkResult):
    """Delivery results of a ``send_batch`` call. ``result()`` sends and waits as needed and
    returns every record's ``RecordMetadata`` in input order (or raises the error of the first
    failed batch); it is also a sequence of per-record ``SyncDeliveryHandle``s."""

    __slots__ = ("producer", "_handles")

    def __init__(self, producer: Producer, segments, order=None) -> None:
        super().__init__(segments, order)
        self.producer = producer
        self._handles = None

    def result(self) -> list[RecordMetadata]:
        for batch, _, _ in self.segments:
            self.producer._deliver(batch)
        return self._metadata()

    def handles(self) -> list[SyncDeliveryHandle]:
        if self._handles is None:
            batches, indexes = self._locations()
            self._handles = list(map(SyncDeliveryHandle, repeat(self.producer), batches, indexes))
        return self._handles

    def __getitem__(self, index):
        return self.handles()[index]

    def __iter__(self):
        return iter(self.handles())


class Producer(ProducerBase):
    """Blocking producer: ``with Producer(...) as p: p.send(...).result()``.

    The producer engine (``ProducerBase``) on the blocking driver, inside your calls. While
    you keep sending, ``send`` runs the engine when its next time comes (a batch's linger,
    at least ``POLL_S`` after the batch started: the records of a burst share a request)
    and, while answers are due, looks every ``POLL_S`` whether one came (one ``epoll`` call)
    to read it and send what may go next -- never waiting. ``result()``, ``flush()``,
    ``close()`` and a full buffer wait; ``poll(timeout)`` runs the producer for ``timeout``
    seconds, for a loop that would otherwise sleep between records: between your calls
    nothing moves.
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-producer",
        **options,
    ) -> None:
        """``options``: see ``ProducerBase`` (acks, linger_ms, batch_bytes, buffer_bytes...)."""
        super().__init__(bootstrap, client_id=client_id, clock=time.monotonic, **options)
        self._driver = SyncDriver(self.net, [self])
        self._next_run = 0.0  # when a send runs the engine next
        self._next_look = math.inf  # when a send looks for answers next

    def __enter__(self) -> Producer:
        try:
            self._driver.run(self._start_procedure())
        except BaseException:
            self._driver.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Deliver everything accepted, then disconnect."""
        try:
            self.flush()
        finally:
            self._driver.close()

    def partitions_for(self, topic: str) -> int:
        """The topic's partition count (fetched once, then cached; looked up again once an
        answer says the topic was deleted or recreated)."""
        count = self._partitions.get(topic)
        if count is None:
            count = self._driver.run(self._look_up(topic))
        return count

    def send(self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None):
        now = _monotonic()
        if now >= self._next_run:  # first what is due: earlier batches, answers
            self._pump()
        elif now >= self._next_look:
            self._look()
        if topic not in self._partitions:
            self.partitions_for(topic)
        batch, index = self._append(
            topic, value, key, headers,
            _time_ns() // 1_000_000 if timestamp is None else check_timestamp(timestamp), partition,
        )
        if not index:
            self._started(now)
        if self._acc.pending_bytes >= self.buffer_bytes:
            self._wait_for_space()
        return SyncDeliveryHandle(self, batch, index)

    def send_batch(self, topic: str, items, *, timestamp=None, partition=None):
        """Send many values (or ``(key, value[, headers])`` tuples) in bulk, to the partitions
        ``send`` would pick; ``result()`` of the returned ``SyncBulkDelivery`` gives every
        record's ``RecordMetadata`` in input order (it is also a sequence of handles)."""
        items = items if isinstance(items, list) else list(items)
        timestamp = now_ms() if timestamp is None else check_timestamp(timestamp)
        if topic not in self._partitions:
            self.partitions_for(topic)
        groups, order = self._plan_bulk(topic, items, partition)
        segments: list = []
        for step in self._bulk_steps(groups):
            self._wait_for_space()
            now = _monotonic()
            if self._append_bulk(topic, step, timestamp, segments):
                self._started(now)
            if now >= self._next_run or any(self._acc.ready.values()):  # (full batches)
                self._pump()
            elif now >= self._next_look:
                self._look()
        return SyncBulkDelivery(self, segments, order)

    def flush(self) -> None:
        """Send everything queued and wait until all of it is delivered or failed."""
        acc = self._acc
        acc.seal_all()
        self._driver.wait(lambda: not acc.incomplete)

    def poll(self, timeout: float = 0.0) -> None:
        """Do the producer's I/O for ``timeout`` seconds: send what becomes due, read answers
        and resolve handles as they come (``timeout=0``: what can be done without waiting)."""
        self._driver.wait(_never, time.monotonic() + timeout)
        self._pump()

    def _deliver(self, batch: ProducerBatch) -> None:
        if batch.done:
            return
        if self._acc.open.get((batch.topic, batch.partition)) is batch:
            self._acc.seal(batch)
        self._driver.wait(lambda: batch.done)

    def _wait_for_space(self) -> None:
        """Backpressure: while the buffer is full, send everything and wait for answers."""
        acc = self._acc
        if acc.pending_bytes >= self.buffer_bytes:
            acc.seal_all()
            self._driver.wait(lambda: acc.pending_bytes < self.buffer_bytes)

    def _started(self, now: float) -> None:
        """A batch was started: it goes when its linger ends, but not before ``POLL_S`` (the
        records of a burst of sends join it)."""
        due = now + (self.linger_s if self.linger_s > POLL_S else POLL_S)
        if due < self._next_run:
            self._next_run = due

    def _pump(self) -> None:
        """Run the engine and move what may move, without waiting; the next run is due at
        the engine's next time, the next look in ``POLL_S`` while answers are due."""
        self._driver.pump()
        self._next_run = self._driver.wake_time()
        self._next_look = _monotonic() + POLL_S if any(self._in_flight.values()) else math.inf

    def _look(self) -> None:
        """Run the engine if an answer came (else only look again in ``POLL_S``)."""
        if self._driver.readable():
            self._pump()
        else:
            self._next_look = _monotonic() + POLL_S


def _never() -> bool:
    return False


class Consumer(ConsumerBase):
    """Blocking consumer: ``with Consumer(..., topics=[...]) as c: for record in c: ...``.

    The consumer engine (``ConsumerBase``) on the blocking driver, inside ``poll``: it sends
    the next fetch before handing you the records of the current one. With ``group_id`` it is
    a group member (same options and semantics as the trio ``Consumer``; callbacks must be
    plain functions). Group work happens inside ``poll()``: poll at least once per
    ``session_timeout_ms`` or lose your partitions.
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-consumer",
        **options,
    ) -> None:
        """``options``: see ``ConsumerBase`` (topics, group_id, auto_commit, fetch sizes...)."""
        super().__init__(bootstrap, client_id=client_id, clock=time.monotonic, **options)
        self._driver = SyncDriver(self.net, [self])
        self._closed = False

    def __enter__(self) -> Consumer:
        try:
            self._driver.run(self._start_procedure())
            self._start_fetching()
            if self._group is not None:
                self._driver.run(self._group_work(True))  # join now: partitions by the first poll
        except BaseException:
            self._driver.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)

    def close(self, *, commit: bool = True) -> None:
        """Leave the group (after a final auto-commit and ``on_revoke`` if ``commit``).

        Records fetched but not yet handed out are dropped: in a group, their partitions may
        already belong to another member. ``poll`` raises ``ClientClosedError`` afterwards."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._group is not None:
                self._driver.run(self._leave(commit))
        finally:
            self._stop_fetching()
            self._driver.close()

    def poll(self, timeout: float | None = None) -> list[Record]:
        """The next records (one fetched chunk); [] if none arrived within ``timeout`` s.

        Returns within ``timeout`` whatever the broker does: a fetch whose answer is late
        stays on the wire for the next poll, and a lost connection is reopened a little at
        each poll (``BrokerUnreachableError`` once ``reconnect_timeout_ms`` has passed).
        Group work (a heartbeat, an auto-commit) and offset lookups are requests of their
        own, each bounded by ``request_timeout_ms``."""
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if self._index < len(self._records):
            records = self._records[self._index:]
            self._records, self._index = [], 0
            return records
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        group = self._group
        while True:
            if group is not None:
                self._driver.run(self._group_work(True))
            records = self._next_records()
            if records is not None:
                if not self._fetches:  # (a fetch answered in this poll sent the next already)
                    self._driver.pump()  # the next fetch goes before the records are handled
                return records
            if time.monotonic() >= deadline or (group is None and not self._state.assignment):
                return []
            self._driver.pump(deadline if group is None else min(deadline, group.next_heartbeat))

    def batches(self):
        """Iterator of record lists, forever."""
        while True:
            records = self.poll()
            if records:
                yield records

    def __iter__(self):
        return self

    def __next__(self) -> Record:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        index = self._index
        if index < len(self._records):
            self._index = index + 1
            return self._records[index]
        records = []
        while not records:
            records = self.poll()
        self._records, self._index = records, 1
        return records[0]


expose(Consumer, PROCEDURES, blocking)


__all__ = ["Admin", "Consumer", "Producer"]
