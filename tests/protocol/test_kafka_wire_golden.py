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


def _handwritten_request(request, key, version, cls):
    theirs = cls(*to_old(request, APIS[key].request.schema, cls.SCHEMA, version))
    theirs.with_header(correlation_id=0, client_id="golden")
    theirs.header.api_version = version  # kafka-python 3.0.12's ListGroupsRequest_v2 says 1
    return theirs


def _json_request(request, key, version, cls):
    theirs = to_new(request, APIS[key].request.schema, cls, version)
    theirs.with_header(correlation_id=0, client_id="golden")
    return theirs


# name -> (its class for (key, is_request, version) or None, build a request of ours as
# theirs, read their decoded response as plain values of ours)
REFERENCES = {
    "handwritten": (old_class, _handwritten_request,
                    lambda theirs, key, v, cls: from_old(theirs, APIS[key].response.schema,
                                                         cls.SCHEMA, v)),
    "json": (new_class, _json_request,
             lambda theirs, key, v, cls: from_new(theirs, APIS[key].response.schema, v)),
}
# Each reference where it describes the pair (kafka-python's hand-written classes stop at the
# versions it needed; Kafka 4's JSON dropped the versions before record batch v2).
REQUESTS = [(name, p) for name, (find, _, _) in REFERENCES.items() for p in PAIRS
            if find(p[0], True, p[1]) is not None]
RESPONSES = [(name, p) for name, (find, _, _) in REFERENCES.items() for p in PAIRS
             if find(p[0], False, p[1]) is not None]
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _id(case):
    name, (key, v) = case
    return f"{name}-{APIS[key].name}-v{v}"


def test_every_pair_has_an_independent_reference():
    for cases in (REQUESTS, RESPONSES):
        covered = [p for _, p in cases]
        assert set(covered) == set(PAIRS)
        assert len(covered) - len(PAIRS) > len(PAIRS) // 2  # most pairs: by both


@pytest.mark.parametrize("case", REQUESTS, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_requests_encoded_by_kafka_python_decode(case, data, cid):
    name, (key, version) = case
    find, build, _ = REFERENCES[name]
    request = data.draw(message_strategy(key, True, version))
    theirs = build(request, key, version, find(key, True, version))
    theirs.header.correlation_id = cid
    event = _decode_with_sluice(bytes(theirs.encode(header=True, framed=True)))
    assert event.header == RequestHeader(api_key=key, api_version=version, correlation_id=cid,
                                         client_id="golden")
    schema = APIS[key].request.schema
    assert plain(event.request, schema, version) == plain(request, schema, version)


@pytest.mark.parametrize("case", RESPONSES, ids=_id)
@SETTINGS
@given(data=st.data(), cid=st.integers(0, 2**31 - 1))
def test_responses_encoded_by_sluice_decode_in_kafka_python(case, data, cid):
    name, (key, version) = case
    find, _, read = REFERENCES[name]
    cls = find(key, False, version)
    response = data.draw(message_strategy(key, False, version))
    if key == 18:  # kafka-python reads any ApiVersions error as a v0 body (test_kafka_hostile)
        response = type(response)(error_code=0, api_keys=response.api_keys,
                                  throttle_time_ms=response.throttle_time_ms)
    header = RequestHeader(api_key=key, api_version=version, correlation_id=cid)
    theirs = cls.decode(joined(encode_response(header, response)), header=True, framed=True)
    assert theirs.header.correlation_id == cid
    schema = APIS[key].response.schema
    assert read(theirs, key, version, cls) == plain(response, schema, version)


def _decode_with_sluice(raw: bytes) -> RequestReceived:
    conn = KafkaServerConnection()
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, RequestReceived)
    return event
