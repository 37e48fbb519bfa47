"""The records section of a v2 batch, in plain Python: the reference for ``_records.c``.

Each record (Kafka's record v2; zigzag varints, -1 length = null)::

    length varint | attributes i8 (0) | timestamp_delta varlong | offset_delta varint
    | key_length varint | key | value_length varint | value
    | header_count varint | (header_key_length varint | key (UTF-8) | value_length varint | value)*

``length`` counts the bytes after itself. ``timestamp_delta`` is relative to the batch's
``base_timestamp``; ``offset_delta`` is the record's index in the batch (offsets are dense).

The compiled module implements exactly these two functions with the same arguments, results
and errors (``ValueError`` for malformed bytes, ``TypeError`` for wrong Python types); the
tests cross-check them on random and hostile input. This one is the fallback when the
extension is not built (about ten times slower).
"""

from __future__ import annotations

from operator import index

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VARINT_BYTES, VARLONG_BYTES = 5, 10


def _zigzag_varint(value: int) -> bytes:
    zz = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zz >= 0x80:
        out.append((zz & 0x7F) | 0x80)
        zz >>= 7
    out.append(zz)
    return bytes(out)


def _nullable(data) -> bytes:
    if data is None:
        return b"\x01"  # zigzag(-1)
    try:
        data = bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"expected bytes or None, got {type(data).__name__}") from None
    return _zigzag_varint(len(data)) + data


def _header(pair) -> bytes:
    if len(pair) != 2:
        raise TypeError("a header must be a (str, bytes) pair")
    key, value = pair
    if not isinstance(key, str):
        raise TypeError(f"a header key must be str, got {type(key).__name__}")
    encoded = key.encode()
    return _zigzag_varint(len(encoded)) + encoded + _nullable(value)


def _int64(value) -> int:
    value = index(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{value} does not fit 64 bits")
    return value


def encode_records(
    timestamps: list[int], keys: list, values: list, headers: list, base_timestamp: int
) -> bytes:
    """The records section for parallel columns: ``timestamps`` (ms), ``keys`` and ``values``
    (bytes or None), ``headers`` (per record a sequence of ``(str, bytes | None)`` pairs)."""
    count = len(values)
    if not (len(timestamps) == len(keys) == len(headers) == count):
        raise ValueError("timestamps, keys, values and headers must have the same length")
    base_timestamp = _int64(base_timestamp)
    out = []
    for i in range(count):
        delta = _int64(timestamps[i]) - base_timestamp
        if not INT64_MIN <= delta <= INT64_MAX:
            raise OverflowError(f"timestamp delta of record {i} does not fit 64 bits")
        pairs = headers[i]
        body = b"".join(
            [
                b"\x00",
                _zigzag_varint(delta),
                _zigzag_varint(i),
                _nullable(keys[i]),
                _nullable(values[i]),
                _zigzag_varint(len(pairs)),
                *map(_header, pairs),
            ]
        )
        if len(body) > INT32_MAX:
            raise OverflowError("a record larger than 2 GiB")
        out += (_zigzag_varint(len(body)), body)
    return b"".join(out)


class _Reader:
    """A cursor over bytes that checks every bound and raises ``ValueError``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def varint(self, max_bytes: int, low: int, high: int, what: str) -> int:
        zz = shift = 0
        for _ in range(max_bytes):
            if self.pos >= self.end:
                raise ValueError(f"{what} runs past the end of its record")
            byte = self.data[self.pos]
            self.pos += 1
            zz |= (byte & 0x7F) << shift
            if not byte & 0x80:
                zz &= 2**64 - 1
                value = (zz >> 1) ^ -(zz & 1)
                if not low <= value <= high:
                    raise ValueError(f"{what} {value} is out of range")
                return value
            shift += 7
        raise ValueError(f"{what} is a varint longer than {max_bytes} bytes")

    def nullable(self, what: str) -> bytes | None:
        size = self.varint(VARINT_BYTES, -1, INT32_MAX, f"{what} length")
        if size < 0:
            return None
        if size > self.end - self.pos:
            raise ValueError(f"{what} of {size} bytes runs past the end of its record")
        self.pos += size
        return self.data[self.pos - size : self.pos]


def decode_records_into(
    out: list,
    record_type: type,
    prefix: tuple,
    data,
    count: int,
    base_offset: int,
    base_timestamp: int,
    first_offset: int,
    fixed_timestamp: int | None,
) -> None:
    """Append ``record_type(*prefix, offset, timestamp, key, value, headers)`` to ``out`` for
    each of the ``count`` records in ``data`` whose offset is >= ``first_offset``.

    ``headers`` is a new list of ``(str, bytes | None)`` tuples; ``fixed_timestamp``, when
    not None, is every record's timestamp (a log-append-time batch). Raises ``ValueError``
    (``out`` unchanged) unless ``data`` is exactly ``count`` well-formed records with offset
    deltas 0, 1, 2...
    """
    if not isinstance(out, list) or not isinstance(prefix, tuple):
        raise TypeError("out must be a list and prefix a tuple")
    if not issubclass(record_type, tuple):
        raise TypeError("record_type must be a tuple subclass")
    if count < 0:
        raise ValueError(f"negative record count {count}")
    if count and base_offset + count - 1 > INT64_MAX:
        raise ValueError(f"offsets from {base_offset} overflow 64 bits")
    data = bytes(data)
    start = len(out)
    reader = _Reader(data, 0, len(data))
    try:
        for i in range(count):
            reader.end = len(data)
            length = reader.varint(VARINT_BYTES, 0, INT32_MAX, f"record {i} length")
            if length > len(data) - reader.pos:
                raise ValueError(f"record {i} of {length} bytes runs past the end of the batch")
            reader.end = reader.pos + length
            if reader.pos >= reader.end:
                raise ValueError(f"record {i} is empty")
            reader.pos += 1  # attributes: unused
            delta = reader.varint(VARLONG_BYTES, INT64_MIN, INT64_MAX, "timestamp delta")
            offset_delta = reader.varint(VARINT_BYTES, INT32_MIN, INT32_MAX, "offset delta")
            if offset_delta != i:
                raise ValueError(f"record {i} has offset delta {offset_delta}")
            key = reader.nullable("key")
            value = reader.nullable("value")
            header_count = reader.varint(VARINT_BYTES, 0, INT32_MAX, "header count")
            pairs = []
            for _ in range(header_count):
                name = reader.nullable("header key")
                if name is None:
                    raise ValueError(f"record {i} has a null header key")
                pairs.append((name.decode(), reader.nullable("header value")))
            if reader.pos != reader.end:
                raise ValueError(f"record {i} has {reader.end - reader.pos} bytes after its headers")
            timestamp = base_timestamp + delta
            if not INT64_MIN <= timestamp <= INT64_MAX:
                raise ValueError(f"record {i} timestamp overflows 64 bits")
            if base_offset + i >= first_offset:
                if fixed_timestamp is not None:
                    timestamp = fixed_timestamp
                out.append(
                    tuple.__new__(
                        record_type, (*prefix, base_offset + i, timestamp, key, value, pairs)
                    )
                )
        if reader.pos != len(data):
            raise ValueError(f"{len(data) - reader.pos} bytes after the last record")
    except ValueError as exc:
        del out[start:]
        if isinstance(exc, UnicodeDecodeError):
            raise ValueError(f"a header key is not UTF-8: {exc}") from None
        raise
