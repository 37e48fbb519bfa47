"""ClientConnection and ServerConnection: ordering, acks=0, errors, EOF, and fuzzing."""

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sluice.protocol import messages as m
from sluice.protocol.connection import (
    BadRequest,
    ClientConnection,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
)
from sluice.protocol.errors import (
    FrameTooLargeError,
    InvalidRequestError,
    LocalProtocolError,
    OversizedFrameError,
    RemoteProtocolError,
    UnknownApiError,
)
from sluice.protocol.framing import CLOSED, NEED_DATA


def wire(pieces) -> bytes:
    return b"".join(bytes(p) for p in pieces)


def events(conn) -> list:
    out = []
    while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
        out.append(event)
    return out


METADATA = m.MetadataRequest(topics=None)
FIRE_AND_FORGET = m.ProduceRequest(
    acks=0, timeout_ms=0, partitions=[m.ProducePartition(topic="t", partition=0, records=b"x")]
)


def test_pipelined_requests_are_answered_in_order():
    client, server = ClientConnection(), ServerConnection()
    sent = [client.send_request(METADATA), client.send_request(m.ListGroupsRequest())]
    assert [cid for cid, _ in sent] == [0, 1]
    assert client.in_flight == 2
    server.receive_data(wire(sent[0][1] + sent[1][1]))
    received = events(server)
    assert received == [
        RequestReceived(correlation_id=0, request=METADATA),
        RequestReceived(correlation_id=1, request=m.ListGroupsRequest()),
    ]
    assert [e.api for e in received] == [1, 12]
    first = server.send_response(0, m.MetadataResponse(controller_id=1))
    second = server.send_response(1, m.ListGroupsResponse())
    assert server.owed == 0
    client.receive_data(wire(first + second))
    assert events(client) == [
        ResponseReceived(correlation_id=0, response=m.MetadataResponse(controller_id=1)),
        ResponseReceived(correlation_id=1, response=m.ListGroupsResponse()),
    ]
    assert client.in_flight == 0


def test_acks_zero_produce_expects_no_response():
    client, server = ClientConnection(), ServerConnection()
    cid0, produce = client.send_request(FIRE_AND_FORGET)
    cid1, metadata = client.send_request(METADATA)
    assert (cid0, cid1, client.in_flight) == (0, 1, 1)
    server.receive_data(wire(produce + metadata))
    assert [e.correlation_id for e in events(server)] == [0, 1]
    with pytest.raises(LocalProtocolError):
        server.send_response(0, m.ProduceResponse())  # acks=0 is owed nothing
    client.receive_data(wire(server.send_response(1, m.MetadataResponse())))
    assert events(client) == [ResponseReceived(correlation_id=1, response=m.MetadataResponse())]


def test_correlation_ids_wrap_at_2_31():
    client = ClientConnection()
    client._next_cid = m.CID_MAX
    assert client.send_request(METADATA)[0] == m.CID_MAX
    assert client.send_request(METADATA)[0] == 0


def test_server_refuses_to_answer_out_of_turn():
    client, server = ClientConnection(), ServerConnection()
    for _ in range(2):
        server.receive_data(wire(client.send_request(METADATA)[1]))
    events(server)
    with pytest.raises(LocalProtocolError):
        server.send_response(1, m.MetadataResponse())
    with pytest.raises(LocalProtocolError):
        server.send_response(0, m.ListGroupsResponse())  # wrong api for cid 0
    server.send_response(0, m.MetadataResponse())
    server.send_error(1, 1, InvalidRequestError("no"))
    with pytest.raises(LocalProtocolError):
        server.send_response(2, m.MetadataResponse())


def test_bad_request_is_answered_and_the_connection_goes_on():
    client, server = ClientConnection(), ServerConnection()
    packed = msgpack.packb({"api": 42, "v": 0, "cid": 5})
    server.receive_data(struct.pack(">II", 4 + len(packed), len(packed)) + packed)
    server.receive_data(struct.pack(">II", 5, 1) + b"\xc1")  # not msgpack at all
    server.receive_data(wire(client.send_request(METADATA)[1]))
    bad1, bad2, good = events(server)
    assert isinstance(bad1, BadRequest) and isinstance(bad1.error, UnknownApiError)
    assert (bad1.correlation_id, bad1.api) == (5, 42)
    assert isinstance(bad2, BadRequest) and isinstance(bad2.error, InvalidRequestError)
    assert (bad2.correlation_id, bad2.api) == (-1, -1)
    assert good == RequestReceived(correlation_id=0, request=METADATA)
    assert msgpack.unpackb(server.send_error(5, 42, bad1.error)[0][8:])["error"] == 10
    server.send_error(-1, -1, bad2.error)
    server.send_response(0, m.MetadataResponse())


def test_oversized_frame_then_connection_level_error():
    client, server = ClientConnection(max_frame_bytes=1024), ServerConnection(max_frame_bytes=64)
    cid, pieces = client.send_request(m.DeleteTopicsRequest(topics=["x" * 100]))
    server.receive_data(wire(pieces))
    with pytest.raises(OversizedFrameError):
        server.next_event()
    with pytest.raises(OversizedFrameError):  # sticky
        server.next_event()
    client.receive_data(wire(server.send_error(-1, -1, FrameTooLargeError())))
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert isinstance(info.value.__cause__, FrameTooLargeError)
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    with pytest.raises(LocalProtocolError):
        client.send_request(METADATA)


def test_client_rejects_responses_it_did_not_ask_for():
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(wire(client.send_request(METADATA)[1]))
    events(server)
    stray = m.encode_response(3, m.MetadataResponse())
    client.receive_data(wire(stray))
    with pytest.raises(RemoteProtocolError, match="cid 3, expected 0"):
        client.next_event()

    idle = ClientConnection()
    idle.receive_data(wire(stray))
    with pytest.raises(RemoteProtocolError, match="no request is outstanding"):
        idle.next_event()


def test_eof():
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(wire(client.send_request(METADATA)[1]))
    server.receive_data(b"")
    assert isinstance(server.next_event(), RequestReceived)
    assert server.next_event() is CLOSED
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="1 responses due"):
        client.next_event()
    idle = ClientConnection()
    idle.receive_data(b"")
    assert idle.next_event() is CLOSED


# -- fuzzing: whatever the peer sends, the server raises nothing but RemoteProtocolError ------


def feed_server(chunks: list[bytes]) -> list:
    server = ServerConnection(max_frame_bytes=4096, max_header_bytes=1024)
    seen = []
    try:
        for chunk in filter(None, chunks):  # b"" would mean EOF
            server.receive_data(chunk)
            seen += events(server)
        server.receive_data(b"")
        while (event := server.next_event()) is not CLOSED:
            seen.append(event)
    except RemoteProtocolError:
        pass
    for event in seen:
        if isinstance(event, BadRequest):
            server.send_error(event.correlation_id, event.api, event.error)
    return seen


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_arbitrary_bytes(chunks):
    feed_server(chunks)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.sampled_from(["api", "v", "cid", "topics", "partitions", "length", "acks"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["topics", "partitions", "topic", "partition", "length", "offset"])
            | st.text(max_size=4),
            inner,
            max_size=6,
        )
    ),
    max_leaves=8,
)


def framed(header: bytes, body: bytes) -> bytes:
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


@settings(max_examples=150)
@given(
    st.dictionaries(
        st.sampled_from(["api", "v", "cid", "topics", "partitions", "acks", "timeout_ms"]),
        msgpack_values | st.integers(-1, 14),
    ),
    st.binary(max_size=16),
)
def test_fuzz_headers_within_intact_frames(header, body):
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    seen = feed_server([framed(packed, body)])
    assert len(seen) == 1 and isinstance(seen[0], RequestReceived | BadRequest)


@settings(max_examples=200)
@given(st.binary(max_size=40), st.binary(max_size=16))
def test_fuzz_garbage_header_bytes_within_intact_frames(header, body):
    seen = feed_server([framed(header, body)])
    assert len(seen) == 1 and isinstance(seen[0], RequestReceived | BadRequest)
