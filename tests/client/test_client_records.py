"""Consumed records are built per batch; the first batch is trimmed to the requested offset."""

from sluice.client.records import Record, decode_batches, next_offset_after
from sluice.client.tail import parse_since
from sluice.protocol.batch import build_batch, stamp


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


def test_batch_with_inconsistent_columns_is_a_named_error():
    import msgpack
    import pytest
    from sluice.protocol.batch import BatchRecordsError, assemble

    payload = msgpack.packb([None, [b"k"], [b"a", b"b"], None], use_bin_type=True)
    batch = assemble(payload, record_count=2, base_timestamp=0, max_timestamp=0)
    with pytest.raises(BatchRecordsError, match="malformed records"):
        decode_batches("t", 0, batch, 0)
