"""The record batch: Kafka's record batch v2, shared by producers, the wire and the log files.

Layout (big-endian; byte offsets on the left; 61-byte header, then the records)::

     0  base_offset        i64   stamped by the broker on append (outside the CRC)
     8  batch_length       i32   bytes that follow this field = total size - 12
    12  leader_epoch       i32   stamped by the broker (outside the CRC)
    16  magic              i8    format version, always 2
    17  crc                u32   CRC-32C of bytes [21, end)
    21  attributes         i16   bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
                                 bit 3 timestamp type (1 = log append time), bit 4
                                 transactional, bit 5 control; the others must be 0
    23  last_offset_delta  i32   == record_count - 1 (offsets inside a batch are dense)
    27  base_timestamp     i64   ms; timestamp of the first record
    35  max_timestamp      i64   ms; largest record timestamp
    43  producer_id        i64   -1 when not idempotent
    51  producer_epoch     i16   -1 when not idempotent
    53  base_sequence      i32   -1 when not idempotent
    57  record_count       i32   >= 1
    61  records            Kafka's varint records (``records_ref``), compressed as a whole
                                 when bits 0-2 of the attributes say so (``compression``)

Record ``i`` has offset ``base_offset + i`` and its offset delta is ``i``. In a log-append-time
batch every record's timestamp is ``max_timestamp``.

Why this shape: it is Kafka's, so Kafka clients and Sluice's read and write the same bytes and
the broker serves both with ``sendfile`` without transcoding. ``base_offset`` and
``leader_epoch`` sit before the CRC, so the broker assigns offsets in place without re-hashing;
the broker validates the header and CRC of a batch but never decompresses or decodes its
records, so produce and fetch cost per batch, not per record. Clients encode and decode a
batch's records with one call into the compiled codec (``codec``).

Invariants checked by ``validate_batch``: the buffer holds exactly one batch, whose length
field matches; magic is 2; the CRC matches; no unknown attribute bits or compression codecs;
record_count >= 1 and last_offset_delta == record_count - 1; max_timestamp >= base_timestamp;
producer fields are either all -1 or all non-negative. Each failure raises a named
``InvalidBatchError`` subclass. The records themselves are checked by whoever decodes them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from crc32c import crc32c
from sluice.protocol import compression
from sluice.protocol.codec import decode_records_into, encode_records
from sluice.protocol.errors import CorruptRecordError

MAGIC = 2
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LENGTH_PREFIX = struct.Struct(">qi")  # base_offset, batch_length: enough to find the next batch
LOG_OVERHEAD = 12  # bytes before and including batch_length
CRC_OFFSET = 17
CRC_START = 21  # the CRC covers [CRC_START, end)
BASE_OFFSET = struct.Struct(">q")
LEADER_EPOCH_OFFSET = 12
LEADER_EPOCH = struct.Struct(">i")
COMPRESSION_MASK = 0x07
LOG_APPEND_TIME = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
KNOWN_ATTRIBUTES = COMPRESSION_MASK | LOG_APPEND_TIME | TRANSACTIONAL | CONTROL
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
# A batch larger than this is refused outright, whatever the topic allows (i32 length field).
MAX_BATCH_BYTES = 2**31 - 1


class InvalidBatchError(CorruptRecordError):
    """A record batch failed validation."""


class TruncatedBatchError(InvalidBatchError):
    """The buffer ends before the batch does (torn write or short read)."""


class BatchLengthError(InvalidBatchError):
    """The batch_length field is impossible or disagrees with the buffer's size."""


class BatchMagicError(InvalidBatchError):
    """The magic byte is not a format version this code understands."""


class BatchCrcError(InvalidBatchError):
    """The CRC-32C stored in the header does not match the batch's bytes."""


class BatchHeaderError(InvalidBatchError):
    """A header field holds an impossible value (counts, attributes, timestamps, producer)."""


class BatchRecordsError(InvalidBatchError):
    """The records cannot be decompressed or decoded, or disagree with the header's count."""


class BatchHeader(NamedTuple):
    """The decoded fixed header of one batch. ``size`` is the whole batch, header included.

    A NamedTuple rather than a dataclass: storage walks make one per batch on startup and
    lookup, and building a tuple from ``HEADER.unpack_from`` is several times cheaper.
    """

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % 2**31


class DecodedRecord(NamedTuple):
    """One record read back from a batch, with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode the 61-byte header at ``pos`` without checking anything but its presence."""
    if len(buf) - pos < HEADER_SIZE:
        raise TruncatedBatchError(
            f"need {HEADER_SIZE} header bytes at position {pos}, have {len(buf) - pos}"
        )
    return BatchHeader._make(HEADER.unpack_from(buf, pos))


def peek_size(buf: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """Total size of the batch starting at ``pos``, or None if fewer than 12 bytes remain.

    The size is not validated beyond being readable; callers check it against the header size.
    """
    if len(buf) - pos < LOG_OVERHEAD:
        return None
    return LENGTH_PREFIX.unpack_from(buf, pos)[1] + LOG_OVERHEAD


def compute_crc(batch: bytes | bytearray | memoryview) -> int:
    """CRC-32C over the bytes the header's crc field covers."""
    return crc32c(memoryview(batch)[CRC_START:])


def check_magic(magic: int) -> None:
    """``BatchMagicError`` unless ``magic`` is this format's, naming the old format plainly."""
    if magic == MAGIC:
        return
    if magic == 1:
        raise BatchMagicError(
            "record batch magic 1 is the format of Sluice before record batch v2 (msgpack records); "
            "this version reads and writes Kafka's record batch v2 (magic 2) only: upgrade "
            "the client, or migrate an old data directory with `sluice migrate --data-dir D`"
        )
    raise BatchMagicError(f"unsupported record batch magic {magic} (expected {MAGIC})")


def check_header(header: BatchHeader) -> None:
    """Raise a named error if any header field is impossible (everything but CRC and length)."""
    check_magic(header.magic)
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise BatchLengthError(f"batch_length {header.batch_length} is shorter than a header")
    if header.attributes & ~KNOWN_ATTRIBUTES & 0xFFFF:
        raise BatchHeaderError(f"unknown attribute bits 0x{header.attributes & 0xFFFF:04x}")
    if header.attributes & COMPRESSION_MASK not in compression.CODEC_NAMES:
        raise BatchHeaderError(
            f"unknown compression codec {header.attributes & COMPRESSION_MASK}"
        )
    if header.record_count < 1:
        raise BatchHeaderError(f"record_count {header.record_count} must be at least 1")
    if header.last_offset_delta != header.record_count - 1:
        raise BatchHeaderError(
            f"last_offset_delta {header.last_offset_delta} does not match "
            f"record_count {header.record_count}"
        )
    if header.max_timestamp < header.base_timestamp:
        raise BatchHeaderError(
            f"max_timestamp {header.max_timestamp} is before base_timestamp "
            f"{header.base_timestamp}"
        )
    producer = (header.producer_id, header.producer_epoch, header.base_sequence)
    if header.producer_id == NO_PRODUCER_ID:
        if producer != (NO_PRODUCER_ID, -1, NO_SEQUENCE):
            raise BatchHeaderError(f"producer fields {producer} without a producer id")
    elif min(producer) < 0:
        raise BatchHeaderError(f"negative producer fields {producer}")


def validate_batch(batch: bytes | bytearray | memoryview) -> BatchHeader:
    """Check that ``batch`` is exactly one valid batch and return its header.

    Checks the header fields and the CRC; does not decode the records.
    """
    header = parse_header(batch)
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise BatchLengthError(f"batch_length {header.batch_length} is shorter than a header")
    if header.size > len(batch):
        raise TruncatedBatchError(
            f"batch declares {header.size} bytes but only {len(batch)} are present"
        )
    if header.size < len(batch):
        raise BatchLengthError(
            f"batch declares {header.size} bytes but the buffer holds {len(batch)}"
        )
    check_header(header)
    actual = compute_crc(batch)
    if actual != header.crc:
        raise BatchCrcError(f"CRC mismatch: header says {header.crc:#010x}, bytes give {actual:#010x}")
    return header


def split_batches(
    buf: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[list[tuple[int, int]], int]:
    """Find the whole batches in ``buf`` from ``pos``: ``([(position, size), ...], end)``.

    Stops cleanly at a partial batch at the tail (``end`` is where it starts, or ``len(buf)``).
    Only the length fields are read; a length too small to hold a header raises
    ``BatchLengthError`` because nothing after it can be located.
    """
    found: list[tuple[int, int]] = []
    total = len(buf)
    while True:
        size = peek_size(buf, pos)
        if size is None:
            return found, pos
        if size < HEADER_SIZE:
            raise BatchLengthError(f"batch at position {pos} declares impossible size {size}")
        if pos + size > total:
            return found, pos
        found.append((pos, size))
        pos += size


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Yield each whole batch in ``buf`` as a memoryview (no copies), dropping a partial tail."""
    view = memoryview(buf)
    positions, _ = split_batches(view)
    for pos, size in positions:
        yield view[pos : pos + size]


def stamp(batch: bytearray | memoryview, base_offset: int, leader_epoch: int | None = None) -> None:
    """Write ``base_offset`` (and optionally ``leader_epoch``) in place; the CRC stays valid."""
    BASE_OFFSET.pack_into(batch, 0, base_offset)
    if leader_epoch is not None:
        LEADER_EPOCH.pack_into(batch, LEADER_EPOCH_OFFSET, leader_epoch)


def assemble(
    payload: bytes,
    *,
    record_count: int,
    base_timestamp: int,
    max_timestamp: int,
    base_offset: int = 0,
    leader_epoch: int = -1,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
    attributes: int = 0,
) -> bytearray:
    """Frame an already-encoded (and maybe compressed) records ``payload`` as a batch."""
    size = HEADER_SIZE + len(payload)
    if size > MAX_BATCH_BYTES:
        raise BatchLengthError(f"batch of {size} bytes exceeds the format's limit")
    out = bytearray(size)
    HEADER.pack_into(
        out,
        0,
        base_offset,
        size - LOG_OVERHEAD,
        leader_epoch,
        MAGIC,
        0,
        attributes,
        record_count - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    )
    out[HEADER_SIZE:] = payload
    struct.pack_into(">I", out, CRC_OFFSET, compute_crc(out))
    return out


def encode_batch(
    timestamps: list[int],
    keys: list[bytes | None],
    values: list[bytes | None],
    headers: list,
    *,
    max_timestamp: int | None = None,
    compression_codec: int = compression.NONE,
    **fields: int,
) -> bytearray:
    """A batch of parallel record columns, encoded in one codec call (``headers`` entries are
    sequences of ``(str, bytes | None)`` pairs, empty for none); ``fields`` go to
    ``assemble`` (producer id, epoch, base sequence, base offset...)."""
    if not values:
        raise BatchHeaderError("a batch needs at least one record")
    base_ts = timestamps[0]
    payload = encode_records(timestamps, keys, values, headers, base_ts)
    if compression_codec != compression.NONE:
        payload = compression.compress(compression_codec, payload)
    return assemble(
        payload,
        record_count=len(values),
        base_timestamp=base_ts,
        max_timestamp=max(timestamps) if max_timestamp is None else max_timestamp,
        attributes=compression_codec,
        **fields,
    )


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Iterable[tuple[str, bytes]], int]],
    **fields: int,
) -> bytearray:
    """Build a batch from ``(key, value, headers, timestamp_ms)`` tuples (not a hot path).

    ``fields`` are passed to ``encode_batch`` (compression codec, producer fields...).
    """
    if not records:
        raise BatchHeaderError("a batch needs at least one record")
    keys, values, headers, timestamps = (list(column) for column in zip(*records, strict=True))
    return encode_batch(timestamps, keys, values, [list(h) for h in headers], **fields)


def records_section(batch: bytes | bytearray | memoryview, header: BatchHeader):
    """The batch's records, decompressed if the header says so (``BatchRecordsError`` if the
    compressed bytes are corrupt)."""
    section = memoryview(batch)[HEADER_SIZE : header.size]
    codec = header.attributes & COMPRESSION_MASK
    if codec == compression.NONE:
        return section
    try:
        return compression.decompress(codec, section)
    except compression.CompressionError as exc:
        raise BatchRecordsError(str(exc)) from None


def decode_batch_into(
    out: list,
    record_type: type,
    prefix: tuple,
    batch: bytes | bytearray | memoryview,
    first_offset: int = 0,
) -> None:
    """Append ``record_type(*prefix, offset, timestamp, key, value, headers)`` to ``out`` for
    each record of ``batch`` at or after ``first_offset``: one codec call per batch.

    Checks the magic and the records (``BatchMagicError``, ``BatchRecordsError``; ``out``
    unchanged then), not the CRC: call ``validate_batch`` first for untrusted input. A
    control batch (a Kafka transaction marker) holds no user records and adds nothing.
    """
    header = parse_header(batch)
    check_magic(header.magic)
    if first_offset > header.last_offset or header.attributes & CONTROL:
        return
    fixed_ts = header.max_timestamp if header.attributes & LOG_APPEND_TIME else None
    try:
        decode_records_into(
            out, record_type, prefix, records_section(batch, header), header.record_count,
            header.base_offset, header.base_timestamp, first_offset, fixed_ts,
        )
    except ValueError as exc:
        raise BatchRecordsError(str(exc)) from None


def decode_records(batch: bytes | bytearray | memoryview) -> list[DecodedRecord]:
    """Decode every record of a batch with absolute offsets and timestamps."""
    out: list[DecodedRecord] = []
    decode_batch_into(out, DecodedRecord, (), batch)
    return out
