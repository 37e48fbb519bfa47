"""``GET /api/topics/NAME/tail``: a topic's new records as server-sent events, as they arrive.

Query: ``partition`` (one partition; all of them if absent) and ``from`` (``end``, the
default: only what arrives from now on; ``beginning``; or an offset).

Events: ``hello`` (the positions it starts from), ``records`` (a JSON list of records:
partition, offset, timestamp, key, value, headers -- keys, values and header values as text,
cut at ``TEXT_LIMIT`` characters -- and each value's size in bytes), ``skipped`` (the tail fell
more than ``MAX_BEHIND`` offsets behind a partition and jumped to near its end),
``undecodable`` (batches whose records could not be decoded, e.g. a producer's corrupt
compressed payload: the broker checks CRCs, it never decompresses), ``end`` (the topic was
deleted, or the broker is stopping), and a comment every ``KEEPALIVE_S`` while idle.

A tail is a viewer, not a consumer, and costs the data path little whatever the topic's
traffic: it reads at most ``READ_BYTES`` per partition at a time, at most once every
``INTERVAL_S``, copies and decodes them in a worker thread, and waits for appends the way a
long poll does (``Partition.watch``: woken by the next append, never by polling). Its reads
are not counted as fetches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from sluice.broker.domain.broker import Broker
from sluice.broker.domain.fetching import release_slices
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.topics import is_internal
from sluice.broker.web.http import EventStream, HttpError, HttpRequest
from sluice.protocol.batch import DecodedRecord, InvalidBatchError, decode_batch_into, iter_batches
from sluice.protocol.errors import ApiError, OffsetOutOfRangeError
from sluice.protocol.slices import FileSlice

READ_BYTES = 256 * 1024
INTERVAL_S = 0.2
KEEPALIVE_S = 15.0
MAX_BEHIND = 10_000  # offsets; further behind, the tail jumps to the last SKIP_TO of them
SKIP_TO = 100
MAX_RECORDS = 500  # per event
TEXT_LIMIT = 1000  # characters of a key, value or header shown

Send = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class _Position:
    partition: int
    offset: int


class Tail:
    """The tail endpoint over one ``Broker``."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def open(self, request: HttpRequest, name: str) -> EventStream:
        """Check the request and start a stream (``HttpError`` 400/404 before any event)."""
        info = self._broker.topics.topic(name)
        if info is None or is_internal(name):
            raise HttpError(404, f"unknown topic {name!r}")
        count = info.config.partitions
        wanted = request.query.get("partition")
        if wanted is None or wanted == "":
            indexes = list(range(count))
        elif wanted.isdigit() and int(wanted) < count:
            indexes = [int(wanted)]
        else:
            raise HttpError(400, f"partition must be one of 0..{count - 1}, got {wanted!r}")
        start = request.query.get("from", "end")
        if start not in ("end", "beginning") and not start.isdigit():
            raise HttpError(400, f"from must be end, beginning or an offset, got {start!r}")
        positions = []
        for index in indexes:
            try:
                partition = self._broker.topics.partition(name, index)
            except ApiError as exc:
                raise HttpError(404, exc.message) from None
            offset = (partition.high_watermark if start == "end" else
                      partition.log_start_offset if start == "beginning" else int(start))
            positions.append(_Position(index, offset))
        return EventStream(lambda send: self._run(name, positions, send))

    async def _run(self, name: str, positions: list[_Position], send: Send) -> None:
        await send(b"retry: 2000\n\n" + _event("hello", {
            "topic": name, "positions": {p.partition: p.offset for p in positions}}))
        topics = self._broker.topics
        while not self._broker.stopping:
            partitions = [topics.find(name, p.partition) for p in positions]
            if any(p is None for p in partitions):
                await send(_event("end", {"reason": f"topic {name} was deleted"}))
                return
            sent = False
            for position, partition in zip(positions, partitions, strict=True):
                sent = await self._send_new(partition, position, send) or sent
            if sent:
                await trio.sleep(INTERVAL_S)  # at most one read per partition per interval
            elif not await _wait_for_append(partitions, positions):
                await send(b": keepalive\n\n")
        await send(_event("end", {"reason": "the broker is stopping"}))

    async def _send_new(self, partition: Partition, position: _Position, send: Send) -> bool:
        """Send the records of ``partition`` after ``position`` (advanced); whether any were."""
        end = partition.high_watermark
        if end - position.offset > MAX_BEHIND:
            await send(_event("skipped", {"partition": position.partition, "from": position.offset,
                                          "to": end - SKIP_TO}))
            position.offset = end - SKIP_TO
        if position.offset >= end:
            return False
        try:
            read = partition.read(position.offset, READ_BYTES, end)
        except OffsetOutOfRangeError:  # retention removed it: go on from the first there is
            position.offset = partition.log_start_offset
            return False
        records, undecodable = await trio.to_thread.run_sync(_decode, read.slices, position.offset)
        position.offset = max(position.offset, read.next_offset)
        if undecodable:
            await send(_event("undecodable", {"partition": position.partition,
                                              "batches": undecodable}))
        for first in range(0, len(records), MAX_RECORDS):
            await send(_event("records", [
                _record_json(position.partition, r) for r in records[first:first + MAX_RECORDS]]))
        return bool(records)


async def _wait_for_append(partitions: list[Partition], positions: list[_Position]) -> bool:
    """Wait until any partition has records past its position: True, or False after
    ``KEEPALIVE_S`` without any."""
    woke = trio.Event()
    for partition in partitions:
        partition.watch(woke)
    try:
        if any(p.high_watermark > pos.offset for p, pos in zip(partitions, positions, strict=True)):
            return True
        with trio.move_on_after(KEEPALIVE_S):
            await woke.wait()
            return True
        return False
    finally:
        for partition in partitions:
            partition.unwatch(woke)


def _decode(slices: list, first_offset: int) -> tuple[list[DecodedRecord], int]:
    """The records at or after ``first_offset`` in a read's slices, and how many batches
    could not be decoded; releases the slices. Blocking (it reads the files): run it in a
    worker thread."""
    try:
        data = b"".join(_bytes_of(piece) for piece in slices)
    finally:
        release_slices(slices)
    records: list[DecodedRecord] = []
    undecodable = 0
    for batch in iter_batches(data):
        try:
            decode_batch_into(records, DecodedRecord, (), batch, first_offset)
        except InvalidBatchError:
            undecodable += 1
    return records, undecodable


def _bytes_of(piece: FileSlice | bytes) -> bytes:
    if isinstance(piece, FileSlice):
        return os.pread(piece.file.fileno(), piece.length, piece.position)
    return bytes(piece)


def _record_json(partition: int, record: DecodedRecord) -> dict:
    return {
        "partition": partition, "offset": record.offset, "timestamp": record.timestamp,
        "key": _text(record.key), "value": _text(record.value),
        "value_bytes": None if record.value is None else len(record.value),
        "headers": [[name, _text(value)] for name, value in record.headers],
    }


def _text(data: bytes | None) -> str | None:
    """Bytes as text for a person: UTF-8 (other bytes escaped), cut at ``TEXT_LIMIT``."""
    if data is None:
        return None
    text = bytes(data[: TEXT_LIMIT * 4]).decode("utf-8", "backslashreplace")
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "\u2026"


def _event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
