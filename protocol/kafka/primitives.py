"""Kafka's primitive wire types, sans-IO: read from a buffer at a position, append to a bytearray.

Every reader is ``read_x(buf, pos) -> (value, new_pos)`` over a bytes-like ``buf`` (the
received frame) and raises ``MalformedMessageError`` (no path; the schema code adds it) when
the bytes break the type's rules: cut short, a negative length other than -1, -1 where null is
not allowed, invalid UTF-8, a varint longer than its type. Every writer is
``write_x(out, value)`` appending to a bytearray and raises ``ValueError`` for a value the type
cannot carry. Fixed-width integers need no helper: the schema compiler packs runs of them with
one ``struct.Struct`` (big-endian, as every Kafka integer).

The types (https://kafka.apache.org/protocol#protocol_types): int8/16/32/64, uint32, bool (an
int8, non-zero is true), varint/varlong (zigzag), unsigned varint, string/nullable string
(int16 length), bytes/nullable bytes (int32 length), arrays (int32 count, -1 = null); and for
flexible versions the compact forms (unsigned varint length + 1, 0 = null) and tagged fields.
"""

from __future__ import annotations

import struct

from sluice.protocol.kafka.errors import MalformedMessageError
from sluice.protocol.messages import piece_length

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT32 = struct.Struct(">I")
STRING_MAX = 2**15 - 1  # an int16 length
BYTES_MAX = 2**31 - 1  # an int32 length


def _truncated(needed: int, buf, pos: int) -> MalformedMessageError:
    return MalformedMessageError("", f"needs {needed} bytes at offset {pos}, {len(buf) - pos} left")


def check_null(n: int, nullable: bool, what: str) -> None:
    """Raise unless ``n`` (a negative length or count) is -1 and null is allowed."""
    if n != -1:
        raise MalformedMessageError("", f"{what} {n} is negative")
    if not nullable:
        raise MalformedMessageError("", f"{what} -1 (null) where null is not allowed")


def read_uint32(buf, pos: int) -> tuple[int, int]:
    if pos + 4 > len(buf):
        raise _truncated(4, buf, pos)
    return UINT32.unpack_from(buf, pos)[0], pos + 4


# -- varints ----------------------------------------------------------------------------------


def read_unsigned_varint(buf, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """An unsigned LEB128 varint of at most ``max_bytes`` bytes (5 for 32 bits, 10 for 64)."""
    value = shift = 0
    for i in range(max_bytes):
        if pos + i >= len(buf):
            raise _truncated(i + 1, buf, pos)
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MalformedMessageError("", f"varint at offset {pos} is longer than {max_bytes} bytes")


def write_unsigned_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"unsigned varint {value} is negative")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(buf, pos: int) -> tuple[int, int]:
    """A zigzag-encoded signed 32-bit varint."""
    raw, pos = read_unsigned_varint(buf, pos, 5)
    if raw >= 2**32:
        raise MalformedMessageError("", f"varint {raw} overflows 32 bits")
    return (raw >> 1) ^ -(raw & 1), pos


def read_varlong(buf, pos: int) -> tuple[int, int]:
    """A zigzag-encoded signed 64-bit varint."""
    raw, pos = read_unsigned_varint(buf, pos, 10)
    if raw >= 2**64:
        raise MalformedMessageError("", f"varlong {raw} overflows 64 bits")
    return (raw >> 1) ^ -(raw & 1), pos


def write_varint(out: bytearray, value: int) -> None:
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"varint {value} does not fit in 32 bits")
    write_unsigned_varint(out, ((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


def write_varlong(out: bytearray, value: int) -> None:
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"varlong {value} does not fit in 64 bits")
    write_unsigned_varint(out, ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


# -- strings and bytes ------------------------------------------------------------------------


def _read_length(buf, pos: int, compact: bool, fmt: struct.Struct) -> tuple[int, int]:
    """A length prefix: ``fmt`` (int16/int32), or a compact unsigned varint (length + 1)."""
    if compact:
        raw, pos = read_unsigned_varint(buf, pos)
        return raw - 1, pos
    if pos + fmt.size > len(buf):
        raise _truncated(fmt.size, buf, pos)
    return fmt.unpack_from(buf, pos)[0], pos + fmt.size


def overrun(buf, pos: int, n: int) -> MalformedMessageError:
    """The error for a length ``n`` at ``pos`` that runs past the end of ``buf``."""
    return MalformedMessageError("", f"length {n} at offset {pos} overruns the frame "
                                     f"({len(buf) - pos} bytes left)")


def _read_span(buf, pos: int, n: int) -> int:
    end = pos + n
    if end > len(buf):
        raise overrun(buf, pos, n)
    return end


def _sized(buf, pos: int, nullable: bool, compact: bool, fmt: struct.Struct,
           what: str) -> tuple[int | None, int]:
    """``(start, end)`` of a length-prefixed value at ``pos``; ``(None, end)`` for null."""
    n, pos = _read_length(buf, pos, compact, fmt)
    if n < 0:
        check_null(n, nullable, what)
        return None, pos
    return pos, _read_span(buf, pos, n)


def read_string(buf, pos: int, nullable: bool = False, compact: bool = False):
    start, end = _sized(buf, pos, nullable, compact, INT16, "string length")
    if start is None:
        return None, end
    try:
        return str(buf[start:end], "utf-8"), end
    except UnicodeDecodeError as exc:
        raise MalformedMessageError("", f"string at offset {start} is not UTF-8: {exc}") from None


def read_bytes(buf, pos: int, nullable: bool = False, compact: bool = False):
    """A copy of the bytes: fields such as group metadata outlive the frame."""
    start, end = _sized(buf, pos, nullable, compact, INT32, "bytes length")
    return (None if start is None else bytes(buf[start:end])), end


def read_records(buf: memoryview, pos: int, compact: bool = False):
    """Record batches, nullable: a view of the frame itself, never copied or decoded."""
    start, end = _sized(buf, pos, True, compact, INT32, "records length")
    return (None if start is None else buf[start:end]), end


def write_string(out: bytearray, value: str | None, nullable: bool = False,
                 compact: bool = False) -> None:
    data = None if value is None else value.encode("utf-8")
    if data is not None and len(data) > STRING_MAX:
        raise ValueError(f"string of {len(data)} UTF-8 bytes exceeds {STRING_MAX}")
    _write_sized(out, data, nullable, compact, INT16)


def write_bytes(out: bytearray, value, nullable: bool = False, compact: bool = False) -> None:
    _write_sized(out, value, nullable, compact, INT32)


def _write_sized(out: bytearray, data, nullable: bool, compact: bool,
                 fmt: struct.Struct) -> None:
    """A length (``fmt``, or compact: an unsigned varint of length + 1) and ``data``."""
    n = -1 if data is None else memoryview(data).nbytes
    if data is None and not nullable:
        raise ValueError("null where null is not allowed")
    if compact:
        write_unsigned_varint(out, n + 1)
    else:
        out += fmt.pack(n)
    if data is not None:
        out += data


def write_records(out: bytearray, holes: list, value, compact: bool = False) -> None:
    """Record batches: their length here, and a hole at this offset where the caller sends
    the pieces (one bytes-like or ``FileSlice``, or a list of them) unchanged."""
    if value is None:
        _write_sized(out, None, True, compact, INT32)
        return
    pieces = value if isinstance(value, list | tuple) else (value,)
    total = sum(piece_length(p) for p in pieces)
    if total > BYTES_MAX:
        raise ValueError(f"records of {total} bytes exceed {BYTES_MAX}")
    if compact:
        write_unsigned_varint(out, total + 1)
    else:
        out += INT32.pack(total)
    if total:
        holes.append((len(out), pieces))


# -- arrays and tagged fields -----------------------------------------------------------------


def read_count(buf, pos: int, nullable: bool, compact: bool, min_item_bytes: int,
               budget: list[int]) -> tuple[int, int]:
    """An array's item count (-1 = null), checked before anything is allocated for it: every
    item needs at least ``min_item_bytes``, so a count the rest of the frame cannot hold is a
    lie, and ``budget[0]`` (items left for the whole message) is spent here."""
    n, pos = _read_length(buf, pos, compact, INT32)
    if n < 0:
        check_null(n, nullable, "array count")
        return -1, pos
    check_count(n, min_item_bytes, buf, pos, budget)
    return n, pos


def check_count(n: int, min_item_bytes: int, buf, pos: int, budget: list[int]) -> None:
    """Refuse a count of ``n`` items (each ``min_item_bytes`` or more) that the rest of the
    frame cannot hold, or that overdraws ``budget[0]`` (items left for the message); spend."""
    if n * min_item_bytes > len(buf) - pos:
        raise MalformedMessageError(
            "", f"array count {n} cannot fit in the {len(buf) - pos} bytes left")
    budget[0] -= n
    if budget[0] < 0:
        raise MalformedMessageError("", "the message holds more array items than max_items")


def read_int32_array(buf, pos: int, n: int) -> tuple[list[int], int]:
    """``n`` int32s (``n`` already checked by ``read_count``), in one unpack."""
    end = pos + 4 * n
    return list(struct.unpack_from(f">{n}i", buf, pos)), end


def write_count(out: bytearray, n: int | None, compact: bool) -> None:
    """An array count, or null for ``n`` None."""
    if compact:
        write_unsigned_varint(out, 0 if n is None else n + 1)
    else:
        out += INT32.pack(-1 if n is None else n)


def skip_tagged_fields(buf, pos: int) -> int:
    """Skip a tagged-field section (count, then tag, size, data each). No schema here
    declares a tagged field, so every tag is an unknown one, which Kafka ignores."""
    count, pos = read_unsigned_varint(buf, pos)
    last = -1
    for _ in range(count):
        tag, pos = read_unsigned_varint(buf, pos)
        if tag <= last:
            raise MalformedMessageError("", f"tagged field {tag} after {last}: not ascending")
        last = tag
        size, pos = read_unsigned_varint(buf, pos)
        pos = _read_span(buf, pos, size)
    return pos
