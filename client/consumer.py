"""The trio ``Consumer``: the consumer engine (``ConsumerBase``) on the trio driver.

The driver keeps the next fetch in flight while the application works through the current
chunk; each connection's reader hands a fetch answer straight to the engine, which queues its
chunks and wakes the application waiting for them. If the application was waiting, the next
fetch waits for it to take the chunk: the records reach it first, and the fetch goes out
right after. Chunks are decoded only when the application reaches them. ``async for`` hands
out buffered records without awaiting anything; it yields to the scheduler once per chunk.

With ``group_id`` a heartbeat task runs the group's work (``ConsumerBase._group_work``). A
revoked partition stops being fetched at once; the records of it already handed out are the
application's to finish, so the rest of the revoke (commit in auto-commit mode,
``on_revoke``, reporting it released) runs when the application next asks for a record --
or right away if it is waiting for one. Auto-commits follow the same rule: they only ever
commit records the application has finished with.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.consumer_base import PREFETCH_CHUNKS, PROCEDURES, ConsumerBase
from sluice.client.errors import ClientClosedError
from sluice.client.lifecycle import ClientLifecycle
from sluice.client.procedure import expose
from sluice.client.records import Record
from sluice.client.trio_driver import awaited

CLOSE_TIMEOUT_S = 10.0

__all__ = ["PREFETCH_CHUNKS", "Consumer"]


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
        super().__init__(bootstrap, client_id=client_id, clock=trio.current_time, **options)
        # Group bookkeeping (see the module docstring): ``_due`` makes the next record
        # request run ``_maintenance`` first; ``_holding`` is true while the application may
        # still be working on records handed out to it.
        self._due = False
        self._holding = False
        self._hb_wake = trio.Event()
        self._hb_done = trio.Event()
        self._closing = False
        self._hb_scope: trio.CancelScope | None = None

    def _parts(self) -> list:
        return [self]

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        self._kick = self._driver.kick
        await self._driver.run(self._start_procedure())
        self._start_fetching()
        stack.callback(self._stop_fetching)
        if self._group is not None:
            nursery.start_soon(self._heartbeat_loop)
            stack.push_async_exit(self._close_group)

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
        if self._index < len(self._records):
            records = self._records[self._index:] if self._index else self._records
            self._records, self._index = [], 0
            self._holding = True
            return records
        waited = False
        while True:
            records = self._next_records()
            if records is not None:
                if not waited:
                    await trio.lowlevel.checkpoint()  # trio's rule: an async call checkpoints
                    self._check_usable()
                self._holding = True
                return records
            self._hold = True  # the next fetch waits for us to take what it brings
            try:
                await self._driver.wait(self._ready_or_closed)
            finally:
                self._hold = False
            waited = True
            self._check_usable()  # closed while it waited (answers may have come in too)

    def _ready_or_closed(self) -> bool:
        return bool(self._ready) or not self._fetching

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

    async def _heartbeat_loop(self) -> None:
        group = self._group
        try:
            with trio.CancelScope() as self._hb_scope:
                while not self._closing:
                    safe = not self._holding  # the application is not inside a record: act now
                    await self._driver.run(self._group_work(safe))
                    if not safe and (group.revoking or group.auto_commit_due(trio.current_time())):
                        self._due = True  # ... else at its next request for records
                    self._hb_wake = trio.Event()
                    with trio.move_on_at(min(group.next_heartbeat, group.next_auto_commit)):
                        await self._hb_wake.wait()
        finally:
            self._hb_done.set()

    async def _maintenance(self) -> None:
        """Group work that must happen between records: finish revokes, auto-commit."""
        group = self._group
        with trio.CancelScope(shield=True):  # a half-done revoke must not be abandoned
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._driver.run(self._group_work(True))
        self._due = group.auto_commit_due(trio.current_time()) or any(
            tp not in self._claimed for tp in group.revoking
        )
        self._hb_wake.set()  # a release wants a heartbeat now

    async def _close_group(self, exc_type, exc, tb) -> bool:
        """On leaving ``async with``: commit (auto-commit, clean exit), ``on_revoke``, leave."""
        group = self._group
        self._closing = True
        self._hb_wake.set()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                with trio.move_on_after(group.heartbeat_interval_s * 2):
                    await self._hb_done.wait()
                if not self._hb_done.is_set() and self._hb_scope is not None:
                    self._hb_scope.cancel()
                await self._driver.run(self._leave(exc_type is None))
        return False


expose(Consumer, PROCEDURES, awaited)


class _Batches:
    __slots__ = ("_consumer",)

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Record]:
        return await self._consumer.getmany()
