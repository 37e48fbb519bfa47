"""The record types users see, and the per-batch decoding that builds them.

``Record`` and ``RecordMetadata`` are NamedTuples: building one is a single C-level tuple
allocation, which is what lets a consumer hand out millions of records per second. Decoding
is per batch: one msgpack call unpacks every row of a batch, then one comprehension builds the
records; nothing here runs per record that could run per batch.
"""

from __future__ import annotations

import gc
from typing import NamedTuple

import msgpack

from protocol.batch import HEADER, HEADER_SIZE, split_batches


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
        _decode_into(out, topic, partition, view, positions, start)
    finally:
        if collecting:
            gc.enable()
    return out


def _decode_into(out, topic, partition, view, positions, start) -> None:
    for pos, size in positions:
        fields = HEADER.unpack_from(view, pos)
        base_offset, base_ts, count = fields[0], fields[7], fields[12]
        if base_offset + count <= start:
            continue
        rows = _unpackb(view[pos + HEADER_SIZE : pos + size], use_list=False)
        if base_offset < start:
            rows = rows[start - base_offset :]
        out += [
            _new(Record, (topic, partition, base_offset + od, base_ts + td, k, v, list(h)))
            for od, td, k, v, h in rows
        ]


def next_offset_after(data: bytes | memoryview) -> int | None:
    """The offset after the last whole batch in ``data`` (None if it holds no batch)."""
    positions, _ = split_batches(data)
    if not positions:
        return None
    pos, _size = positions[-1]
    fields = HEADER.unpack_from(data, pos)
    return fields[0] + fields[12]
