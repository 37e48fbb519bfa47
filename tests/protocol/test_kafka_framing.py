"""KafkaFrameDecoder: whole, byte by byte, trailing bytes, limits before buffering, EOF."""

import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sluice.protocol.errors import LocalProtocolError, RemoteProtocolError
from sluice.protocol.framing import CLOSED, NEED_DATA
from sluice.protocol.kafka.errors import FrameSizeError
from sluice.protocol.kafka.framing import KafkaFrameDecoder


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def drain(decoder: KafkaFrameDecoder) -> list[bytes]:
    frames = []
    while isinstance(frame := decoder.next_frame(), memoryview):
        frames.append(bytes(frame))
    assert frame is NEED_DATA
    return frames


PAYLOADS = [b"first", b"", bytes(range(256)) * 5]


def test_whole():
    decoder = KafkaFrameDecoder()
    decoder.receive_data(b"".join(framed(p) for p in PAYLOADS))
    assert drain(decoder) == PAYLOADS


def test_byte_by_byte():
    decoder = KafkaFrameDecoder()
    frames = []
    for byte in b"".join(framed(p) for p in PAYLOADS):
        decoder.receive_data(bytes([byte]))
        frames += drain(decoder)
    assert frames == PAYLOADS


def test_trailing_bytes_wait_for_the_rest_of_their_frame():
    decoder = KafkaFrameDecoder()
    nxt = framed(b"second")
    decoder.receive_data(framed(b"first") + nxt[:7])
    assert drain(decoder) == [b"first"]
    decoder.receive_data(nxt[7:])
    assert drain(decoder) == [b"second"]


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(1, 50))
def test_any_chunking(payloads, chunk):
    data = b"".join(framed(p) for p in payloads)
    decoder = KafkaFrameDecoder()
    frames = []
    for start in range(0, len(data), chunk):
        decoder.receive_data(data[start:start + chunk])
        frames += drain(decoder)
    assert frames == payloads


def test_frames_are_writable_views_of_their_own_buffers():
    decoder = KafkaFrameDecoder()
    decoder.receive_data(framed(b"ab") + framed(b"cd"))
    first, second = decoder.next_frame(), decoder.next_frame()
    first[0] = ord("X")
    assert (bytes(first), bytes(second)) == (b"Xb", b"cd")


def test_a_negative_size_is_refused_at_once():
    decoder = KafkaFrameDecoder()
    decoder.receive_data(b"\xff\xff\xff\xfe")
    with pytest.raises(FrameSizeError, match="-2 is negative") as info:
        decoder.next_frame()
    assert info.value.size == -2


def test_an_oversized_frame_is_refused_before_any_of_it_is_buffered():
    decoder = KafkaFrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(struct.pack(">i", 1001))
    with pytest.raises(FrameSizeError, match="exceeds max_frame_bytes=1000") as info:
        decoder.next_frame()
    assert (info.value.size, info.value.limit) == (1001, 1000)
    with pytest.raises(FrameSizeError):  # sticky
        decoder.next_frame()


def test_a_large_announced_frame_commits_memory_only_as_bytes_arrive():
    decoder = KafkaFrameDecoder(max_frame_bytes=64 * 2**20)
    tracemalloc.start()
    try:
        decoder.receive_data(struct.pack(">i", 60 * 2**20) + b"x" * 1000)
        assert decoder.next_frame() is NEED_DATA
        allocated, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert allocated < 2**20


def test_a_large_frame_received_in_place():
    size = 3 * 2**20 + 17
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    decoder = KafkaFrameDecoder()
    data = framed(payload)
    pos = 0
    frame = NEED_DATA
    while frame is NEED_DATA:
        with decoder.receive_buffer(100_000) as view:
            n = min(len(view), len(data) - pos)
            view[:n] = data[pos:pos + n]
        decoder.received(n)
        pos += n
        frame = decoder.next_frame()
    assert bytes(frame) == payload
    assert pos == len(data)


def test_receive_buffer_then_eof():
    decoder = KafkaFrameDecoder()
    with decoder.receive_buffer(10) as view:
        view[:4] = b"\x00\x00\x00\x01"
    decoder.received(4)
    with decoder.receive_buffer(10) as view:
        view[:1] = b"!"
    decoder.received(1)
    assert bytes(decoder.next_frame()) == b"!"
    decoder.received(0)
    assert decoder.next_frame() is CLOSED


def test_clean_eof_between_frames():
    decoder = KafkaFrameDecoder()
    decoder.receive_data(framed(b"a"))
    decoder.receive_data(b"")
    assert bytes(decoder.next_frame()) == b"a"
    assert decoder.next_frame() is CLOSED
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"more")


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_eof_inside_a_frame_is_a_remote_error(cut):
    decoder = KafkaFrameDecoder()
    decoder.receive_data(framed(b"abc")[:cut])
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        decoder.next_frame()
