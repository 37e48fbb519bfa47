"""Golden bytes: every (API, version) Sluice speaks against kafka-python's two independent
implementations (hand-written ``kafka.protocol.old`` classes, and the classes generated from
Apache Kafka's JSON message definitions).

Requests: kafka-python encodes (with header and size prefix), ``KafkaServerConnection``
decodes, every field must match. Responses: Sluice encodes, kafka-python decodes, every field
must match. All pairs of the API table, not a sample; hypothesis draws the field values.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_helpers import (
    from_new,
    from_old,
    joined,
    message_strategy,
    new_class,
    old_class,
    plain,
    to_new,
    to_old,
)
from sluice.protocol.kafka import (
    APIS,
    KafkaServerConnection,
    RequestHeader,
    RequestReceived,
    encode_response,
)

PAIRS = [(key, v) for key, api in sorted(APIS.items()) for v in api.versions]
# Each reference where it describes the pair (kafka-python's hand-written classes stop at the
# versions it needed; Kafka 4's JSON dropped the versions before record batch v2).
OLD_REQUESTS = [p for p in PAIRS if old_class(p[0], True, p[1]) is not None]
NEW_REQUESTS = [p for p in PAIRS if new_class(p[0], True, p[1]) is not None]
OLD_RESPONSES = [p for p in PAIRS if old_class(p[0], False, p[1]) is not None]
NEW_RESPONSES = [p for p in PAIRS if new_class(p[0], False, p[1]) is not None]
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _id(pair):
    key, v = pair
    return f"{APIS[key].name}-v{v}"


def test_every_pair_has_an_independent_reference():
    assert set(OLD_REQUESTS) | set(NEW_REQUESTS) == set(PAIRS)
    assert set(OLD_RESPONSES) | set(NEW_RESPONSES) == set(PAIRS)
    # Most pairs are checked against both.
    assert len(set(OLD_REQUESTS) & set(NEW_REQUESTS)) > len(PAIRS) // 2


def _decode_with_sluice(raw: bytes) -> RequestReceived:
    conn = KafkaServerConnection()
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, RequestReceived)
    return event


def _check_request(key, version, request, encoded, cid):
    event = _decode_with_sluice(bytes(encoded))
    assert event.header == RequestHeader(api_key=key, api_version=version, correlation_id=cid,
                                         client_id="golden")
    schema = APIS[key].request.schema
    assert plain(event.request, schema, version) == plain(request, schema, version)


@pytest.mark.parametrize("pair", OLD_REQUESTS, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_requests_encoded_by_kafka_python_old_classes_decode(pair, data, cid):
    key, version = pair
    old = old_class(key, True, version)
    request = data.draw(message_strategy(key, True, version))
    theirs = old(*to_old(request, APIS[key].request.schema, old.SCHEMA, version))
    theirs.with_header(correlation_id=cid, client_id="golden")
    theirs.header.api_version = version  # kafka-python 3.0.12's ListGroupsRequest_v2 says 1
    _check_request(key, version, request, theirs.encode(header=True, framed=True), cid)


@pytest.mark.parametrize("pair", NEW_REQUESTS, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_requests_encoded_by_kafka_python_json_classes_decode(pair, data, cid):
    key, version = pair
    new = new_class(key, True, version)
    request = data.draw(message_strategy(key, True, version))
    theirs = to_new(request, APIS[key].request.schema, new, version)
    theirs.with_header(correlation_id=cid, client_id="golden")
    _check_request(key, version, request, theirs.encode(header=True, framed=True), cid)


def _encode_with_sluice(key, version, response, cid) -> bytes:
    header = RequestHeader(api_key=key, api_version=version, correlation_id=cid)
    return joined(encode_response(header, response))


def _response(data, key, version):
    response = data.draw(message_strategy(key, False, version))
    if key == 18:  # kafka-python reads any ApiVersions error as a v0 body (test_kafka_codec)
        response = type(response)(**{**_fields(response), "error_code": 0})
    return response


def _fields(message):
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


@pytest.mark.parametrize("pair", OLD_RESPONSES, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_responses_decode_with_kafka_python_old_classes(pair, data, cid):
    key, version = pair
    old = old_class(key, False, version)
    response = _response(data, key, version)
    theirs = old.decode(_encode_with_sluice(key, version, response, cid), header=True,
                        framed=True)
    assert theirs.header.correlation_id == cid
    schema = APIS[key].response.schema
    assert from_old(theirs, schema, old.SCHEMA, version) == plain(response, schema, version)


@pytest.mark.parametrize("pair", NEW_RESPONSES, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_responses_decode_with_kafka_python_json_classes(pair, data, cid):
    key, version = pair
    new = new_class(key, False, version)
    response = _response(data, key, version)
    theirs = new.decode(_encode_with_sluice(key, version, response, cid), header=True,
                        framed=True)
    assert theirs.header.correlation_id == cid
    schema = APIS[key].response.schema
    assert from_new(theirs, schema, version) == plain(response, schema, version)
