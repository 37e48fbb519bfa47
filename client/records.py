"""The record types users see, and the per-batch decoding that builds them.

``Record`` and ``RecordMetadata`` are NamedTuples: building one is a single C-level tuple
allocation. Decoding is per batch: one msgpack call unpacks a batch's columns (see
``protocol.batch``), then ``map``/``zip`` build the records without a Python-level loop, so
nothing here runs Python bytecode per record.
"""

from __future__ import annotations

import gc
from itertools import repeat
from operator import add
from typing import NamedTuple

import msgpack
from sluice.protocol.batch import HEADER, HEADER_SIZE, BatchRecordsError, split_batches


class Record(NamedTuple):
    """A consumed record. ``headers`` is a list of ``(str, bytes)`` pairs; timestamp in ms."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class RecordMetadata(NamedTuple):
    """Where a produced record was written (``offset`` is -1 when sent with acks=0)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


_new = tuple.__new__
_unpackb = msgpack.unpackb
NO_HEADERS = ()


def decode_batches(
    topic: str, partition: int, data: bytes | memoryview, start: int
) -> list[Record]:
    """Every record of the whole batches in ``data`` whose offset is >= ``start``.

    ``start`` skips the records of the first batch that precede the requested offset (a fetch
    returns whole batches, so it can begin before the offset asked for).
    """
    view = memoryview(data)
    out: list[Record] = []
    positions, _ = split_batches(view)
    # Building ~10^5 small objects in a burst would trigger many (useless: nothing here is
    # garbage) collections, costing several times the decoding itself; defer them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for pos, size in positions:
            _decode_batch(out, topic, partition, view[pos : pos + size], start)
    finally:
        if collecting:
            gc.enable()
    return out


def _decode_batch(out: list[Record], topic: str, partition: int, batch, start: int) -> None:
    fields = HEADER.unpack_from(batch, 0)
    base_offset, base_ts, count = fields[0], fields[7], fields[12]
    skip = start - base_offset
    if skip >= count:
        return
    try:
        deltas, keys, values, headers = _unpackb(batch[HEADER_SIZE:], use_list=False)
        if len(values) != count:
            raise ValueError(f"{len(values)} values for {count} records")
        if skip > 0:
            values = values[skip:]
            deltas = deltas[skip:] if deltas is not None else None
            keys = keys[skip:] if keys is not None else None
            headers = headers[skip:] if headers is not None else None
            base_offset = start
        n = len(values)
        out += map(
            _new,
            repeat(Record, n),
            zip(
                repeat(topic, n),
                repeat(partition, n),
                range(base_offset, base_offset + n),
                repeat(base_ts, n) if deltas is None else map(add, deltas, repeat(base_ts)),
                repeat(None, n) if keys is None else keys,
                values,
                map(list, repeat(NO_HEADERS, n) if headers is None else headers),
                strict=True,
            ),
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        # The broker checks a batch's header and CRC, not its columns: a producer bug shows here.
        raise BatchRecordsError(
            f"{topic}[{partition}] batch at offset {fields[0]} has malformed records: {exc}"
        ) from None


def next_offset_after(data: bytes | memoryview) -> int | None:
    """The offset after the last whole batch in ``data`` (None if it holds no batch)."""
    positions, _ = split_batches(data)
    if not positions:
        return None
    pos, _size = positions[-1]
    fields = HEADER.unpack_from(data, pos)
    return fields[0] + fields[12]
