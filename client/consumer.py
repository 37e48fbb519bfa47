"""The trio ``Consumer``: assigned partitions, pipelined fetches, records by the batch.

A fetch task keeps the next fetch in flight while the application works through the current
one: fetched chunks go through a one-slot channel, and are decoded (one msgpack call per
batch) only when the application reaches them. ``async for`` hands out buffered records
without awaiting anything; it yields to the scheduler once per fetched chunk.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from client import admin_ops as ops
from client.connection import DEFAULT_BOOTSTRAP
from client.errors import ConnectionLostError
from client.fetcher import EARLIEST, LATEST, FetchState
from client.lifecycle import ClientLifecycle
from client.records import Record, decode_batches

RETRY_BACKOFF_S = 0.1


class Consumer(ClientLifecycle):
    """Async consumer; ``async with Consumer(...) as consumer: async for record in consumer``.

    ``topics`` assigns every partition of those topics; or call ``assign`` explicitly.
    Consumer groups (``group_id``) arrive with the groups feature.
    """

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        topics=None,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        fetch_max_bytes: int = 50 * 1024 * 1024,
        partition_max_bytes: int = 8 * 1024 * 1024,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        client_id: str = "sluice-consumer",
    ) -> None:
        if group_id is not None:
            raise NotImplementedError(
                "consumer groups are not available yet: use assign() with explicit partitions"
            )
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.topics = [topics] if isinstance(topics, str) else list(topics or [])
        self._state = FetchState(
            auto_offset_reset=auto_offset_reset,
            fetch_max_bytes=fetch_max_bytes,
            partition_max_bytes=partition_max_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
        )
        self._changed = trio.Event()
        self._chunks_in: trio.MemoryReceiveChannel | None = None
        self._records: list[Record] = []
        self._index = 0

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        if self.topics:
            parts = []
            for topic in self.topics:
                count = await self._cluster.partitions(topic)
                parts += [(topic, p) for p in range(count)]
            self.assign(parts)
        send, self._chunks_in = trio.open_memory_channel(1)
        nursery.start_soon(self._fetch_loop, send)

    # -- assignment and positions ----------------------------------------------------------

    def assign(self, partitions) -> None:
        """Consume exactly these ``(topic, partition)`` pairs (replacing any assignment)."""
        self._settle()
        self._state.assign(partitions)
        self._changed.set()

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count (``UnknownTopicOrPartitionError`` if it has none)."""
        return await self._cluster.partitions(topic)

    def assignment(self) -> list[tuple[str, int]]:
        return list(self._state.assignment)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """The next record returned for this partition will be the one at ``offset``."""
        self._settle()
        self._state.seek((topic, partition), offset)
        self._changed.set()

    def seek_to_beginning(self, *partitions) -> None:
        """Restart the given partitions (default: all assigned) at their first offset."""
        self._seek_to(partitions, EARLIEST)

    def seek_to_end(self, *partitions) -> None:
        """Skip to the end: only records produced from now on are returned."""
        self._seek_to(partitions, LATEST)

    def seek_to_time(self, timestamp_ms: int, *partitions) -> None:
        """Start at the first record with timestamp >= ``timestamp_ms``."""
        self._seek_to(partitions, timestamp_ms)

    def _seek_to(self, partitions, spec: int) -> None:
        self._settle()
        for tp in partitions or self._state.assignment:
            self._state.seek_to(tuple(tp), spec)
        self._changed.set()

    def position(self, topic: str, partition: int) -> int | None:
        """The offset of the next record this consumer will return (None: not known yet)."""
        records, index = self._records, self._index
        if index < len(records) and records[0].topic == topic and records[0].partition == partition:
            return records[index].offset
        return self._state.positions.get((topic, partition))

    async def offsets_for_times(self, timestamps: dict) -> dict:
        """``{(topic, partition): ts}`` -> ``{(topic, partition): (offset, ts) or None}``."""
        return await self._list_offsets(timestamps)

    async def beginning_offsets(self, partitions) -> dict:
        found = await self._list_offsets({tuple(tp): EARLIEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def end_offsets(self, partitions) -> dict:
        found = await self._list_offsets({tuple(tp): LATEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def _list_offsets(self, specs: dict) -> dict:
        return ops.offsets(await self._cluster.request(ops.list_offsets(specs)))

    def _settle(self) -> None:
        """Drop the unread rest of the current chunk; its partition resumes at the first
        unread record. (A chunk holds one partition's records.)"""
        records, index = self._records, self._index
        if index < len(records):
            first = records[index]
            self._state.consumed((first.topic, first.partition), first.offset)
        self._records, self._index = [], 0

    # -- reading -----------------------------------------------------------------------------

    async def getmany(self) -> list[Record]:
        """The next non-empty list of records (from one fetched chunk)."""
        while True:
            if self._index < len(self._records):
                records = self._records[self._index:] if self._index else self._records
                self._records, self._index = [], 0
                return records
            item = await self._chunks_in.receive()
            if isinstance(item, BaseException):
                raise item
            generation, chunk = item
            if generation != self._state.generation:
                continue
            records = decode_batches(chunk.topic, chunk.partition, chunk.data, chunk.start)
            self._state.consumed((chunk.topic, chunk.partition), chunk.end)
            if records:
                return records

    def batches(self) -> _Batches:
        """Async iterator of record lists (one per fetched chunk): the fastest way to consume.

        A plain iterator object, not an async generator, so breaking out of it is safe."""
        return _Batches(self)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        index = self._index
        records = self._records
        if index < len(records):
            self._index = index + 1
            return records[index]
        self._records = await self.getmany()
        self._index = 1
        return self._records[0]

    # -- the fetch task ----------------------------------------------------------------------

    async def _fetch_loop(self, out: trio.MemorySendChannel) -> None:
        async with out:
            while True:
                try:
                    await self._fetch_once(out)
                except ConnectionLostError:
                    await trio.sleep(RETRY_BACKOFF_S)
                except Exception as exc:  # delivered to the application, which raises it
                    self._changed = trio.Event()
                    await out.send(exc)
                    await self._changed.wait()

    async def _fetch_once(self, out: trio.MemorySendChannel) -> None:
        state = self._state
        state.check_positions()
        generation = state.generation
        lookup = state.list_offsets_request()
        if lookup is not None:
            response = await self._cluster.request(lookup)
            state.on_list_offsets(response, generation)
            return
        request = state.fetch_request()
        if request is None:
            self._changed = trio.Event()
            await self._changed.wait()
            return
        response = await self._cluster.request(request)
        for chunk in state.on_fetch(response, generation):
            await out.send((generation, chunk))


class _Batches:
    __slots__ = ("_consumer",)

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Record]:
        return await self._consumer.getmany()
