"""The record types users see, and the per-batch decoding that builds them.

``Record`` and ``RecordMetadata`` are NamedTuples: building one is a single C-level tuple
allocation. Decoding is per batch: one call into the compiled codec (``protocol.codec``)
decodes a batch's records (after decompressing them, if they are) straight into ``Record``s, so
nothing here runs Python bytecode per record.
"""

from __future__ import annotations

import gc
from typing import NamedTuple

from sluice.protocol.batch import HEADER, BatchRecordsError, decode_batch_into, split_batches


class Record(NamedTuple):
    """A consumed record. ``headers`` is a list of ``(str, bytes)`` pairs (a Kafka producer may
    send a None value); timestamp in ms."""

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
    prefix = (topic, partition)
    # Building ~10^5 small objects in a burst would trigger many (useless: nothing here is
    # garbage) collections, costing several times the decoding itself; defer them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for pos, size in positions:
            try:
                decode_batch_into(out, Record, prefix, view[pos : pos + size], start)
            except BatchRecordsError as exc:
                # The broker checks a batch's header and CRC, not its records: a producer bug
                # shows here.
                base_offset = HEADER.unpack_from(view, pos)[0]
                raise type(exc)(
                    f"{topic}[{partition}] batch at offset {base_offset} has malformed "
                    f"records: {exc}"
                ) from None
    finally:
        if collecting:
            gc.enable()
    return out


def next_offset_after(data: bytes | memoryview) -> int | None:
    """The offset after the last whole batch in ``data`` (None if it holds no batch)."""
    positions, _ = split_batches(data)
    if not positions:
        return None
    pos, _size = positions[-1]
    fields = HEADER.unpack_from(data, pos)
    return fields[0] + fields[12]
