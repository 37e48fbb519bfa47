"""The compiled record codec against its pure-Python reference, on valid and hostile bytes."""

import subprocess
import sys
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sluice.protocol import _records, codec, records_ref

IMPLEMENTATIONS = [_records, records_ref]


class Row(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list


I64 = st.integers(-(2**63), 2**63 - 1)
nullable = st.none() | st.binary(max_size=40)
header = st.tuples(st.text(max_size=6), nullable)
columns = st.lists(
    st.tuples(st.integers(-(2**62), 2**62), nullable, nullable, st.lists(header, max_size=3)),
    max_size=30,
)


def split(rows):
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], [], []]


def decode(impl, data, count, base_offset=0, base_ts=0, first=0, fixed=None, prefix=("t", 3)):
    """The records, or the exception type; ``out`` must be untouched on an exception."""
    out = ["sentinel"]
    try:
        impl.decode_records_into(out, Row, prefix, data, count, base_offset, base_ts, first, fixed)
    except ValueError:
        assert out == ["sentinel"]
        return ValueError
    return out[1:]


def test_the_compiled_codec_is_in_use():
    assert codec.COMPILED and codec.encode_records is _records.encode_records


@given(columns, I64)
def test_encoders_agree_and_decoders_invert_them(rows, base_ts):
    timestamps, keys, values, headers = split(rows)
    try:
        expected = records_ref.encode_records(timestamps, keys, values, headers, base_ts)
    except OverflowError:
        with pytest.raises(OverflowError):
            _records.encode_records(timestamps, keys, values, headers, base_ts)
        return
    assert _records.encode_records(timestamps, keys, values, headers, base_ts) == expected
    want = [
        Row("t", 3, 10 + i, ts, k, v, [tuple(h) for h in hs])
        for i, (ts, k, v, hs) in enumerate(rows)
    ]
    for impl in IMPLEMENTATIONS:
        assert decode(impl, expected, len(rows), 10, base_ts) == want
        assert decode(impl, bytearray(expected), len(rows), 10, base_ts, first=12) == want[2:]
        assert decode(impl, memoryview(expected), len(rows), 10, base_ts, fixed=7) == [
            r._replace(timestamp=7) for r in want
        ]


def test_the_decoded_records_are_fresh_objects_of_the_given_type():
    data = _records.encode_records([5, 5], [None, b"k"], [b"v", None], [[], [("a", b"b")]], 5)
    first, second = decode(_records, data, 2, base_ts=5, prefix=("topic", 0))
    assert type(first) is Row and first.headers == [] and first.headers is not second.headers
    assert second == Row("topic", 0, 1, 5, b"k", None, [("a", b"b")])
    assert decode(_records, data, 2, base_ts=5, prefix=("x",)) == [
        ("x", 0, 5, None, b"v", []), ("x", 1, 5, b"k", None, [("a", b"b")])
    ]  # the prefix is any tuple: the broker's records have none


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(0, 5), I64, I64)
def test_garbage_is_refused_alike(data, count, base_offset, base_ts):
    results = [decode(impl, data, count, base_offset, base_ts) for impl in IMPLEMENTATIONS]
    assert results[0] == results[1]


@settings(max_examples=100)
@given(columns.filter(bool), st.data())
def test_every_truncation_and_a_corrupted_byte_are_refused_alike(rows, data):
    encoded = _records.encode_records(*split(rows), 0)
    for cut in range(len(encoded)):
        for impl in IMPLEMENTATIONS:
            assert decode(impl, encoded[:cut], len(rows)) is ValueError
    position = data.draw(st.integers(0, len(encoded) - 1))
    corrupt = bytearray(encoded)
    corrupt[position] = data.draw(st.integers(0, 255))
    results = [decode(impl, corrupt, len(rows)) for impl in IMPLEMENTATIONS]
    assert results[0] == results[1]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("data", "count"),
    [
        (b"\xff" * 5 + b"\x01", 1),  # a varint longer than 5 bytes
        (b"\xfe\xff\xff\xff\x0f", 1),  # a record length of 2**31 - 1 with nothing after it
        (bytes.fromhex("10000000feffffff0f"), 1),  # a key length of 2**31 - 1
        (bytes.fromhex("0e00000003"), 1),  # a key length of -2
        (bytes.fromhex("0c0000000101feffffff0f"), 1),  # 2**31 - 1 headers in 5 bytes
        (bytes.fromhex("0a0000000101030000"), 1),  # a null header key
        (bytes.fromhex("0e00000001010000"), 1),  # record length 7, headers end after 6
        (bytes.fromhex("08000000010100"), 1),  # headers do not fit the record's length
        (b"\x00", 1),  # an empty record
        (b"", -1),
    ],
)
def test_hostile_lengths_are_refused_without_allocating(impl, data, count):
    assert decode(impl, data, count) is ValueError


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_offsets_and_timestamps_that_overflow_are_refused(impl):
    data = impl.encode_records([0, 1], [None, None], [b"", b""], [[], []], 0)
    assert decode(impl, data, 2, base_offset=2**63 - 1) is ValueError
    assert decode(impl, data, 2, base_ts=2**63 - 1) is ValueError


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "columns",
    [
        ([0], [None], ["text"], [[]]),  # a str value
        ([0], [1], [b""], [[]]),  # an int key
        ([0], [None], [b""], [[(b"k", b"v")]]),  # a bytes header key
        ([0], [None], [b""], [[("k", "v")]]),  # a str header value
        ([0], [None], [b""], [[("k",)]]),  # not a pair
        ([0], [None], [b""], [5]),  # headers not a sequence
        (["0"], [None], [b""], [[]]),  # a str timestamp
    ],
)
def test_wrong_types_are_type_errors(impl, columns):
    with pytest.raises(TypeError):
        impl.encode_records(*map(list, columns), 0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_columns_of_different_lengths_are_refused(impl):
    with pytest.raises(ValueError):
        impl.encode_records([0], [None, None], [b""], [[]], 0)


def test_without_the_extension_the_reference_is_used_with_a_warning():
    script = (
        "import sys, warnings\n"
        "sys.modules['sluice.protocol._records'] = None  # as if it was never built\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from sluice.protocol import batch, codec, records_ref\n"
        "assert not codec.COMPILED and codec.encode_records is records_ref.encode_records\n"
        "assert any('not built' in str(w.message) for w in caught), caught\n"
        "b = batch.build_batch([(b'k', b'v', [('h', b'1')], 5)])\n"
        "assert batch.decode_records(b)[0].value == b'v'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


class Shifty:
    """A header sequence that grows each time it is iterated (Python code between passes)."""

    def __init__(self) -> None:
        self.pairs: list = []

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self):
        self.pairs.append(("k" * 50, b"v" * 50))
        return iter(list(self.pairs))


@pytest.mark.parametrize("grows", ["first", "last"])
def test_headers_that_change_between_the_passes_are_an_error_not_an_overflow(grows):
    headers = [[], []]
    headers[0 if grows == "first" else 1] = Shifty()
    with pytest.raises(RuntimeError, match="changed size while encoding"):
        _records.encode_records([0, 0], [None, None], [b"a", b"b"], headers, 0)
