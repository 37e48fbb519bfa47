"""The batch format pinned against an independent Kafka implementation (kafka-python).

Uncompressed batches must be identical byte for byte (but the leader epoch, which the broker
stamps: kafka-python writes 0, Sluice -1); compressed ones are compared by what each side
decodes from the other's bytes, for every codec.
"""

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from sluice.protocol.batch import (
    LEADER_EPOCH_OFFSET,
    build_batch,
    decode_records,
    stamp,
    validate_batch,
)

# (key, value, headers, timestamp): keys, null keys and values, empty values, headers with a
# null value, non-ASCII header keys, timestamps out of order.
RECORDS = [
    (b"user-1", b"clicked", [("trace", b"a1"), ("h\u00e9", b"")], 1_700_000_000_000),
    (None, b"no key", [], 1_700_000_000_005),
    (b"user-2", None, [("tombstone", None)], 1_699_999_999_990),
    (b"", b"", [], 1_700_000_000_005),
    (b"user-3", b"x" * 300, [], 1_700_000_000_100),
]
PRODUCER = {"producer_id": 42, "producer_epoch": 3, "base_sequence": 100}
# Compressible, so that kafka-python does not fall back to sending them uncompressed.
BULKY = [(b"k%d" % i, b"value %d " % i * 20, [("n", b"%d" % i)], 1_000 + i) for i in range(200)]


def kafka_python_batch(records, codec=0, producer_id=-1, producer_epoch=-1, base_sequence=-1):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=2**30,
    )
    for offset, (key, value, headers, timestamp) in enumerate(records):
        assert builder.append(offset, timestamp, key, value, headers) is not None
    return bytes(builder.build())


def kafka_python_decode(batch: bytes):
    decoded = DefaultRecordBatch(bytearray(batch))
    assert decoded.validate_crc()
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in decoded]


def expected(records, base_offset=0):
    return [(base_offset + i, ts, k, v, h) for i, (k, v, h, ts) in enumerate(records)]


def with_epoch(batch: bytes, epoch: int) -> bytes:
    out = bytearray(batch)
    stamp(out, int.from_bytes(batch[:8], "big", signed=True), leader_epoch=epoch)
    return bytes(out)


@pytest.mark.parametrize("producer", [{}, PRODUCER])
def test_uncompressed_bytes_are_identical(producer):
    ours = bytes(build_batch(RECORDS, **producer))
    theirs = kafka_python_batch(RECORDS, **producer)
    assert theirs[LEADER_EPOCH_OFFSET : LEADER_EPOCH_OFFSET + 4] == b"\x00" * 4
    assert with_epoch(ours, 0) == theirs


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("records", [RECORDS * 40, BULKY], ids=["mixed", "bulky"])
def test_each_side_reads_the_others_compressed_batches(codec, records):
    ours = build_batch(records, compression_codec=codec, **PRODUCER)
    stamp(ours, 500)
    assert kafka_python_decode(bytes(ours)) == expected(records, 500)

    theirs = bytearray(kafka_python_batch(records, codec, **PRODUCER))
    header = validate_batch(theirs)
    assert header.attributes & 0x07 == codec  # really compressed, not sent plain
    stamp(theirs, 500)
    assert [tuple(r) for r in decode_records(theirs)] == expected(records, 500)


def test_each_side_reads_the_others_uncompressed_batches():
    theirs = bytearray(kafka_python_batch(RECORDS, **PRODUCER))
    stamp(theirs, 7)
    assert [tuple(r) for r in decode_records(theirs)] == expected(RECORDS, 7)
    ours = bytes(build_batch(RECORDS, base_offset=7))
    assert kafka_python_decode(ours) == expected(RECORDS, 7)
