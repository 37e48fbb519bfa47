"""Blocking ``Producer``, ``Consumer`` and ``Admin`` for plain scripts: no trio, plain sockets.

They drive the same sans-IO pieces as the trio clients -- ``protocol.connection`` for the
wire, ``Accumulator``/``SendState`` for batching, sequencing and retries, ``FetchState`` for
positions, ``admin_ops`` for topics -- so the semantics match. Without a background task,
the sync producer does its I/O inside your calls: a batch goes out when it fills, when
``linger_ms`` has passed at a later ``send``, on ``flush()``/``close()``, or when you wait on
a handle's ``result()``. The sync consumer pipelines like the async one: it sends the next
fetch before handing you the records of the current one.

A sync group consumer (``Consumer(group_id=...)``) has no background task either: it
heartbeats, follows rebalances and auto-commits inside ``poll()`` (and so inside iteration),
between batches of records -- at least every ``fetch_max_wait_ms`` while it waits for records.
A sync consumer that stops polling for longer than ``session_timeout_ms`` is removed from the
group by the broker and its partitions go to the other members; it rejoins at its next poll.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from itertools import repeat

from sluice.client import admin_ops as ops
from sluice.client.accumulator import ProducerBatch
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.consumer_base import ConsumerBase
from sluice.client.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    ConnectionLostError,
    RequestTimeoutError,
    SluiceError,
    is_retriable,
    raise_for_error,
)
from sluice.client.fetcher import EARLIEST, LATEST
from sluice.client.group import REJOIN_ERRORS, call_back_sync, normalize_offsets
from sluice.client.producer_base import BulkResult, ProducerBase, check_timestamp, now_ms
from sluice.client.records import Record, RecordMetadata, decode_batches
from sluice.client.sync_admin import Admin
from sluice.client.sync_connection import SyncConnection
from sluice.protocol import messages as m
from sluice.protocol.errors import UnknownTopicOrPartitionError

FETCH_RETRY_BACKOFF_S = 0.1  # after a retriable fetch or lookup error (e.g. the broker restarting)
TOPIC_LOOKUP_INTERVAL_S = 0.5  # how often to look whether a deleted topic is back
log = logging.getLogger("sluice.sync")


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
    """Blocking producer: ``with Producer(...) as p: p.send(...).result()``."""

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-producer",
        **options,
    ) -> None:
        """``options``: see ``ProducerBase`` (acks, linger_ms, batch_bytes, buffer_bytes...)."""
        super().__init__(clock=time.monotonic, **options)
        self._conn = SyncConnection(
            bootstrap, client_id, request_timeout_s=self.request_timeout_s,
            reconnect_timeout_s=self.reconnect_timeout_s,
        )
        self._in_flight: deque[list[ProducerBatch]] = deque()
        self._linger_due = float("inf")
        self._sealed = False  # a batch was sealed since the last pump
        self._refresh_at = 0.0  # when stale topics may be looked up again

    def __enter__(self) -> Producer:
        self._conn.connect()
        try:
            request = self._state.producer_id_request(time.monotonic())
            if request is not None:  # idempotent: an id first
                self._state.on_producer_id(self._conn.request(request))
        except BaseException:
            self._conn.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Deliver everything accepted, then disconnect."""
        try:
            self.flush()
        finally:
            self._conn.close()

    def partitions_for(self, topic: str) -> int:
        """The topic's partition count (fetched once, then cached; looked up again once an
        answer says the topic was deleted or recreated)."""
        count = self._partitions.get(topic)
        if count is None:
            count = self._learn(topic)
        return count

    def send(self, topic: str, value, *, key=None, headers=None, timestamp=None, partition=None):
        timestamp = now_ms() if timestamp is None else check_timestamp(timestamp)
        count = self.partitions_for(topic)
        if partition is None:
            if key is None:
                partition = self._sticky.partition(topic, count)
            else:
                partition = self.partitioner(key, count)
        elif not 0 <= partition < count:
            raise ValueError(f"{topic} has partitions 0..{count - 1}, not {partition}")
        acc = self._acc
        batch, index = acc.append(topic, partition, key, value, headers, timestamp)
        now = time.monotonic()
        if index == 0:
            self._linger_due = min(self._linger_due, now + self.linger_s)
        if now >= self._linger_due:
            self._linger_due = acc.seal_expired(now, self.linger_s) or float("inf")
        if acc.pending_bytes >= self.buffer_bytes:  # backpressure: wait for an answer
            acc.seal_all()
            self._linger_due = float("inf")
            self._sealed = False
            self._pump(block=True)
        elif self._sealed:  # a batch to send (and the answers that came meanwhile to read)
            self._sealed = False
            self._pump(block=False)
        return SyncDeliveryHandle(self, batch, index)

    def send_batch(self, topic: str, items, *, timestamp=None, partition=None):
        """Send many values (or ``(key, value[, headers])`` tuples) in bulk, to the partitions
        ``send`` would pick; ``result()`` of the returned ``SyncBulkDelivery`` gives every
        record's ``RecordMetadata`` in input order (it is also a sequence of handles)."""
        items = items if isinstance(items, list) else list(items)
        timestamp = now_ms() if timestamp is None else check_timestamp(timestamp)
        if topic not in self._partitions:
            self._learn(topic)
        groups, order = self._plan_bulk(topic, items, partition)
        acc, segments = self._acc, []
        for step in self._bulk_steps(groups):
            while acc.pending_bytes >= self.buffer_bytes and acc.incomplete:
                acc.seal_all()
                self._linger_due = float("inf")
                self._pump(block=True)
            if self._append_bulk(topic, step, timestamp, segments):
                self._linger_due = min(self._linger_due, time.monotonic() + self.linger_s)
            if acc.ready:
                self._pump(block=False)
        now = time.monotonic()
        if now >= self._linger_due:
            self._linger_due = acc.seal_expired(now, self.linger_s) or float("inf")
            if acc.ready:
                self._pump(block=False)
        return SyncBulkDelivery(self, segments, order)

    def flush(self) -> None:
        """Send everything queued and wait until all of it is delivered or failed."""
        self._acc.seal_all()
        self._linger_due = float("inf")
        while self._acc.incomplete:
            self._pump(block=True)

    def _deliver(self, batch: ProducerBatch) -> None:
        if batch.done:
            return
        if self._acc.open.get((batch.topic, batch.partition)) is batch:
            self._acc.seal(batch)
        while not batch.done:
            self._pump(block=True)

    def _on_seal(self, batch: ProducerBatch) -> None:
        self._sealed = True
        count = self._partitions.get(batch.topic)
        if count:
            self._sticky.batch_sealed(batch.topic, batch.partition, count)

    def _learn(self, topic: str) -> int:
        """Look the topic up (``UnknownTopicOrPartitionError`` if there is none); its count."""
        while self._in_flight:  # answers come in request order: take the ones owed first
            self._receive_one()
        try:
            meta = self._conn.topic(topic)
        except UnknownTopicOrPartitionError:
            self._learned(topic, None)
            self._state.completed.clear()
            raise
        self._learned(topic, meta)
        self._state.completed.clear()
        return meta.partitions

    def _refresh_stale_topics(self) -> None:
        """Fresh metadata for the topics an error marked stale (deleted? recreated?), asked
        with nothing in flight; their batches are held back until then. After a retriable
        failure (a lost connection, a broker restarting) it is asked again at
        ``_refresh_at``."""
        state = self._state
        for topic in sorted(state.stale_topics):
            try:
                self._learned(topic, self._conn.topic(topic))
            except UnknownTopicOrPartitionError:
                self._learned(topic, None)
            except SluiceError as exc:
                if is_retriable(exc):
                    self._refresh_at = time.monotonic() + FETCH_RETRY_BACKOFF_S
                    return
                state.stale_topics.discard(topic)
                state.fail_all(exc)

    def _receive_one(self, until: float | None = None) -> bool:
        """Read the answer to the oldest request in flight, waiting until ``until`` at most
        (None: its deadline); False if it has not come by then (it stays due)."""
        state = self._state
        try:
            response = self._conn.receive(until)
        except ConnectionLostError as exc:  # (or it timed out)
            state.on_failure(self._in_flight.popleft(), exc)
            self._connection_lost(exc)
        else:
            if response is None:
                return False
            state.on_response(self._in_flight.popleft(), response)
        self._forget_stale_counts()
        return True

    def _pump(self, block: bool) -> None:
        """Send what may be sent and read the answers already there. With ``block``, also
        reconnect if needed and wait for one answer -- but only until the next time
        something else is due (a delivery timeout, the end of a backoff): callers loop until
        what they wait for is done, and every batch is done by its delivery timeout whatever
        the broker does. Without ``block`` nothing waits (a lost connection is reopened by
        the next blocking call: ``result()``, ``flush()``, a full buffer)."""
        state, conn = self._state, self._conn
        while True:
            now = time.monotonic()
            due = state.expire(now)
            if conn.sock is None and not (block and self._reconnect(due)):
                break
            if state.stale_topics and not self._in_flight and now >= self._refresh_at:
                self._refresh_stale_topics()  # first: it may decide whether an epoch is due
                if conn.sock is None:
                    continue
            if state.epoch_due:
                renew = state.producer_id_request(now)
                if renew is not None:
                    if self._renew_producer_id(renew, due if block else None):
                        continue
                    break
            while len(self._in_flight) < self.max_in_flight:
                next_request = state.next_request(now)
                if next_request is None:
                    break
                request, batches = next_request
                try:
                    conn.send(request)
                except ConnectionLostError as exc:
                    state.on_failure(batches, exc)
                    self._connection_lost(exc)
                    break
                if state.acks:
                    self._in_flight.append(batches)
            if not self._in_flight or not (block or conn.has_data()):
                break
            # Full: only an answer lets anything go; else also the end of a backoff.
            full = len(self._in_flight) >= self.max_in_flight
            until = (due if full else min(due, state.wake_time())) if block else now
            if not self._receive_one(until):
                break
            if block:
                break
        if block and not state.completed and not self._in_flight:
            # Nothing finished and nothing to wait on but time: a backoff, a reconnect, the
            # next look at a stale topic.
            wake = min(state.expire(time.monotonic()), state.wake_time())
            if state.stale_topics:
                wake = min(wake, self._refresh_at)
            time.sleep(max(0.0, min(wake - time.monotonic(), self.request_timeout_s)))
        state.completed.clear()

    def _reconnect(self, until: float) -> bool:
        """Reconnect, trying until ``until`` at most; past the reconnect window, everything
        pending fails (``BrokerUnreachableError``) and later sends start afresh."""
        try:
            return self._conn.connect(until)
        except BrokerUnreachableError as exc:
            self._state.fail_all(exc)
            return False

    def _connection_lost(self, error: ConnectionLostError) -> None:
        """Every request still on the lost connection failed with it."""
        while self._in_flight:
            self._state.on_failure(self._in_flight.popleft(), error)
        self._conn.close()

    def _renew_producer_id(self, request: m.InitProducerIdRequest, until: float | None) -> bool:
        """Ask for a new epoch (or id), waiting until ``until`` at most (then the connection,
        where the answer would arrive, is closed); on failure ``SendState`` says when to ask
        again."""
        state, conn = self._state, self._conn
        try:
            conn.send(request)
            response = conn.receive(until)
            if response is None:
                conn.close()
                raise RequestTimeoutError("no answer to InitProducerId in time; connection closed")
            raise_for_error(response)
        except SluiceError as exc:
            if not is_retriable(exc):
                state.fail_all(exc)
            state.on_producer_id_failed(time.monotonic())
            return False
        state.on_producer_id(response)
        return True


class Consumer(ConsumerBase):
    """Blocking consumer: ``with Consumer(..., topics=[...]) as c: for record in c: ...``.

    With ``group_id`` it is a group member (same options and semantics as the trio
    ``Consumer``; callbacks must be plain functions). Group work happens inside ``poll()``:
    poll at least once per ``session_timeout_ms`` or lose your partitions.
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-consumer",
        **options,
    ) -> None:
        """``options``: see ``ConsumerBase`` (topics, group_id, auto_commit, fetch sizes...)."""
        super().__init__(**options)
        timeouts = {"request_timeout_s": self.request_timeout_s,
                    "reconnect_timeout_s": self.reconnect_timeout_s}
        self._conn = SyncConnection(bootstrap, client_id, **timeouts)
        # Group requests on their own connection, so they never wait behind a long poll.
        self._coord = SyncConnection(bootstrap, client_id, **timeouts)
        self._in_flight: int | None = None  # generation of the fetch on the wire
        self._chunks: deque = deque()  # fetched, not yet decoded
        self._closed = False
        self._next_topic_lookup = 0.0  # when to look again for a deleted topic's return

    def __enter__(self) -> Consumer:
        self._conn.connect()
        if self._group is not None:
            for topic in self.topics:
                self._conn.partitions(topic)  # unknown topic: fail here, clearly
            self._coord.connect()
            self._group_tick()  # join now, so partitions may be assigned by the first poll
        elif self.topics:
            self._assign_topics({t: self._conn.topic(t) for t in self.topics})
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)

    def close(self, *, commit: bool = True) -> None:
        """Leave the group (after a final auto-commit and ``on_revoke`` if ``commit``).

        Records fetched but not yet handed out are dropped: in a group, their partitions may
        already belong to another member. ``poll`` raises ``ClientClosedError`` afterwards."""
        self._closed = True
        try:
            if self._group is not None and self._coord.sock is not None:
                self._leave(commit)
        finally:
            self._conn.close()
            self._coord.close()

    def partitions_for(self, topic: str) -> int:
        """The topic's partition count, asked now (``UnknownTopicOrPartitionError`` if none)."""
        self._drain_fetch()  # the answer to the fetch on the wire comes first
        return self._conn.partitions(topic)

    def offsets_for_times(self, timestamps: dict) -> dict:
        return self._list_offsets(timestamps)

    def beginning_offsets(self, partitions) -> dict:
        return {tp: v[0] for tp, v in self._list_offsets({tuple(tp): EARLIEST for tp in partitions}).items()}

    def end_offsets(self, partitions) -> dict:
        return {tp: v[0] for tp, v in self._list_offsets({tuple(tp): LATEST for tp in partitions}).items()}

    def _list_offsets(self, specs: dict) -> dict:
        self._drain_fetch()
        return ops.offsets(self._conn.request(ops.list_offsets(specs)))

    def _drop_fetched(self) -> None:
        self._chunks.clear()

    # -- groups ------------------------------------------------------------------------------

    def commit(self, offsets=None) -> None:
        """Commit group offsets (default: every owned partition's position); returns once the
        broker has fsync'd them. Call it after processing what ``poll`` returned."""
        if self._group is None:
            raise ValueError("commit() needs a consumer with a group_id")
        if offsets is None:
            offsets = {tp: o for tp, o in self._positions().items() if o is not None}
        else:
            offsets = normalize_offsets(offsets)
        if offsets:
            self._commit(offsets)

    def committed(self, partitions=None) -> dict:
        """The group's committed offsets: ``{(topic, partition): offset or None}``."""
        if self._group is None:
            raise ValueError("committed() needs a consumer with a group_id")
        wanted = sorted(self._positions() if partitions is None else map(tuple, partitions))
        found = self._group.on_fetch_offsets(
            self._coord.request(self._group.fetch_offsets_request(wanted)))
        return {tp: found.get(tp) for tp in wanted}

    def _positions(self) -> dict:
        out = {tp: self.position(*tp) for tp in self._state.assignment}
        out.update(self._group.revoking)
        return out

    def _commit(self, offsets: dict) -> None:
        response = self._coord.request(self._commit_request(offsets))
        self._group.on_commit(response, offsets)

    def _commit_quietly(self, offsets: dict, why: str) -> None:
        if not offsets:
            return
        try:
            self._commit(offsets)
        except SluiceError as exc:
            log.warning("group %s: %s commit failed: %s", self._group.group_id, why, exc)

    def _group_tick(self) -> None:
        """Heartbeat when due, follow the assignment, auto-commit: run between batches, when
        everything handed out so far has been processed."""
        group = self._group
        while time.monotonic() >= group.next_heartbeat:
            self._heartbeat()
        if group.auto_commit_due(time.monotonic()):
            group.auto_committed(time.monotonic())
            positions = {tp: self.position(*tp) for tp in self._state.assignment}
            self._commit_quietly(group.uncommitted(positions), "auto")

    def _heartbeat(self) -> None:
        group = self._group
        try:
            response = self._coord.request(group.heartbeat_request(time.monotonic()))
        except REJOIN_ERRORS as exc:
            log.info("group %s: %s; rejoining", group.group_id, exc)
            lost = group.reset()
            self._settle()
            self._state.assign([])
            if lost:
                call_back_sync(self.on_revoke, lost)
            return
        except SluiceError as exc:
            if not is_retriable(exc):
                raise
            if self._coord.sock is None:
                self._coord.connect()
            group.next_heartbeat = time.monotonic() + 0.1
            return
        plan = group.on_heartbeat(response, time.monotonic())
        if plan.revoke:
            # The application has processed everything handed out: revoke right away.
            self._settle()
            positions = self._start_revoke_positions(plan.revoke)
            if group.auto_commit:
                self._commit_quietly(group.uncommitted(positions), "revoke")
            call_back_sync(self.on_revoke, sorted(plan.revoke))
            group.released(plan.revoke)  # heartbeat again at once: the new owner may start
        if plan.assign:
            new = sorted(plan.assign)
            response = self._coord.request(group.fetch_offsets_request(new))
            self._settle()
            self._take_committed(new, response)
            call_back_sync(self.on_assign, new)

    def _leave(self, commit: bool) -> None:
        group = self._group
        try:
            owned = sorted(group.owned)
            if commit and group.auto_commit and group.joined:
                self._commit_quietly(group.uncommitted(self._positions()), "final")
            if commit and owned:
                call_back_sync(self.on_revoke, owned)
            leave = group.leave_request()
            if leave is not None:
                self._coord.request(leave)
        except SluiceError as exc:
            log.info("group %s: leave failed: %s", group.group_id, exc)
        finally:
            group.reset()

    def _drain_fetch(self, until: float | None = None) -> bool:
        """Read the answer of the fetch on the wire (so a different request can be answered);
        False if it has not come by ``until`` (it stays on the wire, to be read later)."""
        generation = self._in_flight
        if generation is None:
            return True
        try:
            response = self._conn.receive(until)
            if response is None:
                return False
            self._in_flight = None
            raise_for_error(response)  # top-level: e.g. the broker is shutting down
        except ConnectionLostError:  # (or it timed out): reopened by the next round
            self._in_flight = None
            return True
        except SluiceError as exc:
            if not is_retriable(exc):
                raise
            time.sleep(FETCH_RETRY_BACKOFF_S)  # then fetch again, as for a lost connection
            return True
        self._chunks += self._state.on_fetch(response, generation)
        return True

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
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state
        group = self._group
        while True:
            if group is not None:
                self._group_tick()
            while self._chunks:
                chunk = self._chunks.popleft()
                records = decode_batches(chunk.topic, chunk.partition, chunk.data, chunk.start)
                state.consumed((chunk.topic, chunk.partition), chunk.end)
                if records:
                    return records
            if deadline is not None and time.monotonic() >= deadline:
                return []
            if self._conn.sock is None and not self._conn.connect(deadline):
                return []
            state.check_positions()
            self._check_assignment()
            lookup = state.metadata_request()
            if lookup is not None and time.monotonic() >= self._next_topic_lookup:
                self._look_up(lookup, lambda answer: self._topics_found(ops.topic_metas(answer)),
                              deadline)
                if state.unresolved:  # deleted: look again later, fetching the others meanwhile
                    self._next_topic_lookup = time.monotonic() + TOPIC_LOOKUP_INTERVAL_S
                continue
            lookup = state.list_offsets_request()
            if lookup is not None:
                self._look_up(lookup, lambda answer: state.on_list_offsets(answer, state.generation),
                              deadline)
                continue
            self._send_fetch()
            if self._in_flight is None:  # nothing to fetch
                if self._conn.sock is None:
                    continue  # lost while sending: reopened by the next round
                if group is None and not state.unresolved:
                    return []
                wakes = [] if deadline is None else [deadline]
                if group is not None:
                    wakes.append(group.next_heartbeat)
                if state.unresolved:  # a deleted topic: wait for its return
                    wakes.append(self._next_topic_lookup)
                time.sleep(max(0.0, min(wakes) - time.monotonic()))
                continue
            self._drain_fetch(deadline)
            self._send_fetch()  # the next fetch travels while the caller handles these

    def _look_up(self, request, take, until: float | None) -> None:
        """Send ``request`` once the fetch on the wire is answered (if that is not by
        ``until``, nothing is sent), and ``take`` its answer; a retriable failure (connection
        lost or timed out, broker restarting) is retried by the next round."""
        if not self._drain_fetch(until):
            return
        try:
            take(self._conn.request(request))
        except ConnectionLostError:
            pass  # reopened by the next round
        except SluiceError as exc:
            if not is_retriable(exc):
                raise
            time.sleep(FETCH_RETRY_BACKOFF_S)

    def _send_fetch(self) -> None:
        request = self._state.fetch_request()
        if request is not None and self._in_flight is None and self._conn.sock is not None:
            try:
                self._conn.send(request, timeout_s=self.fetch_timeout_s)
                self._in_flight = self._state.generation
            except ConnectionLostError:
                pass  # reopened by the next round

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


__all__ = ["Admin", "Consumer", "Producer", "SyncConnection"]
