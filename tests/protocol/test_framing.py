"""FrameDecoder and encode_frame: chunking, limits, EOF, sticky errors."""

import struct
import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sluice.protocol.errors import LocalProtocolError, OversizedFrameError, RemoteProtocolError
from sluice.protocol.framing import (
    CLOSED,
    NEED_DATA,
    REUSE_MIN_BYTES,
    Frame,
    FrameDecoder,
    encode_frame,
)


def frame_bytes(header: dict, body: bytes = b"") -> bytes:
    return encode_frame(header, len(body)) + body


def drain(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while isinstance(frame := decoder.next_frame(), Frame):
        frames.append(frame)
    assert frame is NEED_DATA
    return frames


def as_pair(frame: Frame) -> tuple[dict, bytes]:
    return msgpack.unpackb(frame.header), bytes(frame.body)


A = ({"cid": 1, "x": "a"}, b"first body")
B = ({"cid": 2}, b"")
C = ({"cid": 3, "y": [1, 2, 3]}, bytes(range(256)) * 3)


def test_encode_frame_golden():
    assert frame_bytes({"cid": 1}, b"xy").hex() == "0000000c00000006" + "81a363696401" + "7879"


def test_whole_frame():
    decoder = FrameDecoder()
    decoder.receive_data(frame_bytes(*C))
    frame = decoder.next_frame()
    assert as_pair(frame) == C
    assert not frame.body.readonly
    assert decoder.next_frame() is NEED_DATA


def test_byte_by_byte():
    decoder = FrameDecoder()
    data = frame_bytes(*A)
    for byte in data[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[-1:])
    assert as_pair(decoder.next_frame()) == A
    assert decoder.next_frame() is NEED_DATA


def test_trailing_bytes():
    decoder = FrameDecoder()
    second = frame_bytes(*B)
    decoder.receive_data(frame_bytes(*A) + frame_bytes(*C) + second[:5])
    assert [as_pair(f) for f in drain(decoder)] == [A, C]
    decoder.receive_data(second[5:])
    assert [as_pair(f) for f in drain(decoder)] == [B]


@given(st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_frames(cuts):
    stream = frame_bytes(*A) + frame_bytes(*B) + frame_bytes(*C)
    decoder = FrameDecoder()
    frames = []
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in zip(points, points[1:], strict=False):
        decoder.receive_data(stream[start:end])
        frames += drain(decoder)
    assert [as_pair(f) for f in frames] == [A, B, C]


def test_empty_frame():
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">II", 4, 0))
    frame = decoder.next_frame()
    assert bytes(frame.header) == b"" and bytes(frame.body) == b""


def test_body_is_a_writable_view_of_a_private_buffer():
    data = bytearray(frame_bytes(*C))
    decoder = FrameDecoder()
    decoder.receive_data(data)
    data[:] = bytes(len(data))  # the caller reuses its receive buffer
    frame = decoder.next_frame()
    assert as_pair(frame) == C
    frame.body[0:4] = b"\xff" * 4
    assert bytes(frame.body[:4]) == b"\xff" * 4


def test_oversized_prefix_is_refused_before_buffering():
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(struct.pack(">I", 101))  # nothing but the frame_length field
    with pytest.raises(OversizedFrameError) as info:
        decoder.next_frame()
    assert (info.value.size, info.value.limit) == (101, 100)
    assert isinstance(info.value, RemoteProtocolError)
    decoder.receive_data(b"more")
    with pytest.raises(OversizedFrameError):  # sticky
        decoder.next_frame()


def test_frame_of_exactly_max_size_is_accepted():
    body = bytes(100 - 4 - 1)
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(struct.pack(">II", 100, 1) + b"\xc0" + body)
    assert bytes(decoder.next_frame().body) == body


@pytest.mark.parametrize(
    "prefix",
    [
        struct.pack(">II", 3, 0),  # frame_length too small for header_length
        struct.pack(">II", 10, 7),  # header longer than the frame
        struct.pack(">II", 2**20 + 100, 2**20 + 1),  # header over max_header_bytes
    ],
)
def test_impossible_header_length(prefix):
    decoder = FrameDecoder()
    decoder.receive_data(prefix)
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


@pytest.mark.parametrize("keep", [1, 4, 7, 8, 12, 20])
def test_eof_mid_frame(keep):
    decoder = FrameDecoder()
    decoder.receive_data(frame_bytes(*A)[:keep])
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        decoder.next_frame()


def test_clean_eof_after_frames():
    decoder = FrameDecoder()
    decoder.receive_data(frame_bytes(*A) + frame_bytes(*B))
    decoder.receive_data(b"")
    assert as_pair(decoder.next_frame()) == A
    assert as_pair(decoder.next_frame()) == B
    assert decoder.next_frame() is CLOSED
    assert decoder.next_frame() is CLOSED
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"late")


def test_large_frame_in_small_chunks_is_linear():
    body = bytes(16 * 1024 * 1024)
    data = frame_bytes({"cid": 1}, body)
    decoder = FrameDecoder()
    started = time.perf_counter()
    view = memoryview(data)
    for pos in range(0, len(data), 4096):
        decoder.receive_data(view[pos : pos + 4096])
        if pos + 4096 < len(data):
            assert decoder.next_frame() is NEED_DATA
    frame = decoder.next_frame()
    assert len(frame.body) == len(body)
    assert time.perf_counter() - started < 3  # quadratic copying would take minutes


def test_encode_frame_refuses_what_the_peer_must_refuse():
    with pytest.raises(LocalProtocolError):
        encode_frame({"x": object()}, 0)
    with pytest.raises(LocalProtocolError):
        encode_frame({"x": "y" * 100}, 0, max_header_bytes=50)
    with pytest.raises(LocalProtocolError):
        encode_frame({}, -1)
    with pytest.raises(LocalProtocolError):
        encode_frame({}, 2**32)


def receive_into(decoder: FrameDecoder, stream: bytes, step: int) -> list[Frame]:
    """Feed ``stream`` through ``receive_buffer``/``received`` as a socket would, ``step``
    bytes at most per receive; collect every frame."""
    frames, pos = [], 0
    while True:
        event = decoder.next_frame()
        if isinstance(event, Frame):
            frames.append(event)
            continue
        if event is CLOSED:
            return frames
        with decoder.receive_buffer(step) as view:
            n = min(len(view), len(stream) - pos)
            view[:n] = stream[pos : pos + n]
        pos += n
        decoder.received(n)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize("preallocate", [16, 1 << 30])
def test_receive_into_gives_the_same_frames(step, preallocate):
    """Straight-into-the-frame receiving, with frames preallocated or grown, whole or split."""
    frames = [({"a": i}, bytes([i]) * size) for i, size in enumerate([0, 5, 300, 70_000, 3])]
    stream = b"".join(frame_bytes(h, b) for h, b in frames)
    decoder = FrameDecoder(preallocate_bytes=preallocate)
    assert [as_pair(f) for f in receive_into(decoder, stream, step)] == frames


def test_receive_into_a_growing_frame_never_exceeds_its_announced_size():
    body = b"x" * 100_000
    decoder = FrameDecoder(preallocate_bytes=1024)
    stream = frame_bytes({"k": 1}, body)
    [frame] = receive_into(decoder, stream, 10_000)
    assert bytes(frame.body) == body and len(frame.header) + len(frame.body) == len(stream) - 8


def test_receive_into_eof_mid_frame_is_an_error():
    decoder = FrameDecoder()
    stream = frame_bytes({"k": 1}, b"y" * 50)[:30]
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        receive_into(decoder, stream, 8)


def _large(tag: int, size: int = REUSE_MIN_BYTES) -> tuple[dict, bytes]:
    return {"cid": tag}, bytes([tag]) * size


def _buffer_of(frame: Frame):
    return frame.body.obj  # the bytearray the frame's views point into


def test_large_frame_buffers_are_reused_only_once_nothing_views_them():
    decoder = FrameDecoder(keep_frames=2)
    decoder.receive_data(frame_bytes(*_large(1, REUSE_MIN_BYTES + 100)))
    first = decoder.next_frame()
    decoder.receive_data(frame_bytes(*_large(2)))
    second = decoder.next_frame()
    # The first frame is still viewed: the second got its own buffer, the first is intact.
    assert _buffer_of(second) is not _buffer_of(first)
    assert as_pair(first) == _large(1, REUSE_MIN_BYTES + 100) and as_pair(second) == _large(2)
    buffer = _buffer_of(first)
    del first  # its views are gone: the buffer can serve the next frame (smaller is fine)
    decoder.receive_data(frame_bytes(*_large(3)))
    third = decoder.next_frame()
    assert _buffer_of(third) is buffer
    assert as_pair(third) == _large(3) and len(third.body) == REUSE_MIN_BYTES
    assert as_pair(second) == _large(2)  # the frame still held was not touched


def test_a_reused_buffer_larger_than_the_frame_is_cut_to_it_received_in_place():
    decoder = FrameDecoder(keep_frames=2)
    decoder.receive_data(frame_bytes(*_large(1, 4 * REUSE_MIN_BYTES)))
    decoder.next_frame()  # dropped at once: its buffer is free
    data = frame_bytes(*_large(2))
    decoder.receive_data(data[:100])
    assert decoder.next_frame() is NEED_DATA
    with decoder.receive_buffer(len(data)) as view:  # the rest lands in the reused buffer
        view[: len(data) - 100] = data[100:]
    decoder.received(len(data) - 100)
    frame = decoder.next_frame()
    assert as_pair(frame) == _large(2) and len(frame.body) == REUSE_MIN_BYTES


@pytest.mark.parametrize(
    ("keep", "frame"), [(2, C), (0, _large(1))], ids=["small-frame", "keep-none"]
)
def test_frames_are_not_kept_when_small_or_not_asked_for(keep, frame):
    decoder = FrameDecoder(keep_frames=keep)
    decoder.receive_data(frame_bytes(*frame))
    first = decoder.next_frame()
    buffer = _buffer_of(first)
    del first
    decoder.receive_data(frame_bytes(*frame))
    assert _buffer_of(decoder.next_frame()) is not buffer


def test_the_scratch_buffer_is_reused_between_small_frames_unless_bytes_wait_in_it():
    decoder = FrameDecoder()
    a, b = frame_bytes(*A), frame_bytes(*C)
    with decoder.receive_buffer(1 << 20) as view:
        first = view.obj
        view[: len(a) + 5] = a + b[:5]  # all of A and the start of the next frame
    decoder.received(len(a) + 5)
    assert as_pair(decoder.next_frame()) == A
    assert decoder.next_frame() is NEED_DATA
    with decoder.receive_buffer(1 << 20) as view:  # B's first bytes still sit in `first`
        assert view.obj is not first
        second = view.obj
        view[: len(b) - 5] = b[5:]
    decoder.received(len(b) - 5)
    assert as_pair(decoder.next_frame()) == C
    with decoder.receive_buffer(1 << 20) as view:  # everything was taken out: reused
        assert view.obj is second
