"""protocol/compression.py against independent implementations of each codec's framing."""

import gzip
import io

import lz4.frame
import pytest
import snappy
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from kafka import codec as kafka_codec
from sluice.protocol import compression
from sluice.protocol.compression import GZIP, LZ4, NONE, SNAPPY, ZSTD, CompressionError

DATA = b"".join(b"record %d with some repetitive payload; " % i for i in range(5000))


@given(st.binary(max_size=5000), st.sampled_from([GZIP, SNAPPY, LZ4, ZSTD]))
def test_round_trip(data, codec):
    assert compression.decompress(codec, compression.compress(codec, data)) == data


def test_gzip_is_a_gzip_member_both_ways():
    assert gzip.decompress(compression.compress(GZIP, DATA)) == DATA
    assert compression.decompress(GZIP, gzip.compress(DATA)) == DATA


def test_snappy_is_xerial_framed_as_the_java_client_writes_it():
    ours = compression.compress(SNAPPY, DATA)
    assert ours.startswith(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")
    assert kafka_codec.snappy_decode(ours) == DATA
    assert compression.decompress(SNAPPY, kafka_codec.snappy_encode(DATA)) == DATA


def test_snappy_also_reads_one_raw_block_as_librdkafka_writes_it():
    assert compression.decompress(SNAPPY, snappy.compress(DATA)) == DATA


def test_lz4_is_a_frame_of_independent_blocks():
    ours = compression.compress(LZ4, DATA)
    flags = ours[4]
    assert ours[:4] == b"\x04\x22\x4d\x18" and flags & 0x20  # magic; blocks independent
    assert lz4.frame.decompress(ours) == DATA
    assert compression.decompress(LZ4, lz4.frame.compress(DATA, block_linked=False)) == DATA


def test_zstd_both_ways_also_without_a_content_size():
    assert zstandard.ZstdDecompressor().decompressobj().decompress(
        compression.compress(ZSTD, DATA)
    ) == DATA
    streamed = io.BytesIO()  # what the Java client's streaming writer produces
    with zstandard.ZstdCompressor().stream_writer(streamed, closefd=False) as writer:
        writer.write(DATA)
    assert compression.decompress(ZSTD, streamed.getvalue()) == DATA


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_corrupt_and_truncated_input_is_a_compression_error(codec):
    good = compression.compress(codec, DATA)
    for bad in (b"", b"\x00" * 40, good[: len(good) // 2], good[:20] + b"\xff" * 20):
        with pytest.raises(CompressionError):
            compression.decompress(codec, bad)


def test_snappy_blocks_claiming_more_than_they_can_hold_are_refused_before_allocating():
    bomb = b"\xff\xff\xff\xff\x0f" + b"\x00" * 10  # a raw block declaring 4 GiB
    with pytest.raises(CompressionError, match="claims 4294967295"):
        compression.decompress(SNAPPY, bomb)
    framed = compression.XERIAL_HEADER + b"\x00\x00\x00\x0f" + bomb
    with pytest.raises(CompressionError, match="claims"):
        compression.decompress(SNAPPY, framed)
    with pytest.raises(CompressionError, match="runs past the end"):
        compression.decompress(SNAPPY, compression.XERIAL_HEADER + b"\x00\x00\x10\x00abc")


def test_codec_names():
    assert [compression.codec_for(n) for n in (None, "none", "gzip", "snappy", "lz4", "zstd")] == [
        NONE, NONE, GZIP, SNAPPY, LZ4, ZSTD,
    ]
    for bad in ("LZ4", "brotli", 3):
        with pytest.raises(ValueError, match="compression must be one of"):
            compression.codec_for(bad)
