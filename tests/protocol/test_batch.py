"""protocol/batch.py: the golden layout, round trips, and a named error for every corruption."""

import struct

import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st
from sluice.protocol.batch import (
    CRC_OFFSET,
    HEADER,
    HEADER_SIZE,
    LEADER_EPOCH_OFFSET,
    BatchCrcError,
    BatchHeader,
    BatchHeaderError,
    BatchLengthError,
    BatchMagicError,
    BatchRecordsError,
    InvalidBatchError,
    TruncatedBatchError,
    assemble,
    build_batch,
    compute_crc,
    decode_records,
    iter_batches,
    parse_header,
    peek_size,
    split_batches,
    stamp,
    validate_batch,
)
from sluice.protocol.errors import CorruptRecordError

RECORDS = [(b"k", b"v", [("h", b"1")], 1000), (None, b"w", [], 999)]
PRODUCER = {"producer_id": 7, "producer_epoch": 1, "base_sequence": 3}
SMALL = bytes(build_batch(RECORDS, **PRODUCER))


def rebuilt(batch: bytes, *, fix_crc: bool = True, **changes: int) -> bytearray:
    """``batch`` with header fields replaced, the CRC recomputed unless ``fix_crc`` is False."""
    fields = parse_header(batch)._asdict() | changes
    out = bytearray(batch)
    HEADER.pack_into(out, 0, *(fields[name] for name in BatchHeader._fields))
    if fix_crc:
        struct.pack_into(">I", out, CRC_OFFSET, compute_crc(out))
    return out


def test_golden_batch():
    assert SMALL.hex() == (
        "0000000000000000"  # base_offset 0
        "0000004a"  # batch_length 74
        "ffffffff"  # leader_epoch -1
        "01"  # magic
        "d92d9e86"  # crc
        "0000"  # attributes
        "00000001"  # last_offset_delta
        "00000000000003e7"  # base_timestamp 999 (the smallest)
        "00000000000003e8"  # max_timestamp 1000
        "0000000000000007"  # producer_id
        "0001"  # producer_epoch
        "00000003"  # base_sequence
        "00000002"  # record_count
        # columns [timestamp_deltas, keys, values, headers]:
        # [[1, 0], [b"k", nil], [b"v", b"w"], [[["h", b"1"]], []]]
        "9492010092c4016bc092c40176c40177929192a168c4013190"
    )
    assert crc32c(SMALL[21:]) == 0xD92D9E86
    header = validate_batch(SMALL)
    assert (header.size, header.last_offset, header.next_offset, header.last_sequence) == (
        86,
        1,
        2,
        4,
    )


record = st.tuples(
    st.none() | st.binary(max_size=16),
    st.none() | st.binary(max_size=16),
    st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=3),
    st.integers(0, 2**40),  # arbitrary order: timestamps may go backwards
)


@given(
    st.lists(record, min_size=1, max_size=20),
    st.integers(0, 2**62),
    st.one_of(
        st.just({}),
        st.fixed_dictionaries(
            {
                "producer_id": st.integers(0, 2**63 - 1),
                "producer_epoch": st.integers(0, 2**15 - 1),
                "base_sequence": st.integers(0, 2**31 - 1),
            }
        ),
    ),
)
def test_round_trip(records, base_offset, producer):
    batch = build_batch(records, base_offset=base_offset, **producer)
    header = validate_batch(batch)
    assert header.record_count == len(records)
    assert header.base_timestamp == min(r[3] for r in records)
    assert header.max_timestamp == max(r[3] for r in records)
    decoded = decode_records(batch)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in decoded] == records
    assert [r.offset for r in decoded] == list(range(base_offset, base_offset + len(records)))


def test_the_error_family():
    assert issubclass(InvalidBatchError, CorruptRecordError)
    for cls in (TruncatedBatchError, BatchLengthError, BatchMagicError, BatchCrcError):
        assert issubclass(cls, InvalidBatchError)


# -- corruption -------------------------------------------------------------------------------

UNPROTECTED = set(range(0, 8)) | set(range(LEADER_EPOCH_OFFSET, LEADER_EPOCH_OFFSET + 4))


@pytest.mark.parametrize("byte", range(len(SMALL)))
def test_every_bit_flip(byte):
    for bit in range(8):
        corrupt = bytearray(SMALL)
        corrupt[byte] ^= 1 << bit
        if byte in UNPROTECTED:
            # base_offset and leader_epoch are stamped by the broker, outside the CRC by design.
            header = validate_batch(corrupt)
            assert (header.base_offset, header.leader_epoch) != (0, -1)
        else:
            with pytest.raises(InvalidBatchError):
                validate_batch(corrupt)


@pytest.mark.parametrize(
    ("byte", "bit", "error"),
    [
        (8, 7, BatchLengthError),  # batch_length goes negative
        (11, 1, BatchLengthError),  # 74 -> 72: shorter than the buffer
        (11, 0, TruncatedBatchError),  # 74 -> 75: longer than the buffer
        (16, 0, BatchMagicError),
        (17, 0, BatchCrcError),
        (22, 1, BatchHeaderError),  # attributes: a compression codec
        (60, 0, BatchHeaderError),  # record_count no longer matches last_offset_delta
        (70, 0, BatchCrcError),  # inside the records
    ],
)
def test_bit_flips_name_their_error(byte, bit, error):
    corrupt = bytearray(SMALL)
    corrupt[byte] ^= 1 << bit
    with pytest.raises(error):
        validate_batch(corrupt)


def test_every_truncation():
    for length in range(len(SMALL)):
        with pytest.raises(TruncatedBatchError):
            validate_batch(SMALL[:length])


@pytest.mark.parametrize(
    ("batch_length", "error"),
    [
        (74 - 1, BatchLengthError),  # claims fewer bytes than the buffer holds
        (74 + 1, TruncatedBatchError),  # claims more
        (HEADER_SIZE - 12 - 1, BatchLengthError),  # cannot even hold a header
        (-1, BatchLengthError),
    ],
)
def test_wrong_batch_length(batch_length, error):
    with pytest.raises(error):
        validate_batch(rebuilt(SMALL, batch_length=batch_length))


def test_trailing_bytes_are_refused():
    with pytest.raises(BatchLengthError):
        validate_batch(SMALL + b"\x00")


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"record_count": 0, "last_offset_delta": -1}, BatchHeaderError),
        ({"record_count": -1, "last_offset_delta": -2}, BatchHeaderError),
        ({"last_offset_delta": 5}, BatchHeaderError),
        ({"attributes": 0x0100}, BatchHeaderError),  # unknown bit
        ({"attributes": -1}, BatchHeaderError),
        ({"attributes": 1}, BatchHeaderError),  # a compression codec
        ({"magic": 0}, BatchMagicError),
        ({"magic": 2}, BatchMagicError),
        ({"max_timestamp": 998}, BatchHeaderError),
        ({"producer_id": -1}, BatchHeaderError),  # epoch and sequence without an id
        ({"producer_epoch": -1}, BatchHeaderError),
        ({"base_sequence": -1}, BatchHeaderError),
        ({"producer_id": -2}, BatchHeaderError),
    ],
)
def test_impossible_header_fields(changes, error):
    with pytest.raises(error):
        validate_batch(rebuilt(SMALL, **changes))


def test_non_idempotent_producer_fields():
    plain = build_batch(RECORDS)
    header = validate_batch(plain)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-1, -1, -1)
    assert header.last_sequence == -1
    with pytest.raises(BatchHeaderError):
        validate_batch(rebuilt(plain, producer_epoch=0))


def test_sequence_wraps():
    batch = build_batch(RECORDS, producer_id=1, producer_epoch=0, base_sequence=2**31 - 1)
    assert validate_batch(batch).last_sequence == 0


def test_records_payload_errors():
    # A valid header and CRC around a payload that is not the records it claims.
    garbage = assemble(b"\xc1", record_count=1, base_timestamp=0, max_timestamp=0)
    validate_batch(garbage)  # the broker never decodes records
    with pytest.raises(BatchRecordsError):
        decode_records(garbage)
    short = assemble(b"\x91\x90", record_count=2, base_timestamp=0, max_timestamp=0)
    with pytest.raises(BatchRecordsError):
        decode_records(short)
    bad_row = assemble(b"\x91\x93\x00\x00\x00", record_count=1, base_timestamp=0, max_timestamp=0)
    with pytest.raises(BatchRecordsError):
        decode_records(bad_row)


def test_empty_batch_cannot_be_built():
    with pytest.raises(BatchHeaderError):
        build_batch([])


# -- stamping and splitting -------------------------------------------------------------------


def test_stamp_keeps_the_crc_valid():
    batch = bytearray(SMALL)
    stamp(batch, 1234, leader_epoch=5)
    header = validate_batch(batch)
    assert (header.base_offset, header.leader_epoch, header.crc) == (1234, 5, 0xD92D9E86)
    stamp(memoryview(batch), 99)
    assert validate_batch(batch).leader_epoch == 5
    assert [r.offset for r in decode_records(batch)] == [99, 100]


def test_split_batches_stops_at_a_partial_tail():
    second = build_batch([(None, b"x" * 100, [], 5)])
    stream = SMALL + second + SMALL
    whole = [(0, 86), (86, len(second)), (86 + len(second), 86)]
    assert split_batches(stream) == (whole, len(stream))
    for cut in range(1, len(SMALL)):
        found, end = split_batches(stream + SMALL[:cut])
        assert (found, end) == (whole, len(stream))
    assert split_batches(stream, 86) == (whole[1:], len(stream))
    assert [bytes(b) for b in iter_batches(stream + SMALL[:70])] == [SMALL, bytes(second), SMALL]
    assert split_batches(b"") == ([], 0)
    assert peek_size(SMALL[:11]) is None and peek_size(SMALL) == 86


def test_split_batches_refuses_an_impossible_length():
    with pytest.raises(BatchLengthError):
        split_batches(SMALL + bytes(rebuilt(SMALL, fix_crc=False, batch_length=3)))


@pytest.mark.parametrize(
    "columns",
    [
        [None, None, [b"a"]],  # three columns
        [None, None, None, None],  # values may not be nil
        [None, None, [b"a", b"b", b"c"], None],  # values longer than record_count
        [[0], None, [b"a", b"b"], None],  # a timestamp column of the wrong length
        [None, [b"k"], [b"a", b"b"], None],  # a key column of the wrong length
        [None, None, [b"a", b"b"], [[]]],  # a headers column of the wrong length
        {"values": [b"a", b"b"]},  # not an array
    ],
)
def test_malformed_columns_are_named_errors(columns):
    payload = msgpack.packb(columns, use_bin_type=True)
    batch = assemble(payload, record_count=2, base_timestamp=0, max_timestamp=0)
    validate_batch(batch)  # the CRC is right: only decoding can tell
    with pytest.raises(BatchRecordsError):
        decode_records(batch)


def test_nil_columns_mean_defaults():
    payload = msgpack.packb([None, None, [b"a", None], None], use_bin_type=True)
    batch = assemble(payload, record_count=2, base_timestamp=42, max_timestamp=42)
    stamp(batch, 10)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decode_records(batch)] == [
        (10, 42, None, b"a", []),
        (11, 42, None, None, []),
    ]
