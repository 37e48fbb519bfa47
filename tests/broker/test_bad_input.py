"""Hostile and malformed input: each gets a clear error and nobody else is disturbed."""

from __future__ import annotations

import struct

import msgpack
import pytest
import trio
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection, ResponseReceived
from sluice.protocol.errors import (
    FrameTooLargeError,
    InvalidRequestError,
    UnknownApiError,
    UnsupportedVersionError,
)
from sluice.protocol.framing import NEED_DATA, Frame, FrameDecoder

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce


def raw_frame(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


async def read_error_frames(stream: trio.SocketStream, count: int) -> list[dict]:
    """Read ``count`` frames and return their msgpack headers (for error responses)."""
    decoder = FrameDecoder()
    headers = []
    while len(headers) < count:
        frame = decoder.next_frame()
        if isinstance(frame, Frame):
            headers.append(msgpack.unpackb(frame.header, raw=False, strict_map_key=False))
        elif frame is NEED_DATA:
            decoder.receive_data(await stream.receive_some(1 << 16))
        else:
            break
    return headers


async def assert_still_serving(port: int) -> None:
    other = await RawClient.connect(port)
    response = await other.request(m.MetadataRequest())
    assert response.error == 0
    await other.aclose()


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (b"\xc1\xc1\xc1", InvalidRequestError.code),  # not msgpack
        (msgpack.packb([1, 2, 3]), InvalidRequestError.code),  # not a map
        (msgpack.packb({"api": 999, "v": 0, "cid": 7}), UnknownApiError.code),
        (msgpack.packb({"api": 1, "v": 99, "cid": 7}), UnsupportedVersionError.code),
        (msgpack.packb({"api": 6, "v": 0, "cid": 7, "max_wait_ms": "soon"}), InvalidRequestError.code),
        (msgpack.packb({"api": 2, "v": 0, "cid": 7}), InvalidRequestError.code),  # missing field
    ],
)
async def test_bad_header_gets_error_response_and_connection_survives(broker, header, code):
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        await stream.send_all(raw_frame(header))
        [reply] = await read_error_frames(stream, 1)
        assert reply["error"] == code and reply["message"]
        # The same connection still serves a well-formed request.
        conn = ClientConnection()
        _, pieces = conn.send_request(m.MetadataRequest())
        await stream.send_all(b"".join(bytes(p) for p in pieces))
        while True:
            event = conn.next_event()
            if isinstance(event, ResponseReceived):
                break
            conn.receive_data(await stream.receive_some(1 << 16))
        assert event.response.error == 0
        await stream.aclose()


async def test_oversized_frame_refused_before_buffering(broker):
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        # Announce a 4 GiB frame and send nothing more: the broker must answer at once.
        await stream.send_all(struct.pack(">II", 2**32 - 1, 10))
        [reply] = await read_error_frames(stream, 1)
        assert reply["error"] == FrameTooLargeError.code
        assert await stream.receive_some(1) == b""  # then it closes the connection
        await stream.aclose()
        await assert_still_serving(broker.port)


async def test_garbage_bytes_close_only_that_connection(broker):
    with trio.fail_after(10):
        bystander = await RawClient.connect(broker.port)
        await create_topic(bystander, "t")
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        await stream.send_all(b"\x00\x00\x00\x02garbage garbage garbage" * 10)
        while await stream.receive_some(1 << 16):
            pass
        await stream.aclose()
        assert (await produce(bystander, "t", make_batch([b"still here"]))).partitions[0].error == 0
        await bystander.aclose()


async def test_truncated_frame_then_disconnect(broker):
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        full = raw_frame(msgpack.packb({"api": 1, "v": 0, "cid": 0}))
        await stream.send_all(full[: len(full) // 2])
        await stream.aclose()
        await assert_still_serving(broker.port)


async def test_produce_body_length_mismatch(broker, client):
    await create_topic(client, "t")
    header = msgpack.packb(
        {"api": 5, "v": 0, "cid": 1, "acks": 1, "timeout_ms": 1000,
         "partitions": [{"topic": "t", "partition": 0, "length": 500}]}
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        await stream.send_all(raw_frame(header, b"short body"))
        [reply] = await read_error_frames(stream, 1)
        assert reply["error"] == InvalidRequestError.code
        await stream.aclose()
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 0
