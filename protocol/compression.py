"""Kafka's record-batch compression codecs: the records section compressed as a whole.

The codec is bits 0-2 of a batch's attributes: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd. Every
codec comes from ``cramjam`` (one wheel, no system libraries); the framing is what Kafka's
clients write and read:

* gzip: a gzip member (RFC 1952);
* snappy: the xerial block framing the Java client writes (a 16-byte header ``\\x82SNAPPY\\x00``
  + version 1 + compat 1, then big-endian i32 length + raw snappy block for each 32 KiB of
  input); read back either that framing or one raw snappy block (what librdkafka writes);
* lz4: the LZ4 frame format with independent blocks (Kafka's Java reader refuses linked ones);
* zstd: one zstd frame (level 3, Kafka's default).

A snappy block's declared length is checked against the most its bytes can inflate to (about
21x) before anything is allocated. gzip, lz4 and zstd are inflated whole: a hostile producer's
compression bomb costs a consumer as much memory as it inflates to, as with Kafka's clients.
"""

from __future__ import annotations

import struct

import cramjam

NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
NAMES = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CODEC_NAMES = {code: name for name, code in NAMES.items()}
XERIAL_HEADER = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
XERIAL_MAGIC = XERIAL_HEADER[:8]
XERIAL_BLOCK = 32 * 1024
_BLOCK_LENGTH = struct.Struct(">i")
ZSTD_LEVEL = 3
SNAPPY_MAX_RATIO = 22


class CompressionError(ValueError):
    """Compressed records could not be decompressed (corrupt, or larger than allowed)."""


def codec_for(name: str | None) -> int:
    """The attribute value of a codec name (``None`` or "none" is no compression)."""
    if name is None:
        return NONE
    try:
        return NAMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"compression must be one of {', '.join(NAMES)}, not {name!r}"
        ) from None


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """``data`` compressed with ``codec`` (1-4), framed as Kafka clients expect."""
    if codec == GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == SNAPPY:
        return _xerial_snappy(data)
    if codec == LZ4:
        compressor = cramjam.lz4.Compressor(content_checksum=False, block_linked=False)
        compressor.compress(data)
        return bytes(compressor.finish())
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(data, level=ZSTD_LEVEL))
    raise ValueError(f"unknown compression codec {codec}")


def _xerial_snappy(data) -> bytes:
    view = memoryview(data)
    parts = [XERIAL_HEADER]
    for start in range(0, len(view), XERIAL_BLOCK):
        block = cramjam.snappy.compress_raw(view[start : start + XERIAL_BLOCK])
        parts += (_BLOCK_LENGTH.pack(len(block)), block)
    return b"".join(parts)


def decompress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """Undo ``compress``; ``CompressionError`` if the bytes are not valid for ``codec``."""
    try:
        if codec == SNAPPY:
            out = _snappy(memoryview(data))
        elif codec == GZIP:
            out = cramjam.gzip.decompress(data)
        elif codec == LZ4:
            out = cramjam.lz4.decompress(data)
        elif codec == ZSTD:
            out = cramjam.zstd.decompress(data)
        else:
            raise CompressionError(f"unknown compression codec {codec}")
    except cramjam.DecompressionError as exc:
        raise CompressionError(f"{CODEC_NAMES[codec]} records do not decompress: {exc}") from None
    return bytes(out)


def _snappy(view: memoryview) -> bytes:
    if view[:8] != XERIAL_MAGIC:
        return _snappy_block(view)
    if len(view) < len(XERIAL_HEADER):
        raise CompressionError("snappy records end inside the xerial header")
    parts = []
    pos = len(XERIAL_HEADER)
    while pos < len(view):
        if len(view) - pos < _BLOCK_LENGTH.size:
            raise CompressionError(f"snappy records end inside a block length at byte {pos}")
        (size,) = _BLOCK_LENGTH.unpack_from(view, pos)
        pos += _BLOCK_LENGTH.size
        if size < 0 or size > len(view) - pos:
            raise CompressionError(f"snappy block of {size} bytes at byte {pos} runs past the end")
        parts.append(_snappy_block(view[pos : pos + size]))
        pos += size
    return b"".join(parts)


def _snappy_block(view: memoryview):
    """One raw snappy block, its declared length checked before anything is allocated: a
    snappy element inflates at most 64 bytes from 3 (a copy with a 2-byte offset)."""
    declared = cramjam.snappy.decompress_raw_len(view)
    if declared > SNAPPY_MAX_RATIO * len(view):
        raise CompressionError(f"a snappy block of {len(view)} bytes claims {declared}")
    return cramjam.snappy.decompress_raw(view)
