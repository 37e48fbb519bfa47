"""Kafka messages through the connections: round trips of every (API, version), every
request decoder fed whole, byte by byte and with trailing bytes, zero-copy records, the
Fetch response's holes for sendfile, and encode-side errors."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_helpers import feed_events, joined, message_strategy, plain
from sluice.protocol.errors import LocalProtocolError
from sluice.protocol.kafka import (
    APIS,
    EncodeError,
    KafkaClientConnection,
    KafkaServerConnection,
    RequestHeader,
    RequestReceived,
    ResponseReceived,
    encode_request,
    encode_response,
)
from sluice.protocol.kafka.messages import (
    FetchResponse,
    MetadataRequest,
    OffsetFetchRequest,
    ProduceRequest,
    ProduceResponse,
)
from sluice.protocol.slices import FileSlice

PAIRS = [(key, v) for key, api in sorted(APIS.items()) for v in api.versions]
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _id(pair):
    return f"{APIS[pair[0]].name}-v{pair[1]}"


def _header(key, version, cid=7, client_id="tests"):
    return RequestHeader(api_key=key, api_version=version, correlation_id=cid,
                         client_id=client_id)


def _is_acks0(key, request):
    return key == 0 and request.acks == 0


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
@SETTINGS
@given(data=st.data(), chunk=st.sampled_from([None, 1, 7]))
def test_every_request_round_trips_whole_byte_by_byte_and_with_trailing_bytes(pair, data, chunk):
    key, version = pair
    first = data.draw(message_strategy(key, True, version))
    second = data.draw(message_strategy(key, True, version))
    raw = joined(encode_request(_header(key, version, 1), first))
    nxt = joined(encode_request(_header(key, version, 2, None), second))
    server = KafkaServerConnection()
    # The first request, then the start of the next: trailing bytes wait for their frame.
    events = feed_events(server, raw + nxt[:len(nxt) // 2], chunk)
    assert [e.header for e in events] == [_header(key, version, 1)]
    events += feed_events(server, nxt[len(nxt) // 2:], chunk)
    schema = APIS[key].request.schema
    assert [plain(e.request, schema, version) for e in events] == [
        plain(m, schema, version) for m in (first, second)]
    assert events[1].header.client_id is None
    assert server.owed == sum(not _is_acks0(key, m) for m in (first, second))


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
@SETTINGS
@given(data=st.data())
def test_every_response_round_trips_through_the_client_connection(pair, data):
    key, version = pair
    request = data.draw(message_strategy(key, True, version))
    response = data.draw(message_strategy(key, False, version))
    if key == 18:  # an UNSUPPORTED_VERSION answer is read as v0 (see below)
        response = type(response)(error_code=0, api_keys=response.api_keys,
                                  throttle_time_ms=response.throttle_time_ms)
    if _is_acks0(key, request):
        request = type(request)(transactional_id=None, acks=1, timeout_ms=0, topic_data=[])
    client, server = KafkaClientConnection(), KafkaServerConnection()
    header, pieces = client.send_request(request, version)
    (received,) = feed_events(server, joined(pieces))
    (answer,) = feed_events(client, joined(server.send_response(received.header, response)))
    assert isinstance(answer, ResponseReceived) and answer.header is header
    schema = APIS[key].response.schema
    assert plain(answer.response, schema, version) == plain(response, schema, version)
    assert (client.in_flight, server.owed) == (0, 0)


# -- records: views of the frame on decode, holes on encode -------------------------------------


def test_produce_records_are_writable_views_of_the_received_frame():
    batch = b"B" * 100
    request = ProduceRequest(acks=-1, timeout_ms=1000, topic_data=[
        ProduceRequest.TopicProduceData(name="t", partition_data=[
            ProduceRequest.PartitionProduceData(index=0, records=batch)])])
    server = KafkaServerConnection()
    (event,) = feed_events(server, joined(encode_request(_header(0, 8), request)))
    records = event.request.topic_data[0].partition_data[0].records
    assert isinstance(records, memoryview) and not records.readonly
    assert bytes(records) == batch
    assert isinstance(records.obj, bytearray) and len(records.obj) > len(batch)  # the frame
    records[:8] = struct.pack(">q", 42)  # the broker stamps the base offset in place
    assert records.obj.find(struct.pack(">q", 42)) > 0


def test_a_fetch_response_is_bytes_around_file_slices(tmp_path):
    log = tmp_path / "00000000000000000000.log"
    log.write_bytes(b"." * 10 + b"FIRST-BATCH" + b"SECOND" + b".")
    with open(log, "rb") as f:
        first, second = FileSlice(f, 10, 11), FileSlice(f, 21, 6)
        response = FetchResponse(responses=[FetchResponse.FetchableTopicResponse(
            topic="t", partitions=[
                FetchResponse.PartitionData(partition_index=0, high_watermark=5, records=first),
                FetchResponse.PartitionData(partition_index=1, high_watermark=6),
                FetchResponse.PartitionData(partition_index=2, high_watermark=7,
                                            records=[second]),
            ])])
        pieces = encode_response(_header(1, 11, cid=0), response)
        # bytes, hole, bytes, hole (records end the last partition, and the response): the
        # broker sends the bytes and sendfiles each slice as it is.
        assert [type(p) for p in pieces] == [memoryview, FileSlice, memoryview, FileSlice]
        assert pieces[1] is first and pieces[3] is second
        size = sum(p.length if isinstance(p, FileSlice) else p.nbytes for p in pieces)
        assert struct.unpack(">i", bytes(pieces[0][:4]))[0] == size - 4
        assert bytes(pieces[0][-4:]) == struct.pack(">i", 11)  # the hole's length, just before
        client = KafkaClientConnection()
        client.send_request(_fetch_request(), 11)
        (answer,) = feed_events(client, joined(pieces))
    parts = answer.response.responses[0].partitions
    assert [None if p.records is None else bytes(p.records) for p in parts] == [
        b"FIRST-BATCH", None, b"SECOND"]


def _fetch_request():
    return APIS[1].request.cls(max_wait_ms=0, min_bytes=1, topics=[])


# -- encode-side errors ---------------------------------------------------------------------------


def test_messages_check_their_fields_when_built():
    with pytest.raises(ValueError, match=r"ProduceRequest\.acks must be a int16, got 70000"):
        ProduceRequest(acks=70000, timeout_ms=0)
    with pytest.raises(ValueError, match="MetadataRequestTopic.name must be a string"):
        MetadataRequest.MetadataRequestTopic(name=b"bytes")
    with pytest.raises(ValueError, match="topic_data must be a list"):
        ProduceRequest(acks=1, timeout_ms=0, topic_data=[MetadataRequest()])
    with pytest.raises(ValueError, match="records must be a nullable records"):
        ProduceRequest.PartitionProduceData(index=0, records="text")
    with pytest.raises(TypeError):
        ProduceRequest(1, 0)  # keyword-only


def test_a_null_the_version_cannot_carry_is_a_local_error_with_its_path():
    request = OffsetFetchRequest(group_id="g", topics=None)  # "all topics": v2+ only
    encode_request(_header(9, 2), request)
    with pytest.raises(EncodeError, match=r"OffsetFetchRequest v1\.topics: null where null"):
        encode_request(_header(9, 1), request)


def test_a_string_too_long_for_the_wire_is_a_local_error_with_its_path():
    response = ProduceResponse(responses=[ProduceResponse.TopicProduceResponse(name="x" * 40_000)])
    with pytest.raises(EncodeError, match=r"ProduceResponse v8\.responses\[0\]\.name: string"):
        encode_response(_header(0, 8), response)


def test_a_message_of_another_api_or_direction_is_refused():
    with pytest.raises(LocalProtocolError, match="cannot answer API 3"):
        encode_response(_header(3, 8), ProduceResponse())
    with pytest.raises(LocalProtocolError, match="is a request"):
        encode_response(_header(3, 8), MetadataRequest())
    with pytest.raises(LocalProtocolError, match="cannot travel as API 3 v0"):
        encode_request(_header(3, 0), MetadataRequest())
    with pytest.raises(LocalProtocolError, match="not a Kafka message"):
        encode_response(_header(3, 8), object())


# -- connection rules -----------------------------------------------------------------------------


def _produce(acks):
    return ProduceRequest(acks=acks, timeout_ms=0, topic_data=[])


def test_responses_go_out_in_request_order_and_acks0_is_owed_nothing():
    client, server = KafkaClientConnection(), KafkaServerConnection()
    raw = b""
    for request in (_produce(1), _produce(0), MetadataRequest()):
        _, pieces = client.send_request(request, 8)
        raw += joined(pieces)
    first, unanswered, metadata = feed_events(server, raw)
    assert server.owed == 2 and client.in_flight == 2
    with pytest.raises(LocalProtocolError, match="out of turn"):
        server.send_response(metadata.header, APIS[3].response.cls())
    with pytest.raises(LocalProtocolError, match="out of turn"):
        server.send_response(unanswered.header, ProduceResponse())
    out = server.send_response(first.header, ProduceResponse())
    out += server.send_response(metadata.header, APIS[3].response.cls())
    answers = feed_events(client, joined(out))
    assert [a.header.api_key for a in answers] == [0, 3]
    assert [a.header.correlation_id for a in answers] == [0, 2]


def test_the_client_refuses_a_response_it_did_not_ask_for():
    client = KafkaClientConnection()
    client.send_request(MetadataRequest(), 8)
    response = joined(encode_response(_header(3, 8, cid=99), APIS[3].response.cls()))
    with pytest.raises(Exception, match="correlation id 99, expected 0"):
        feed_events(client, response)
    with pytest.raises(Exception, match="correlation id 99"):  # sticky
        client.next_event()
    with pytest.raises(LocalProtocolError, match="already failed"):
        client.send_request(MetadataRequest(), 8)


def test_the_client_sees_a_close_with_answers_due():
    client = KafkaClientConnection()
    client.send_request(MetadataRequest(), 8)
    client.receive_data(b"")
    with pytest.raises(Exception, match="closed the connection with 1 responses due"):
        client.next_event()


def test_request_events_carry_the_header():
    client, server = KafkaClientConnection(client_id="kcat"), KafkaServerConnection()
    _, pieces = client.send_request(MetadataRequest(topics=[]), 5)
    (event,) = feed_events(server, joined(pieces))
    assert isinstance(event, RequestReceived)
    assert event.header == _header(3, 5, 0, "kcat")
    assert event.request == MetadataRequest(topics=[])
