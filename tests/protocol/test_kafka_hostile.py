"""Hostile bytes on the Kafka port: every malformation is a precise ``KafkaRemoteError``
(close the connection, as Kafka does), never another exception; the one answered case,
ApiVersions at an unknown version, is an event whose answer kafka-python reads."""

import struct
import tracemalloc
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_helpers import feed_events, joined, message_strategy, new_class
from sluice.protocol.errors import RemoteProtocolError
from sluice.protocol.kafka import (
    APIS,
    KafkaRemoteError,
    KafkaServerConnection,
    MalformedMessageError,
    RequestHeader,
    UnknownApiKeyError,
    UnsupportedApiVersionError,
    UnsupportedApiVersionsRequest,
    api_versions_entries,
    decode_response,
    encode_request,
    unsupported_version_response,
)
from sluice.protocol.kafka.messages import MetadataRequest, ProduceRequest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.old.api_versions import ApiVersionsResponse as OldApiVersionsResponse

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EDGE_PAIRS = [(key, v) for key, api in sorted(APIS.items())
              for v in sorted({api.versions[0], api.versions[-1]})]


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def request_bytes(api_key: int, version: int, cid: int = 5, body: bytes = b"",
                  client_id: bytes = b"\x00\x01c") -> bytes:
    """A frame with a hand-made request header (client id "c") and ``body``."""
    return framed(struct.pack(">hhi", api_key, version, cid) + client_id + body)


def raises_remote(raw: bytes, error=KafkaRemoteError):
    server = KafkaServerConnection()
    server.receive_data(raw)
    with pytest.raises(error) as info:
        server.next_event()
    with pytest.raises(type(info.value)):  # sticky: the connection is done
        server.next_event()
    return info.value


# -- header-level -----------------------------------------------------------------------------------


def test_an_unknown_api_key_names_what_it_read():
    error = raises_remote(request_bytes(4242, 3, cid=77), UnknownApiKeyError)
    assert (error.api_key, error.api_version, error.correlation_id) == (4242, 3, 77)
    assert "unknown API key 4242" in str(error)


@pytest.mark.parametrize("key, version, advertised", [
    (0, 2, True),  # Produce before record batch v2: advertised (librdkafka), no schema
    (1, 3, True),
    (3, 0, True),
    (2, 0, True),
    (0, 9, False),  # flexible versions: neither
    (3, 9, False),
    (12, -1, False),
])
def test_an_unsupported_version_is_refused_precisely(key, version, advertised):
    error = raises_remote(request_bytes(key, version, cid=9), UnsupportedApiVersionError)
    assert error.advertised is advertised
    assert (error.api_key, error.api_version, error.correlation_id) == (key, version, 9)
    assert f"v{version} is not supported" in str(error)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x03\x00\x01\x00\x00\x00"])
def test_a_frame_too_short_for_a_header(payload):
    error = raises_remote(framed(payload), MalformedMessageError)
    assert error.path == "request header"


@pytest.mark.parametrize("client_id, problem", [
    (b"\x00\x09abc", "overruns"), (b"\xff\xf0", "negative"), (b"\x00", "needs 2 bytes"),
    (b"\x00\x01\xff", "not UTF-8"),
])
def test_a_bad_client_id(client_id, problem):
    error = raises_remote(request_bytes(3, 8, cid=11, client_id=client_id),
                          MalformedMessageError)
    assert error.path == "client_id" and problem in error.problem
    assert (error.api_key, error.correlation_id) == (3, 11)


# -- body-level -------------------------------------------------------------------------------------


def _valid(key, version, data):
    request = data.draw(message_strategy(key, True, version))
    header = RequestHeader(api_key=key, api_version=version, correlation_id=3, client_id="c")
    return joined(encode_request(header, request))[4:]  # without the size prefix


@pytest.mark.parametrize("pair", EDGE_PAIRS, ids=lambda p: f"{APIS[p[0]].name}-v{p[1]}")
@SETTINGS
@given(data=st.data())
def test_every_truncation_of_a_request_is_malformed(pair, data):
    payload = _valid(*pair, data)
    header_end = 8 + 2 + 1 + (1 if pair == (18, 3) else 0)  # prefix, client id "c", tags
    for cut in range(header_end, len(payload)):
        error = raises_remote(framed(payload[:cut]), MalformedMessageError)
        assert error.path.startswith(f"{APIS[pair[0]].name}Request v{pair[1]}")
        assert error.correlation_id == 3


@pytest.mark.parametrize("pair", EDGE_PAIRS, ids=lambda p: f"{APIS[p[0]].name}-v{p[1]}")
@SETTINGS
@given(data=st.data(), extra=st.binary(min_size=1, max_size=9))
def test_bytes_left_over_inside_a_frame_are_malformed(pair, data, extra):
    error = raises_remote(framed(_valid(*pair, data) + extra), MalformedMessageError)
    assert error.problem == f"{len(extra)} bytes left over after the body"


@pytest.mark.parametrize("pair", EDGE_PAIRS, ids=lambda p: f"{APIS[p[0]].name}-v{p[1]}")
@SETTINGS
@given(data=st.data())
def test_corrupted_requests_decode_or_fail_precisely(pair, data):
    """Flip, insert and delete bytes of a valid request: the decoder either reads something
    or raises a KafkaRemoteError -- never anything else."""
    payload = bytearray(_valid(*pair, data))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and at < len(payload):
            payload[at] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif at < len(payload):
            del payload[at]
    server = KafkaServerConnection()
    server.receive_data(framed(bytes(payload)))
    try:
        server.next_event()
    except KafkaRemoteError:
        pass


@SETTINGS
@given(st.binary(max_size=200), st.integers(1, 16))
def test_garbage_on_the_socket_only_raises_remote_errors(garbage, chunk):
    server = KafkaServerConnection(max_frame_bytes=10_000)
    try:
        feed_events(server, garbage, chunk)
        server.receive_data(b"")
        server.next_event()
    except RemoteProtocolError:
        pass


def test_negative_lengths_in_a_body_name_the_field():
    body = struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + b"\xff\xfe" + b"\x00" * 4
    error = raises_remote(request_bytes(0, 3, body=b"\xff\xff" + body), MalformedMessageError)
    assert error.path == "ProduceRequest v3.topic_data[0].name"
    assert "negative" in error.problem


def test_a_huge_array_count_is_refused_without_allocating_it():
    body = b"\xff\xff" + struct.pack(">hii", 1, 1000, 2**31 - 1)  # 2 billion topics
    tracemalloc.start()
    try:
        error = raises_remote(request_bytes(0, 3, body=body), MalformedMessageError)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.path == "ProduceRequest v3.topic_data"
    assert "array count 2147483647 cannot fit" in error.problem
    assert peak < 2**20


def test_a_request_with_more_items_than_max_items_is_refused():
    request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="t")] * 50)
    header = RequestHeader(api_key=3, api_version=8, correlation_id=1)
    server = KafkaServerConnection(max_items=49)
    server.receive_data(joined(encode_request(header, request)))
    with pytest.raises(MalformedMessageError, match="max_items"):
        server.next_event()
    fine = KafkaServerConnection(max_items=50)
    assert len(feed_events(fine, joined(encode_request(header, request)))) == 1


def test_a_null_where_the_schema_forbids_one():
    body = struct.pack(">hi", 1, 1000) + b"\xff\xff\xff\xff"  # topic_data null
    error = raises_remote(request_bytes(0, 3, body=b"\xff\xff" + body), MalformedMessageError)
    assert error.path == "ProduceRequest v3.topic_data" and "null" in error.problem


def test_records_longer_than_the_frame():
    body = (b"\xff\xff" + struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + b"\x00\x01t"
            + struct.pack(">i", 1) + struct.pack(">ii", 0, 500) + b"x" * 10)
    error = raises_remote(request_bytes(0, 3, body=body), MalformedMessageError)
    assert error.path == "ProduceRequest v3.topic_data[0].partition_data[0].records"
    assert "overruns" in error.problem


# -- ApiVersions at a version this broker does not know: answered, at v0 ---------------------------


def _api_versions_v4_request(cid: int) -> bytes:
    # Request header v2 (flexible): client id, then a tagged field Sluice must not parse.
    header = struct.pack(">hhi", 18, 4, cid) + b"\x00\x07rdkafka" + b"\x01\x00\x01Z"
    return framed(header + b"\x08librdka\x062.0.2\x00")


def test_an_unknown_api_versions_version_is_answered_at_v0_with_error_35():
    server = KafkaServerConnection()
    (event,) = feed_events(server, _api_versions_v4_request(cid=31))
    assert isinstance(event, UnsupportedApiVersionsRequest)
    assert event.header == RequestHeader(api_key=18, api_version=4, correlation_id=31,
                                         client_id="rdkafka")
    answer = joined(server.send_response(
        event.header, unsupported_version_response(api_versions_entries())))
    # kafka-python reads it as its client does (both implementations): error -> a v0 body.
    theirs = OldApiVersionsResponse[3].decode(answer, header=True, framed=True)
    assert theirs.header.correlation_id == 31
    assert theirs.error_code == 35
    assert (18, 0, 3) in [tuple(k) for k in theirs.api_keys]
    assert len(theirs.api_keys) == len(APIS)
    generated = new_class(18, False, 4).decode(answer, header=True, framed=True)
    assert (generated.error_code, len(generated.api_keys)) == (35, len(APIS))
    # And Sluice's own client side: an error-35 answer to v3 is a v0 body too.
    asked = RequestHeader(api_key=18, api_version=3, correlation_id=31)
    cid, response = decode_response(memoryview(answer)[4:], asked)
    assert cid == 31 and response.error_code == 35 and response.throttle_time_ms == 0
    assert len(response.api_keys) == len(APIS)


def test_every_api_advertises_from_zero():
    entries = {e.api_key: (e.min_version, e.max_version) for e in api_versions_entries()}
    assert entries == {key: (0, api.versions[-1]) for key, api in APIS.items()}
    assert entries[0] == (0, 8) and entries[1] == (0, 11) and entries[3] == (0, 8)


def test_a_produce_with_acks0_is_owed_nothing_even_when_answered_requests_follow():
    server = KafkaServerConnection()
    header = RequestHeader(api_key=0, api_version=8, correlation_id=1)
    raw = joined(encode_request(header, ProduceRequest(acks=0, timeout_ms=0)))
    feed_events(server, raw)
    assert server.owed == 0
    with pytest.raises(Exception, match="out of turn"):
        server.send_response(header, APIS[0].response.cls())
