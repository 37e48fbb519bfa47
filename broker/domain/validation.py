"""Produced batches, validated once: what every protocol's produce hands to ``Partition.append``.

``validate_produce`` is the only place a produced batch is split and checked (length, header
fields, CRC -- never the records, which stay compressed if they are) and held to the broker's
rules; its result, ``ValidatedBatches`` (positions and headers: counts, timestamps, producer
fields, compression), travels into the append unchanged (Kafka's ``LogAppendInfo``).
"""

from __future__ import annotations

from sluice.broker.storage.batches import ValidatedBatches
from sluice.protocol.batch import (
    CONTROL,
    TRANSACTIONAL,
    InvalidBatchError,
    split_batches,
    validate_batch,
)
from sluice.protocol.errors import (
    CorruptRecordError,
    InvalidRequestError,
    InvalidTimestampError,
    RecordTooLargeError,
)


def validate_produce(records: bytearray | memoryview, max_message_bytes: int) -> ValidatedBatches:
    """Check a produce body for one partition: whole batches only, each at most
    ``max_message_bytes``, a valid header and CRC, a non-negative timestamp, neither
    transactional nor control. Only Kafka's record batch v2 (magic 2) is accepted: an older
    Sluice client's magic-1 batch gets a ``CorruptRecordError`` saying so. ``records`` must
    be writable (offsets are stamped into it on append)."""
    view = memoryview(records)
    if view.readonly:
        raise TypeError("produce data must be a writable buffer: offsets are stamped in place")
    try:
        found, end = split_batches(view)
    except InvalidBatchError as exc:
        raise CorruptRecordError(str(exc)) from None
    if end != len(view) or not found:
        raise CorruptRecordError(
            f"produce data holds {len(found)} whole batch(es) and {len(view) - end} "
            "trailing bytes; it must be whole batches only"
        )
    positions, headers = [], []
    for position, size in found:
        if size > max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds max_message_bytes {max_message_bytes}"
            )
        header = validate_batch(view[position : position + size])
        if header.base_timestamp < 0:
            raise InvalidTimestampError(f"negative record timestamp {header.base_timestamp}")
        if header.attributes & TRANSACTIONAL:
            raise InvalidRequestError("transactions are not supported: a batch is transactional")
        if header.attributes & CONTROL:
            raise InvalidRequestError("control batches are written by brokers, not producers")
        positions.append(position)
        headers.append(header)
    return ValidatedBatches.built(view, tuple(positions), tuple(headers))
