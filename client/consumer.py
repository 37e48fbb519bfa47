"""The trio ``Consumer``: assigned partitions or a consumer group, pipelined fetches, records
by the batch.

A fetch task keeps the next fetch in flight while the application works through the current
one. The connection's reader hands each fetch response straight to ``_fetched`` (no task
wakes up in between), which queues its chunks in ``_ready`` and wakes whoever waits: the
application, and the fetch task once there is room for more. Chunks are decoded (one msgpack
call per batch) only when the application reaches them. ``async for`` hands out buffered
records without awaiting anything; it yields to the scheduler once per fetched chunk.

With ``group_id`` a heartbeat task keeps the membership (``client.group``) and follows the
broker's assignment. A revoked partition stops being fetched at once; the records of it
already handed out are the application's to finish, so the rest of the revoke (commit in
auto-commit mode, ``on_revoke``, reporting it released) runs when the application next asks
for a record -- or right away if it is waiting for one. Auto-commits follow the same rule:
they only ever commit records the application has finished with.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from contextlib import AsyncExitStack
from functools import partial

import trio
from sluice.client import admin_ops as ops
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.connection import Cluster, raise_for_error
from sluice.client.consumer_base import ConsumerBase
from sluice.client.errors import ClientClosedError, SluiceError, is_retriable
from sluice.client.fetcher import EARLIEST, LATEST
from sluice.client.group import REJOIN_ERRORS, call_back, normalize_offsets
from sluice.client.lifecycle import ClientLifecycle
from sluice.client.records import Record, decode_batches

log = logging.getLogger("sluice.consumer")

RETRY_BACKOFF_S = 0.1
TOPIC_LOOKUP_INTERVAL_S = 0.5  # how often to look whether a deleted topic is back
CLOSE_TIMEOUT_S = 10.0
# The next fetch is sent while fewer than this many fetched chunks wait to be handed out.
PREFETCH_CHUNKS = 2


class Consumer(ConsumerBase, ClientLifecycle):
    """Async consumer; ``async with Consumer(...) as consumer: async for record in consumer``.

    Without ``group_id``: ``topics`` assigns every partition of those topics; or call
    ``assign`` explicitly. With ``group_id``: joins the group, subscribed to ``topics``, and
    consumes the partitions the broker assigns (see docs/GROUPS.md). ``on_assign`` /
    ``on_revoke`` get a sorted list of ``(topic, partition)``; they may be sync or async.
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
        self.bootstrap = bootstrap
        self.client_id = client_id
        # Group bookkeeping (see the module docstring): ``_due`` makes the next record
        # request run ``_maintenance`` first; ``_holding`` is true while the application may
        # still be working on records handed out to it.
        self._due = False
        self._holding = False
        self._claimed: set = set()
        self._hb_wake = trio.Event()
        self._hb_done = trio.Event()
        self._closing = False
        self._hb_scope: trio.CancelScope | None = None
        self._coordinator: Cluster | None = None
        self._changed = trio.Event()
        # Fetched chunks (or an error for the application), oldest first, as
        # ``(generation, chunk or exception)``; ``_arrived`` wakes the application
        # waiting for one, ``_room`` the fetch task waiting for space or for its answer.
        self._ready: deque = deque()
        self._arrived = trio.Event()
        self._room = trio.Event()
        self._failure: Exception | None = None  # what stopped fetching, until positions change
        self._fetching = False
        self._next_topic_lookup = 0.0  # when to look again for a deleted topic's return

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        if self._group is not None:
            for topic in self.topics:
                await self._cluster.partitions(topic)  # unknown topic: fail here, clearly
            # Group requests get their own connection: on the fetch connection they would
            # queue behind a long-polling fetch (answers come in request order).
            self._coordinator = self._new_cluster(nursery)
            stack.push_async_callback(self._coordinator.aclose)
            await self._coordinator.connection()
            self._start_fetching(stack, nursery)
            nursery.start_soon(self._heartbeat_loop)
            stack.push_async_exit(self._close_group)
            return
        if self.topics:
            self._assign_topics({topic: await self._cluster.topic(topic) for topic in self.topics})
        self._start_fetching(stack, nursery)

    def _start_fetching(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        self._fetching = True
        stack.callback(self._stop_fetching)
        nursery.start_soon(self._fetch_loop)

    def _stop_fetching(self) -> None:
        self._fetching = False
        self._arrived.set()  # an application task waiting for records learns it is closed

    # -- assignment and positions ----------------------------------------------------------

    def _positions_changed(self) -> None:
        self._failure = None  # the fetch task tries again: so may the application
        self._changed.set()

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count, asked now (``UnknownTopicOrPartitionError`` if there
        is no such topic)."""
        return await self._cluster.partitions(topic, refresh=True)

    async def offsets_for_times(self, timestamps: dict) -> dict:
        """``{(topic, partition): ts}`` -> ``{(topic, partition): (offset, ts) or None}``: the
        base offset and max timestamp of the first batch whose max timestamp is >= ``ts``."""
        return await self._list_offsets(timestamps)

    async def beginning_offsets(self, partitions) -> dict:
        found = await self._list_offsets({tuple(tp): EARLIEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def end_offsets(self, partitions) -> dict:
        found = await self._list_offsets({tuple(tp): LATEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def _list_offsets(self, specs: dict) -> dict:
        return ops.offsets(await self._cluster.request(ops.list_offsets(specs)))

    # -- reading -----------------------------------------------------------------------------

    async def getmany(self) -> list[Record]:
        """The next non-empty list of records (from one fetched chunk).

        Raises ``ClientClosedError`` once the consumer is closed (records fetched before are
        not handed out then: in a group, their partitions may already belong to another
        member). An error that stops fetching (e.g. ``NoOffsetError``) is raised again by every
        call until the assignment or a position changes."""
        self._check_usable()
        self._holding = False
        if self._due:
            await self._maintenance()
        while True:
            if self._index < len(self._records):
                records = self._records[self._index:] if self._index else self._records
                self._records, self._index = [], 0
                self._holding = True
                return records
            ready = self._ready
            while not ready:
                self._check_usable()
                self._arrived = trio.Event()
                await self._arrived.wait()
            self._check_usable()  # closed while it waited (answers may have come in too)
            generation, chunk = ready.popleft()
            if len(ready) < PREFETCH_CHUNKS:
                self._room.set()
            if generation != self._state.generation:
                continue  # fetched, or failed, for positions the application has changed since
            if isinstance(chunk, Exception):
                self._failure = chunk
                self._check_usable()
            records = decode_batches(chunk.topic, chunk.partition, chunk.data, chunk.start)
            self._state.consumed((chunk.topic, chunk.partition), chunk.end)
            if records:
                self._holding = True
                return records

    def _check_usable(self) -> None:
        if not self._fetching:
            raise ClientClosedError("the consumer is not open (use `async with`)")
        if self._failure is not None:
            raise self._failure.with_traceback(None)

    def batches(self) -> _Batches:
        """Async iterator of record lists (one per fetched chunk): the fastest way to consume.

        A plain iterator object, not an async generator, so breaking out of it is safe."""
        return _Batches(self)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        if not self._fetching:
            self._check_usable()
        if self._due:  # the previous record is finished: a safe point for group work
            self._holding = False
            await self._maintenance()
        index = self._index
        records = self._records
        if index < len(records):
            self._index = index + 1
            return records[index]
        self._records = await self.getmany()
        self._index = 1
        return self._records[0]

    # -- groups ------------------------------------------------------------------------------

    async def commit(self, offsets=None) -> None:
        """Commit group offsets; returns once the broker has fsync'd them.

        ``offsets``: ``{(topic, partition): offset}``, the offset being the next one to read.
        Default: the position of every partition this member owns, i.e. everything handed
        out so far counts as processed -- call it after processing.
        """
        if self._group is None:
            raise ValueError("commit() needs a consumer with a group_id")
        if offsets is None:
            offsets = {tp: o for tp, o in self._positions().items() if o is not None}
        else:
            offsets = normalize_offsets(offsets)
        if offsets:
            await self._commit(offsets)

    async def committed(self, partitions=None) -> dict:
        """The group's committed offsets: ``{(topic, partition): offset or None}``."""
        if self._group is None:
            raise ValueError("committed() needs a consumer with a group_id")
        wanted = sorted(self._positions() if partitions is None else map(tuple, partitions))
        response = await self._coordinator.request(self._group.fetch_offsets_request(wanted))
        found = self._group.on_fetch_offsets(response)
        return {tp: found.get(tp) for tp in wanted}

    def _positions(self) -> dict:
        """Positions of every partition this member owns, including ones being revoked."""
        out = {tp: self.position(*tp) for tp in self._state.assignment}
        out.update(self._group.revoking)
        return out

    async def _commit(self, offsets: dict) -> None:
        group = self._group
        response = await self._coordinator.request(self._commit_request(offsets))
        group.on_commit(response, offsets)

    async def _commit_quietly(self, offsets: dict, why: str) -> None:
        """Background commits (auto, on revoke, on close) log failures instead of raising."""
        if not offsets:
            return
        try:
            await self._commit(offsets)
        except SluiceError as exc:
            log.warning("group %s: %s commit failed: %s", self._group.group_id, why, exc)

    async def _heartbeat_loop(self) -> None:
        group = self._group
        try:
            with trio.CancelScope() as self._hb_scope:
                while not self._closing:
                    now = trio.current_time()
                    if now >= group.next_heartbeat:
                        await self._heartbeat()
                        continue
                    if not self._holding:  # the application is not inside a record: act now
                        await self._finish_revokes()
                        if group.auto_commit_due(now):
                            await self._auto_commit()
                    elif group.revoking or group.auto_commit_due(now):
                        self._due = True  # ... else at its next request for records
                    self._hb_wake = trio.Event()
                    wake_at = min(group.next_heartbeat, group.next_auto_commit)
                    with trio.move_on_at(wake_at):
                        await self._hb_wake.wait()
        finally:
            self._hb_done.set()

    async def _heartbeat(self) -> None:
        group = self._group
        try:
            response = await self._coordinator.request(group.heartbeat_request(trio.current_time()))
        except REJOIN_ERRORS as exc:
            log.info("group %s: %s; rejoining", group.group_id, exc)
            await self._lose_all()
            return
        except SluiceError as exc:
            if not is_retriable(exc):
                raise
            group.next_heartbeat = trio.current_time() + RETRY_BACKOFF_S
            return
        plan = group.on_heartbeat(response, trio.current_time())
        if plan.revoke:
            self._start_revoke(plan.revoke)
        if plan.assign:
            await self._take(plan.assign)

    def _start_revoke(self, partitions) -> None:
        """Stop fetching ``partitions`` at once; commit and release follow (_finish_revokes)."""
        records, index = self._records, self._index
        if index < len(records) and (records[0].topic, records[0].partition) in partitions:
            self._settle()  # unread records of it are dropped: its position is the first one
        self._start_revoke_positions(partitions)
        self._positions_changed()
        self._due = True

    async def _finish_revokes(self) -> None:
        """Commit (auto-commit mode), ``on_revoke``, and report released; then heartbeat."""
        group = self._group
        todo = {tp: o for tp, o in group.revoking.items() if tp not in self._claimed}
        if not todo:
            return
        self._claimed.update(todo)
        try:
            if group.auto_commit:
                await self._commit_quietly(group.uncommitted(todo), "revoke")
            await call_back(self.on_revoke, sorted(todo))
        finally:
            self._claimed.difference_update(todo)
        group.released(todo)
        self._hb_wake.set()

    async def _take(self, partitions) -> None:
        """New partitions: start at their committed offsets (else auto_offset_reset)."""
        new = sorted(partitions)
        response = await self._coordinator.request(self._group.fetch_offsets_request(new))
        self._take_committed(new, response)
        await call_back(self.on_assign, new)
        self._positions_changed()

    async def _lose_all(self) -> None:
        """The broker forgot or fenced us: drop every partition (no commit), rejoin."""
        lost = self._group.reset()
        records, index = self._records, self._index
        if index < len(records):
            self._settle()
        self._state.assign([])
        self._positions_changed()
        if lost:
            await call_back(self.on_revoke, lost)

    async def _auto_commit(self) -> None:
        group = self._group
        group.auto_committed(trio.current_time())
        positions = {tp: self.position(*tp) for tp in self._state.assignment}
        await self._commit_quietly(group.uncommitted(positions), "auto")

    async def _maintenance(self) -> None:
        """Group work that must happen between records: finish revokes, auto-commit."""
        group = self._group
        with trio.CancelScope(shield=True):  # a half-done revoke must not be abandoned
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._finish_revokes()
                if group.auto_commit_due(trio.current_time()):
                    await self._auto_commit()
        self._due = group.auto_commit_due(trio.current_time()) or any(
            tp not in self._claimed for tp in group.revoking
        )

    async def _close_group(self, exc_type, exc, tb) -> bool:
        """On leaving ``async with``: commit (auto-commit, clean exit), ``on_revoke``, leave."""
        group = self._group
        self._closing = True
        self._hb_wake.set()
        clean = exc_type is None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                with trio.move_on_after(group.heartbeat_interval_s * 2):
                    await self._hb_done.wait()
                if not self._hb_done.is_set() and self._hb_scope is not None:
                    self._hb_scope.cancel()
                owned = sorted(group.owned)
                if clean and group.auto_commit and group.joined:
                    await self._commit_quietly(group.uncommitted(self._positions()), "final")
                if clean and owned:
                    await call_back(self.on_revoke, owned)
                self._state.assign([])
                self._positions_changed()
                leave = group.leave_request()
                if leave is not None:
                    try:
                        await self._coordinator.request(leave)
                    except SluiceError as exc:
                        log.info("group %s: leave failed: %s", group.group_id, exc)
                group.reset()
        return False

    # -- the fetch task ----------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while True:
            generation = self._state.generation
            try:
                await self._fetch_once(generation)
            except Exception as exc:
                if is_retriable(exc):  # connection lost, broker restarting: try again
                    await trio.sleep(RETRY_BACKOFF_S)
                elif self._state.generation == generation:  # else: stale, positions changed
                    # Delivered to the application, which raises it; fetching resumes when a
                    # position changes (the event exists before anything can set it).
                    self._changed = trio.Event()
                    self._deliver(generation, exc)
                    await self._changed.wait()

    async def _fetch_once(self, generation: int) -> None:
        """One round for the positions of ``generation``: a lookup, or a fetch. Returns early
        (to start over) if the positions change while it waits."""
        state = self._state
        state.check_positions()
        self._check_assignment()
        lookup = state.metadata_request()
        if lookup is not None and trio.current_time() >= self._next_topic_lookup:
            self._topics_found(ops.topic_metas(await self._cluster.request(lookup)))
            if state.unresolved:  # deleted: look again later, fetching the others meanwhile
                self._next_topic_lookup = trio.current_time() + TOPIC_LOOKUP_INTERVAL_S
            return
        lookup = state.list_offsets_request()
        if lookup is not None:
            response = await self._cluster.request(lookup)
            state.on_list_offsets(response, generation)
            return
        while len(self._ready) >= PREFETCH_CHUNKS:
            self._room = trio.Event()
            await self._room.wait()
        if state.generation != generation:
            return  # a seek set ``_changed`` while it waited; the next round sees the change
        request = state.fetch_request()
        if request is None:
            self._changed = trio.Event()
            with trio.move_on_at(self._next_topic_lookup if state.unresolved else math.inf):
                await self._changed.wait()
            return
        answer: list = []
        conn = await self._cluster.connection()
        await conn.send(
            request, partial(self._fetched, generation, answer), timeout_s=self.fetch_timeout_s
        )
        while not answer:
            self._room = trio.Event()
            await self._room.wait()
        error = answer[0]
        if error is not None:
            raise error

    def _fetched(self, generation: int, answer: list, response, error) -> None:
        """A fetch response, called by the connection's reader: queue its chunks and wake the
        application at once. Anything that goes wrong goes back to the fetch task.

        If the application was waiting for these chunks, the fetch task is left for it to
        wake (when it takes one): the records reach it first, and the next fetch goes out
        right after, instead of the two racing for the same turn of the scheduler."""
        handed = False
        if error is None:
            try:
                raise_for_error(response)
                waiting = self._arrived.statistics().tasks_waiting > 0  # in getmany
                for chunk in self._state.on_fetch(response, generation):
                    self._deliver(generation, chunk)
                    handed = waiting
            except Exception as exc:
                error = exc
        answer.append(error)
        if error is not None or not handed:
            self._room.set()

    def _deliver(self, generation: int, item) -> None:
        self._ready.append((generation, item))
        self._arrived.set()


class _Batches:
    __slots__ = ("_consumer",)

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Record]:
        return await self._consumer.getmany()
