"""Kafka's primitive types: known encodings, round trips, and every way bytes can break them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sluice.protocol.kafka.errors import MalformedMessageError
from sluice.protocol.kafka.primitives import (
    read_bytes,
    read_count,
    read_int32_array,
    read_records,
    read_string,
    read_uint32,
    read_unsigned_varint,
    read_varint,
    read_varlong,
    skip_tagged_fields,
    write_bytes,
    write_count,
    write_records,
    write_string,
    write_unsigned_varint,
    write_varint,
    write_varlong,
)
from sluice.protocol.slices import FileSlice


def written(writer, *args) -> bytes:
    out = bytearray()
    writer(out, *args)
    return bytes(out)


# -- varints: Kafka's zigzag (ByteUtils.writeVarint) ------------------------------------------------


@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"), (63, b"\x7e"), (-64, b"\x7f"),
    (64, b"\x80\x01"), (150, b"\xac\x02"), (2**31 - 1, b"\xfe\xff\xff\xff\x0f"),
    (-(2**31), b"\xff\xff\xff\xff\x0f"),
])
def test_varint_known_encodings(value, encoded):
    assert written(write_varint, value) == encoded
    assert read_varint(encoded, 0) == (value, len(encoded))


def test_varlong_extremes():
    for value in (2**63 - 1, -(2**63)):
        data = written(write_varlong, value)
        assert len(data) == 10
        assert read_varlong(data, 0) == (value, 10)


@given(st.integers(-(2**31), 2**31 - 1), st.binary(max_size=4))
def test_varint_round_trip_with_trailing_bytes(value, trailing):
    data = written(write_varint, value)
    assert read_varint(data + trailing, 0) == (value, len(data))


@given(st.integers(-(2**63), 2**63 - 1))
def test_varlong_round_trip_byte_by_byte_prefixes_are_cut_short(value):
    data = written(write_varlong, value)
    assert read_varlong(data, 0) == (value, len(data))
    for cut in range(len(data)):
        with pytest.raises(MalformedMessageError, match="needs"):
            read_varlong(data[:cut], 0)


def test_varints_refuse_values_they_cannot_carry():
    with pytest.raises(ValueError):
        written(write_varint, 2**31)
    with pytest.raises(ValueError):
        written(write_varlong, -(2**63) - 1)
    with pytest.raises(ValueError):
        written(write_unsigned_varint, -1)


def test_overlong_varints_are_malformed():
    with pytest.raises(MalformedMessageError, match="longer than 5"):
        read_varint(b"\x80" * 6, 0)
    with pytest.raises(MalformedMessageError, match="overflows 32"):
        read_varint(b"\xff\xff\xff\xff\x7f", 0)
    with pytest.raises(MalformedMessageError, match="longer than 10"):
        read_varlong(b"\xff" * 11, 0)


# -- fixed ----------------------------------------------------------------------------------------


def test_uint32():
    assert read_uint32(b"\xff\xff\xff\xfe!", 0) == (2**32 - 2, 4)
    with pytest.raises(MalformedMessageError, match="needs 4 bytes"):
        read_uint32(b"\x00\x00\x00", 0)


# -- strings, bytes, records ----------------------------------------------------------------------


@given(st.text(max_size=40), st.booleans(), st.binary(max_size=3))
def test_string_round_trip(text, compact, trailing):
    data = written(write_string, text, False, compact)
    assert read_string(data + trailing, 0, False, compact) == (text, len(data))


def test_string_known_encodings():
    assert written(write_string, "hé") == b"\x00\x03h\xc3\xa9"
    assert written(write_string, None, True) == b"\xff\xff"
    assert written(write_string, "hé", False, True) == b"\x04h\xc3\xa9"
    assert written(write_string, None, True, True) == b"\x00"
    assert read_string(b"\xff\xff", 0, nullable=True) == (None, 2)
    assert read_string(b"\x00", 0, nullable=True, compact=True) == (None, 1)


@pytest.mark.parametrize("data, problem", [
    (b"\xff\xff", "null"),  # null where null is not allowed
    (b"\xff\xfe", "negative"),
    (b"\x80\x00", "negative"),
    (b"\x00\x05abc", "overruns"),
    (b"\x00", "needs 2 bytes"),
    (b"\x00\x02\xc3\x28", "not UTF-8"),
])
def test_bad_strings(data, problem):
    with pytest.raises(MalformedMessageError, match=problem):
        read_string(data, 0)


def test_string_writer_limits():
    with pytest.raises(ValueError, match="null"):
        written(write_string, None)
    with pytest.raises(ValueError, match="exceeds"):
        written(write_string, "x" * 2**15)


@given(st.binary(max_size=40), st.booleans())
def test_bytes_round_trip(data, compact):
    encoded = written(write_bytes, data, False, compact)
    value, pos = read_bytes(encoded, 0, False, compact)
    assert (value, pos) == (data, len(encoded))
    assert type(value) is bytes  # a copy: such fields outlive the frame


@pytest.mark.parametrize("data, problem", [
    (b"\xff\xff\xff\xff", "null"),
    (b"\xff\xff\xff\xfe", "negative"),
    (b"\x7f\xff\xff\xff", "overruns"),
    (b"\x00\x00\x00", "needs 4 bytes"),
])
def test_bad_bytes(data, problem):
    with pytest.raises(MalformedMessageError, match=problem):
        read_bytes(data, 0)


def test_records_are_views_of_the_frame_never_copies():
    frame = bytearray(b"\x00\x00\x00\x03abcZ")
    view, pos = read_records(memoryview(frame), 0)
    assert (bytes(view), pos) == (b"abc", 7)
    view[0] = ord("X")  # writable, and the frame itself
    assert frame[4:5] == b"X"
    assert read_records(memoryview(b"\xff\xff\xff\xff"), 0) == (None, 4)


def test_records_writer_leaves_a_hole_per_piece_list(tmp_path):
    path = tmp_path / "segment"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        out, holes = bytearray(b"H"), []
        pieces = [b"ab", FileSlice(f, 2, 5), memoryview(b"")]
        write_records(out, holes, pieces)
        assert bytes(out) == b"H\x00\x00\x00\x07"
        assert holes == [(5, pieces)]
        write_records(out, holes, None)
        write_records(out, holes, b"")
        assert bytes(out[5:]) == b"\xff\xff\xff\xff\x00\x00\x00\x00"
        assert len(holes) == 1  # nothing to send for null or empty records


# -- arrays and tagged fields -----------------------------------------------------------------------


def test_array_count_is_checked_before_anything_is_allocated():
    budget = [100]
    huge = b"\x7f\xff\xff\xff" + b"\x00" * 8
    with pytest.raises(MalformedMessageError, match="cannot fit in the 8 bytes left"):
        read_count(huge, 0, False, False, 4, budget)
    assert budget == [100]
    assert read_count(b"\x00\x00\x00\x02" + b"\x00" * 8, 0, False, False, 4, budget) == (2, 4)
    assert budget == [98]


def test_array_counts_spend_the_message_budget():
    budget = [3]
    data = b"\x00\x00\x00\x02" + b"\x00" * 16
    read_count(data, 0, False, False, 1, budget)
    with pytest.raises(MalformedMessageError, match="max_items"):
        read_count(data, 0, False, False, 1, budget)


@pytest.mark.parametrize("data, nullable, problem", [
    (b"\xff\xff\xff\xff", False, "null"),
    (b"\xff\xff\xff\xfd", True, "negative"),
    (b"\x80\x00\x00\x00", True, "negative"),
])
def test_bad_counts(data, nullable, problem):
    with pytest.raises(MalformedMessageError, match=problem):
        read_count(data, 0, nullable, False, 1, [10])


def test_null_and_compact_counts():
    assert read_count(b"\xff\xff\xff\xff", 0, True, False, 4, [1]) == (-1, 4)
    assert read_count(b"\x00", 0, True, True, 4, [1]) == (-1, 1)
    assert read_count(b"\x03" + b"\x00" * 2, 0, False, True, 1, [5]) == (2, 1)
    assert written(write_count, None, True) == b"\x00"
    assert written(write_count, 2, True) == b"\x03"
    assert written(write_count, None, False) == b"\xff\xff\xff\xff"


def test_int32_arrays():
    assert read_int32_array(b"\x00\x00\x00\x01\xff\xff\xff\xff", 0, 2) == ([1, -1], 8)


def test_tagged_fields_are_skipped_and_checked():
    assert skip_tagged_fields(b"\x00", 0) == 1
    assert skip_tagged_fields(b"\x02\x00\x01A\x05\x02BC!", 0) == 8  # "!" is not theirs
    with pytest.raises(MalformedMessageError, match="not ascending"):
        skip_tagged_fields(b"\x02\x01\x00\x01\x00", 0)
    with pytest.raises(MalformedMessageError, match="overruns"):
        skip_tagged_fields(b"\x01\x00\x09AB", 0)


@given(st.integers(0, 2**32 - 1))
def test_unsigned_varint_round_trip(value):
    data = written(write_unsigned_varint, value)
    assert read_unsigned_varint(data + b"\x01", 0) == (value, len(data))
