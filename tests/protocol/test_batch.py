"""protocol/batch.py: the golden layout, round trips, and a named error for every corruption."""

import struct

import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st
from sluice.protocol.batch import (
    CONTROL,
    CRC_OFFSET,
    HEADER,
    HEADER_SIZE,
    LEADER_EPOCH_OFFSET,
    LOG_APPEND_TIME,
    BatchCrcError,
    BatchHeader,
    BatchHeaderError,
    BatchLengthError,
    BatchMagicError,
    BatchRecordsError,
    DecodedRecord,
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
        "00000046"  # batch_length 70
        "ffffffff"  # leader_epoch -1
        "02"  # magic
        "d0f5c61f"  # crc
        "0000"  # attributes
        "00000001"  # last_offset_delta
        "00000000000003e8"  # base_timestamp 1000 (the first record's)
        "00000000000003e8"  # max_timestamp 1000
        "0000000000000007"  # producer_id
        "0001"  # producer_epoch
        "00000003"  # base_sequence
        "00000002"  # record_count
        # record 0: length 12, attributes 0, timestamp delta 0, offset delta 0, key "k",
        # value "v", 1 header "h" = "1" (zigzag varints: 2 means 1)
        "18" "00" "00" "00" "026b" "0276" "02" "0268" "0231"
        # record 1: length 7, attributes 0, timestamp delta -1, offset delta 1, key null,
        # value "w", no headers
        "0e" "00" "01" "02" "01" "0277" "00"
    )
    assert crc32c(SMALL[21:]) == 0xD0F5C61F
    header = validate_batch(SMALL)
    assert (header.size, header.last_offset, header.next_offset, header.last_sequence) == (
        82,
        1,
        2,
        4,
    )


record = st.tuples(
    st.none() | st.binary(max_size=16),
    st.none() | st.binary(max_size=16),
    st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3),
    st.integers(0, 2**40),  # arbitrary order: timestamps may go backwards
)


@given(
    st.lists(record, min_size=1, max_size=20),
    st.integers(0, 2**62),
    st.sampled_from(range(5)),
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
def test_round_trip(records, base_offset, codec, producer):
    batch = build_batch(records, base_offset=base_offset, compression_codec=codec, **producer)
    header = validate_batch(batch)
    assert header.record_count == len(records)
    assert header.attributes == codec
    assert header.base_timestamp == records[0][3]
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
        (11, 1, BatchLengthError),  # 70 -> 68: shorter than the buffer
        (11, 0, TruncatedBatchError),  # 70 -> 71: longer than the buffer
        (16, 0, BatchMagicError),
        (17, 0, BatchCrcError),
        (21, 0, BatchHeaderError),  # attributes: an unknown bit
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
        (70 - 1, BatchLengthError),  # claims fewer bytes than the buffer holds
        (70 + 1, TruncatedBatchError),  # claims more
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
        ({"attributes": 0x40}, BatchHeaderError),  # unknown bit (Kafka's delete horizon)
        ({"attributes": -1}, BatchHeaderError),
        ({"attributes": 5}, BatchHeaderError),  # no such compression codec
        ({"attributes": 7}, BatchHeaderError),
        ({"magic": 0}, BatchMagicError),
        ({"magic": 1}, BatchMagicError),
        ({"magic": 3}, BatchMagicError),
        ({"max_timestamp": 999}, BatchHeaderError),
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


def test_magic_1_is_named_with_the_way_out():
    with pytest.raises(BatchMagicError, match="magic 1 .*sluice migrate --data-dir"):
        validate_batch(rebuilt(SMALL, magic=1))
    with pytest.raises(BatchMagicError, match="magic 1"):
        decode_records(rebuilt(SMALL, magic=1))


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (b"\xc1", 1),  # not a record
        (SMALL[HEADER_SIZE:-8], 2),  # the second record is missing
        (SMALL[HEADER_SIZE:-1], 2),  # the second record is cut short
        (SMALL[HEADER_SIZE:] + b"\x00", 2),  # a byte after the last record
        (SMALL[HEADER_SIZE:], 3),  # fewer records than the header says
        (SMALL[HEADER_SIZE:-8] + SMALL[HEADER_SIZE:-8], 2),  # offset deltas 0, 0
        (bytes.fromhex("1200000001010202ff01"), 1),  # a header key "\xff": not UTF-8
        (bytes.fromhex("0a00000001"), 1),  # record length 5, 4 bytes follow
    ],
)
def test_malformed_records_are_named_errors(payload, count):
    # A valid header and CRC around records that are not what they claim.
    batch = assemble(payload, record_count=count, base_timestamp=0, max_timestamp=0)
    validate_batch(batch)  # the broker never decodes records
    with pytest.raises(BatchRecordsError):
        decode_records(batch)


def test_corrupt_compressed_records_are_named_errors():
    for codec in range(1, 5):
        good = build_batch(RECORDS, compression_codec=codec)
        batch = assemble(
            bytes(good[HEADER_SIZE : HEADER_SIZE + 10]) + b"\x00" * 10,
            record_count=2, base_timestamp=1000, max_timestamp=1000, attributes=codec,
        )
        validate_batch(batch)
        with pytest.raises(BatchRecordsError):
            decode_records(batch)


def test_log_append_time_gives_every_record_the_max_timestamp():
    batch = rebuilt(SMALL, attributes=LOG_APPEND_TIME, max_timestamp=5000)
    assert [r.timestamp for r in decode_records(batch)] == [5000, 5000]


def test_a_control_batch_holds_no_user_records():
    assert decode_records(rebuilt(SMALL, attributes=CONTROL)) == []


def test_decoded_records():
    assert decode_records(SMALL) == [
        DecodedRecord(0, 1000, b"k", b"v", [("h", b"1")]),
        DecodedRecord(1, 999, None, b"w", []),
    ]


def test_empty_batch_cannot_be_built():
    with pytest.raises(BatchHeaderError):
        build_batch([])


# -- stamping and splitting -------------------------------------------------------------------


def test_stamp_keeps_the_crc_valid():
    batch = bytearray(SMALL)
    stamp(batch, 1234, leader_epoch=5)
    header = validate_batch(batch)
    assert (header.base_offset, header.leader_epoch, header.crc) == (1234, 5, 0xD0F5C61F)
    stamp(memoryview(batch), 99)
    assert validate_batch(batch).leader_epoch == 5
    assert [r.offset for r in decode_records(batch)] == [99, 100]


def test_split_batches_stops_at_a_partial_tail():
    second = build_batch([(None, b"x" * 100, [], 5)])
    stream = SMALL + second + SMALL
    whole = [(0, 82), (82, len(second)), (82 + len(second), 82)]
    assert split_batches(stream) == (whole, len(stream))
    for cut in range(1, len(SMALL)):
        found, end = split_batches(stream + SMALL[:cut])
        assert (found, end) == (whole, len(stream))
    assert split_batches(stream, 82) == (whole[1:], len(stream))
    assert [bytes(b) for b in iter_batches(stream + SMALL[:70])] == [SMALL, bytes(second), SMALL]
    assert split_batches(b"") == ([], 0)
    assert peek_size(SMALL[:11]) is None and peek_size(SMALL) == 82


def test_split_batches_refuses_an_impossible_length():
    with pytest.raises(BatchLengthError):
        split_batches(SMALL + bytes(rebuilt(SMALL, fix_crc=False, batch_length=3)))
