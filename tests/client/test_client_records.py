"""Consumed records are built per batch; the first batch is trimmed to the requested offset."""

import pytest
from sluice.client.records import Record, decode_batches, next_offset_after
from sluice.client.tail import parse_since
from sluice.protocol.batch import (
    HEADER_SIZE,
    BatchMagicError,
    BatchRecordsError,
    assemble,
    build_batch,
    stamp,
)


def batch_at(base_offset, values):
    batch = build_batch([(None, v, [("n", v)], 100 + i) for i, v in enumerate(values)])
    stamp(batch, base_offset)
    return bytes(batch)


def test_decode_skips_records_below_start_and_keeps_headers():
    data = batch_at(10, [b"a", b"b", b"c"]) + batch_at(13, [b"d"])
    records = decode_batches("t", 2, data, 11)
    assert records == [
        Record("t", 2, 11, 101, None, b"b", [("n", b"b")]),
        Record("t", 2, 12, 102, None, b"c", [("n", b"c")]),
        Record("t", 2, 13, 100, None, b"d", [("n", b"d")]),
    ]
    assert next_offset_after(data) == 14


def test_since_accepts_ms_relative_and_iso():
    assert parse_since("1700000000000") == 1_700_000_000_000
    assert parse_since("15m", now_ms=1_000_000) == 100_000
    assert parse_since("2024-01-01T00:00:00+00:00") == 1_704_067_200_000


def test_batch_whose_records_disagree_with_its_header_is_a_named_error():
    one_record = build_batch([(b"k", b"a", [], 0)])
    batch = assemble(bytes(one_record[HEADER_SIZE:]), record_count=2, base_timestamp=0,
                     max_timestamp=0)
    stamp(batch, 40)
    with pytest.raises(BatchRecordsError, match=r"t\[0\] batch at offset 40 has malformed records"):
        decode_batches("t", 0, batch_at(38, [b"x", b"y"]) + bytes(batch), 0)


def test_compressed_batches_are_decompressed_by_the_consumer():
    plain = batch_at(0, [b"a", b"b"])
    for codec in range(1, 5):
        batch = build_batch([(None, v, [("n", v)], 100 + i) for i, v in enumerate([b"a", b"b"])],
                            compression_codec=codec)
        assert decode_batches("t", 1, bytes(batch), 1) == decode_batches("t", 1, plain, 1)


def test_an_old_format_batch_is_refused_plainly():
    old = bytearray(batch_at(0, [b"a"]))
    old[16] = 1  # magic 1: the msgpack records of Sluice before Kafka's v2
    with pytest.raises(BatchMagicError, match="magic 1"):
        decode_batches("t", 0, bytes(old), 0)
