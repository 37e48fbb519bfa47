"""Messages: validation on construction, round trips of every API, golden frames, and the
errors a malformed request header produces."""

import copy
import pickle
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sluice.protocol import messages as m
from sluice.protocol.batch import build_batch, stamp, validate_batch
from sluice.protocol.errors import (
    ApiError,
    InvalidRequestError,
    LocalProtocolError,
    RemoteProtocolError,
    StorageError,
    UnknownApiError,
    UnsupportedVersionError,
)
from sluice.protocol.framing import Frame, FrameDecoder
from sluice.protocol.slices import FileSlice


def to_frame(pieces) -> Frame:
    """Receive the bytes of ``pieces`` (bytes-likes only) as one frame."""
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(bytes(p) for p in pieces))
    return decoder.next_frame()


def raw_frame(header: object, body: bytes = b"", packed: bytes | None = None) -> Frame:
    if packed is None:
        packed = msgpack.packb(header, use_bin_type=True)
    return to_frame([struct.pack(">II", 4 + len(packed) + len(body), len(packed)), packed, body])


# -- strategies derived from each class's schema ---------------------------------------------


def strategy_for(kind) -> st.SearchStrategy:
    if isinstance(kind, m._Int):
        return st.integers(kind.lo, kind.hi)
    if isinstance(kind, m._OneOf):
        return st.sampled_from(sorted(kind.values))
    if isinstance(kind, m._Str):
        return st.text(max_size=8)
    if isinstance(kind, m._TopicId):
        return st.just("") | st.uuids(version=4).map(lambda u: u.hex)
    if isinstance(kind, m._Optional):
        return st.none() | strategy_for(kind.inner)
    if isinstance(kind, m._List):
        return st.lists(strategy_for(kind.item), max_size=3)
    if isinstance(kind, m._Tuple):
        return st.tuples(*(strategy_for(k) for k in kind.items))
    if isinstance(kind, m._Map):
        return st.dictionaries(strategy_for(kind.key), strategy_for(kind.value), max_size=3)
    if isinstance(kind, m._Nested):
        return message_strategy(kind.cls)
    if isinstance(kind, m._Records):
        return st.binary(max_size=20)
    raise AssertionError(kind)


def message_strategy(cls) -> st.SearchStrategy:
    return st.builds(cls, **{f.name: strategy_for(f.kind) for f in cls._FIELDS})


API_LIST = sorted(m.APIS.values(), key=lambda api: api.key)


@pytest.mark.parametrize("api", API_LIST, ids=lambda api: api.name)
@settings(max_examples=25)
@given(data=st.data(), cid=st.integers(0, m.CID_MAX))
def test_request_round_trip(api, data, cid):
    request = data.draw(message_strategy(api.request))
    assert m.decode_request(to_frame(m.encode_request(cid, request))) == (cid, request)


@pytest.mark.parametrize("api", API_LIST, ids=lambda api: api.name)
@settings(max_examples=25)
@given(data=st.data(), cid=st.integers(-1, m.CID_MAX))
def test_response_round_trip(api, data, cid):
    response = data.draw(message_strategy(api.response))
    assert m.decode_response(to_frame(m.encode_response(cid, response)), api.key) == (
        cid,
        response,
    )


def test_every_api_is_versioned():
    assert sorted(m.API_VERSIONS) == list(range(16))
    assert all(v == (0, 0) for v in m.API_VERSIONS.values())


# -- golden frames ----------------------------------------------------------------------------

PRODUCE = m.ProduceRequest(
    acks=-1,
    timeout_ms=1000,
    partitions=[m.ProducePartition(topic="t", partition=2, records=b"\x01\x02\x03")],
)
FETCH = m.FetchResponse(
    partitions=[
        m.FetchPartitionData(
            topic="t", partition=0, high_watermark=9, log_start_offset=0, records=b"ab"
        )
    ]
)


# A produce request as a client from before topic ids sends it: no topic_id key.
PRODUCE_WITHOUT_TOPIC_ID = (
    "000000510000004a"  # frame_length 81, header_length 74
    "86a361706905a17600a363696407"  # {api: 5, v: 0, cid: 7,
    "a461636b73ffaa74696d656f75745f6d73cd03e8"  # acks: -1, timeout_ms: 1000,
    "aa706172746974696f6e7391"  # partitions: [
    "83a5746f706963a174a9706172746974696f6e02a66c656e67746803"  # {t, 2, length: 3}]}
    "010203"  # body
)
TOPIC_ID = "0123456789abcdef0123456789abcdef"


def test_golden_produce_request():
    pieces = m.encode_request(7, PRODUCE)
    assert b"".join(pieces).hex() == (
        "0000005b00000054"  # frame_length 91, header_length 84
        "86a361706905a17600a363696407"  # {api: 5, v: 0, cid: 7,
        "a461636b73ffaa74696d656f75745f6d73cd03e8"  # acks: -1, timeout_ms: 1000,
        "aa706172746974696f6e7391"  # partitions: [
        "84a5746f706963a174a9706172746974696f6e02a66c656e67746803"  # {t, 2, length: 3,
        "a8746f7069635f6964a0"  # topic_id: ""}]}
        "010203"  # body
    )
    assert pieces[1] is PRODUCE.partitions[0].records  # the body is not copied


def test_golden_produce_request_naming_a_topic_incarnation():
    request = m.ProduceRequest(acks=-1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=2, records=b"\x01\x02\x03", topic_id=TOPIC_ID)])
    assert b"".join(m.encode_request(7, request)).hex() == (
        "0000007c00000075"  # frame_length 124, header_length 117
        "86a361706905a17600a363696407"
        "a461636b73ffaa74696d656f75745f6d73cd03e8"
        "aa706172746974696f6e7391"
        "84a5746f706963a174a9706172746974696f6e02a66c656e67746803"
        "a8746f7069635f6964d920" + TOPIC_ID.encode().hex()  # topic_id: str8 of 32 chars
        + "010203"
    )


def test_requests_without_topic_ids_still_decode():
    """Backward compatible: a frame from a client that never heard of topic ids decodes with
    ``topic_id=""`` (any incarnation), and an older peer ignores the new key (unknown keys are
    ignored: ``test_unknown_header_keys_are_ignored``)."""
    frame = to_frame([bytes.fromhex(PRODUCE_WITHOUT_TOPIC_ID)])
    cid, request = m.decode_request(frame)
    assert (cid, request.partitions[0].topic_id) == (7, "")
    assert bytes(request.partitions[0].records) == b"\x01\x02\x03"
    assert request == PRODUCE


def test_golden_metadata_response_carries_the_topic_id():
    response = m.MetadataResponse(brokers=[], controller_id=0, topics=[m.TopicMetadata(
        name="t", topic_id=TOPIC_ID, partitions=[m.PartitionMetadata(partition=0, leader=0)])])
    assert b"".join(m.encode_response(3, response)).hex() == (
        "000000b2000000ae"  # frame_length 178, header_length 174
        "87a363696403a361706901a56572726f7200a76d657373616765a0"  # {cid, api: 1, error, message,
        "a762726f6b65727390ad636f6e74726f6c6c65725f696400"  # brokers: [], controller_id: 0,
        "a6746f706963739185a46e616d65a174a56572726f7200a76d657373616765a0"  # topics: [{t, ...
        "aa706172746974696f6e739184a9706172746974696f6e00a66c656164657200"  # partitions: [...],
        "a56572726f7200a76d657373616765a0"
        "a8746f7069635f6964d920" + TOPIC_ID.encode().hex()  # topic_id}]}
    )
    header_without_id = {"cid": 3, "api": 1, "topics": [{"name": "t", "partitions": []}]}
    _, old = m.decode_response(raw_frame(header_without_id), 1)
    assert old.topics[0].topic_id == ""  # an older broker's answer: id unknown


@pytest.mark.parametrize("value", ["x", "0123456789ABCDEF0123456789ABCDEF", TOPIC_ID + "0", 7, None])
def test_topic_ids_are_checked(value):
    with pytest.raises(InvalidRequestError, match="topic_id must be a topic id"):
        m.FetchPartition(topic="t", partition=0, offset=0, max_bytes=1, topic_id=value)
    header = {"api": 6, "v": 0, "cid": 1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 0,
              "partitions": [{"topic": "t", "partition": 0, "offset": 0, "max_bytes": 1,
                              "topic_id": value}]}
    with pytest.raises(InvalidRequestError, match=r"partitions\[0\]\.topic_id must be"):
        m.decode_request(raw_frame(header))


def test_golden_fetch_response():
    assert b"".join(m.encode_response(7, FETCH)).hex() == (
        "0000007b00000075"  # frame_length 123, header_length 117
        "85a363696407a361706906a56572726f7200a76d657373616765a0"  # {cid, api, error, message,
        "aa706172746974696f6e7391"  # partitions: [
        "87a5746f706963a174a9706172746974696f6e00a56572726f7200a76d657373616765a0"
        "ae686967685f77617465726d61726b09b06c6f675f73746172745f6f666673657400"
        "a66c656e67746802"  # high_watermark: 9, log_start_offset: 0, length: 2}]}
        "6162"  # body
    )


# -- bodies -----------------------------------------------------------------------------------


def test_produce_records_are_writable_slices_of_the_body():
    batch = build_batch([(b"k", b"v", [], 1000)])
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=0,
        partitions=[
            m.ProducePartition(topic="a", partition=0, records=[batch, batch]),
            m.ProducePartition(topic="b", partition=1, records=b""),
            m.ProducePartition(topic="c", partition=0, records=memoryview(batch)),
        ],
    )
    frame = to_frame(m.encode_request(1, request))
    _, decoded = m.decode_request(frame)
    records = [p.records for p in decoded.partitions]
    assert [bytes(r) for r in records] == [bytes(batch) * 2, b"", bytes(batch)]
    assert records[0].obj is frame.body.obj  # views of the frame, no copy
    stamp(records[2], 42)
    assert bytes(frame.body[-len(batch) : -len(batch) + 8]) == (42).to_bytes(8, "big")
    assert validate_batch(records[2]).base_offset == 42


def test_fetch_response_counts_file_slices(tmp_path):
    path = tmp_path / "segment"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        piece = FileSlice(f, 2, 5)
        response = m.FetchResponse(
            partitions=[
                m.FetchPartitionData(topic="t", partition=0, records=[b"ab", piece]),
                m.FetchPartitionData(topic="t", partition=1, records=[]),
            ]
        )
        pieces = m.encode_response(3, response)
        assert pieces[1:] == [b"ab", piece]
        frame_length, header_length = struct.unpack_from(">II", pieces[0])
        assert frame_length == 4 + header_length + 7
        sent = [pieces[0], b"ab", path.read_bytes()[2:7]]  # what sendfile would put on the wire
    _, decoded = m.decode_response(to_frame(sent), 6)
    assert [bytes(p.records) for p in decoded.partitions] == [b"ab23456", b""]


@pytest.mark.parametrize("lengths", [[3, 3], [1, 1], [7]])
def test_body_lengths_must_add_up(lengths):
    header = {
        "api": 5,
        "v": 0,
        "cid": 4,
        "acks": 1,
        "timeout_ms": 0,
        "partitions": [{"topic": "t", "partition": 0, "length": n} for n in lengths],
    }
    with pytest.raises(InvalidRequestError) as info:
        m.decode_request(raw_frame(header, b"abcde"))
    assert info.value.correlation_id == 4 and info.value.api == 5


def test_body_on_an_api_without_one():
    with pytest.raises(InvalidRequestError, match="body holds 3 bytes"):
        m.decode_request(raw_frame({"api": 12, "v": 0, "cid": 1}, b"abc"))


# -- validation on construction ---------------------------------------------------------------

P = {"topic": "t", "partition": 0, "records": b""}


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (m.ProducePartition, {**P, "partition": True}, "partition"),
        (m.ProducePartition, {**P, "partition": -1}, "partition"),
        (m.ProducePartition, {**P, "partition": 2**31}, "partition"),
        (m.ProducePartition, {**P, "partition": 1.0}, "partition"),
        (m.ProducePartition, {**P, "topic": b"t"}, "topic"),
        (m.ProducePartition, {**P, "records": "text"}, "records"),
        (m.ProducePartition, {**P, "records": [b"ok", "text"]}, "records"),
        (m.ProduceRequest, {"acks": 2, "timeout_ms": 0, "partitions": []}, "acks"),
        (m.ProduceRequest, {"acks": True, "timeout_ms": 0, "partitions": []}, "acks"),
        (m.ProduceRequest, {"acks": 1, "timeout_ms": 0, "partitions": [P]}, "partitions"),
        (m.MetadataRequest, {"topics": "t"}, "topics"),
        (m.MetadataRequest, {"topics": ["t", 1]}, "topics"),
        (m.TopicSpec, {"name": "t", "partitions": 1, "configs": {"a": "1"}}, "configs"),
        (
            m.FetchPartition,
            {"topic": "t", "partition": 0, "offset": 2**63, "max_bytes": 1},
            "offset",
        ),
        (m.InitProducerIdRequest, {"producer_epoch": -2}, "producer_epoch"),
        (m.ListOffsetsPartition, {"topic": "t", "partition": 0, "timestamp": -3}, "timestamp"),
        (m.HandshakeResponse, {"apis": {0: (0,)}}, "apis"),
        (m.ProduceResponse, {"error": "1"}, "error"),
    ],
)
def test_construction_checks_types_and_names_the_field(cls, kwargs, field):
    with pytest.raises(InvalidRequestError) as info:
        cls(**kwargs)
    assert info.value.path == field
    assert str(info.value).startswith(field + " must be")


def test_messages_are_frozen_slotted_keyword_only():
    request = m.MetadataRequest(topics=["a"])
    with pytest.raises(AttributeError):
        request.topics = None
    assert not hasattr(request, "__dict__")
    with pytest.raises(TypeError):
        m.MetadataRequest(["a"])


def test_messages_compare_hash_print_and_copy_by_their_fields():
    a, b = m.TopicPartition(topic="t", partition=1), m.TopicPartition(topic="t", partition=1)
    assert a == b and hash(a) == hash(b) and a != m.TopicPartition(topic="t", partition=2)
    assert m.TopicResult(name="t") != m.GroupResult(group_id="t")  # another class
    assert repr(m.HandshakeResponse(broker_id=3)) == (
        "HandshakeResponse(error=0, message='', broker_id=3, apis={})")
    assert pickle.loads(pickle.dumps(PRODUCE)) == PRODUCE
    assert copy.deepcopy(FETCH) == FETCH
    # Inherited fields come first; defaults from a factory are fresh for each message.
    assert [f.name for f in m.MetadataResponse._FIELDS][:2] == ["error", "message"]
    assert m.FetchResponse().partitions is not m.FetchResponse().partitions
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        m.TopicPartition(topic="t", partition=0, nope=1)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument"):
        m.TopicPartition(topic="t")


def test_tuples_are_accepted_for_lists():
    response = m.CreateTopicsResponse(topics=(m.TopicResult(name="a"),))
    _, decoded = m.decode_response(to_frame(m.encode_response(1, response)), 2)
    assert decoded.topics == [m.TopicResult(name="a")]


def test_encode_refuses_misuse():
    with pytest.raises(LocalProtocolError):
        m.encode_request(0, FETCH)
    with pytest.raises(LocalProtocolError):
        m.encode_response(0, PRODUCE)
    with pytest.raises(LocalProtocolError):
        m.encode_request(2**31, PRODUCE)
    with pytest.raises(LocalProtocolError):
        m.encode_request(-1, PRODUCE)
    with pytest.raises(LocalProtocolError):
        m.encode_request(0, object())


# -- malformed request headers ----------------------------------------------------------------

GOOD = {"api": 3, "v": 0, "cid": 9, "topics": ["t"]}


@pytest.mark.parametrize(
    ("frame", "error", "cid", "api", "match"),
    [
        (raw_frame(None, packed=b"\xc1"), InvalidRequestError, -1, -1, "not valid msgpack"),
        (raw_frame(None, packed=b""), InvalidRequestError, -1, -1, "not valid msgpack"),
        (raw_frame(None, packed=b"\x80\x80"), InvalidRequestError, -1, -1, "not valid msgpack"),
        (raw_frame(None, packed=b"\x81\xa1a\xa2\xff\xfe"), InvalidRequestError, -1, -1, "msgpack"),
        (raw_frame({1: 2}), InvalidRequestError, -1, -1, "not valid msgpack"),
        (raw_frame([1, 2]), InvalidRequestError, -1, -1, "must be a map"),
        (raw_frame({**GOOD, "cid": None}), InvalidRequestError, -1, 3, "cid must be"),
        (raw_frame({**GOOD, "cid": -5}), InvalidRequestError, -1, 3, "cid must be"),
        (raw_frame({**GOOD, "cid": True}), InvalidRequestError, -1, 3, "cid must be"),
        (raw_frame({**GOOD, "api": "3"}), InvalidRequestError, 9, -1, "api must be"),
        (raw_frame({**GOOD, "api": 99}), UnknownApiError, 9, 99, "unknown api key 99"),
        (raw_frame({**GOOD, "v": 1}), UnsupportedVersionError, 9, 3, "v1 is not supported"),
        (raw_frame({**GOOD, "v": "0"}), InvalidRequestError, 9, 3, "v must be"),
        (raw_frame({"api": 3, "v": 0, "cid": 9}), InvalidRequestError, 9, 3, "topics is missing"),
        (raw_frame({**GOOD, "topics": "t"}), InvalidRequestError, 9, 3, "topics must be a list"),
        (raw_frame({**GOOD, "topics": [b"t"]}), InvalidRequestError, 9, 3, "topics must be"),
        (
            raw_frame(
                {**GOOD, "api": 5, "acks": 1, "timeout_ms": 0, "partitions": [{"topic": "t"}]}
            ),
            InvalidRequestError,
            9,
            5,
            r"partitions\[0\]\.partition is missing",
        ),
        (
            raw_frame({**GOOD, "api": 5, "acks": 1, "timeout_ms": 0, "partitions": [1]}),
            InvalidRequestError,
            9,
            5,
            r"partitions\[0\] must be a map",
        ),
        (
            raw_frame(
                {
                    **GOOD,
                    "api": 5,
                    "acks": 1,
                    "timeout_ms": 0,
                    "partitions": [{"topic": "t", "partition": 0, "length": -1}],
                }
            ),
            InvalidRequestError,
            9,
            5,
            r"partitions\[0\]\.length must be",
        ),
    ],
)
def test_malformed_request_header(frame, error, cid, api, match):
    with pytest.raises(error, match=match) as info:
        m.decode_request(frame)
    assert type(info.value) is error or type(info.value) is m.InvalidFieldError
    assert (info.value.correlation_id, info.value.api) == (cid, api)


def test_unknown_header_keys_are_ignored():
    assert m.decode_request(raw_frame({**GOOD, "later": [1]})) == (
        9,
        m.DeleteTopicsRequest(topics=["t"]),
    )


# -- responses --------------------------------------------------------------------------------


def test_error_response_for_any_api():
    pieces = m.encode_error(5, 77, StorageError("disk full"))
    assert msgpack.unpackb(pieces[0][8:]) == {
        "cid": 5,
        "api": 77,
        "error": StorageError.code,
        "message": "disk full",
    }
    # For a known api the error-only response decodes to that api's class, fields defaulted.
    cid, response = m.decode_response(to_frame(m.encode_error(5, 6, StorageError())), 6)
    assert (cid, response) == (5, m.FetchResponse(error=15, message=StorageError().message))
    _, response = m.decode_response(to_frame(m.encode_error(5, -1, ValueError("boom"))), 1)
    assert (response.error, response.message) == (1, "boom")


@pytest.mark.parametrize(
    "frame",
    [
        raw_frame(None, packed=b"\xc1"),
        raw_frame([1]),
        raw_frame({"cid": 1, "api": 2, "error": 0, "message": ""}),  # api mismatch
        raw_frame({"cid": -2, "api": 1, "error": 0, "message": ""}),
        raw_frame({"cid": 1, "api": 1, "error": 0, "message": "", "brokers": [{"id": "x"}]}),
        raw_frame({"cid": 1, "api": 1, "error": 0, "message": ""}, b"extra body"),
    ],
)
def test_malformed_response_is_remote_protocol_error(frame):
    with pytest.raises(RemoteProtocolError):
        m.decode_response(frame, 1)


def test_api_errors_are_api_errors():
    assert issubclass(m.InvalidFieldError, InvalidRequestError)
    assert issubclass(InvalidRequestError, ApiError)
    assert m.InvalidFieldError("x", "is bad").code == InvalidRequestError.code


@pytest.mark.parametrize(
    "fields",
    [
        {"api": 1, "topics": [f"t{i}" for i in range(m.MAX_REQUEST_ITEMS + 1)]},
        {  # nested: the budget is per request, not per list
            "api": 2, "topics": [{"name": f"t{i}", "partitions": 1, "configs": {"segment_ms": 1}}
                                 for i in range(m.MAX_REQUEST_ITEMS // 2 + 1)],
        },
    ],
)
def test_requests_over_the_item_budget_are_refused_before_decoding(fields):
    frame = raw_frame({"v": 0, "cid": 5, **fields})
    with pytest.raises(m.InvalidFieldError, match="more than 10000 items") as caught:
        m.decode_request(frame)
    assert caught.value.correlation_id == 5


def heartbeat_owning(topics: int, partitions: int, **fields) -> dict:
    return {"api": 9, "v": 0, "cid": 5, "group_id": "g", "member_id": "x", "member_epoch": 1,
            "session_timeout_ms": 10_000,
            "owned": [{"topic": f"t{i}", "partitions": list(range(partitions))}
                      for i in range(topics)], **fields}


def test_a_member_owning_every_partition_of_ten_maximal_topics_can_heartbeat():
    """Issue 13.11: a lone member of a 10,000-partition topic heartbeat with 10,001 items
    (the owned list's entry plus its partition numbers) and was refused."""
    _, request = m.decode_request(raw_frame(heartbeat_owning(10, m.MAX_PARTITIONS)))
    assert sum(len(tp.partitions) for tp in request.owned) == 10 * m.MAX_PARTITIONS
    response = m.GroupHeartbeatResponse(member_id="x", member_epoch=2, assignment=request.owned)
    assert m.encode_response(5, response)  # raises if its header were over max_header_bytes


def test_partition_numbers_have_their_own_budget_and_a_per_topic_maximum():
    with pytest.raises(m.InvalidFieldError, match="more than 100000 partition numbers"):
        m.decode_request(raw_frame(heartbeat_owning(11, m.MAX_PARTITIONS)))
    with pytest.raises(m.InvalidFieldError, match=r"owned\[0\]\.partitions must be a list of at "
                       "most 10000 partition numbers"):
        m.decode_request(raw_frame(heartbeat_owning(1, m.MAX_PARTITIONS + 1)))
    with pytest.raises(m.InvalidFieldError, match="at most 10000 partition numbers"):
        m.TopicPartitions(topic="t", partitions=list(range(m.MAX_PARTITIONS + 1)))


def test_a_request_at_the_item_budget_decodes():
    frame = raw_frame({"api": 1, "v": 0, "cid": 5,
                       "topics": [f"t{i}" for i in range(m.MAX_REQUEST_ITEMS)]})
    _, request = m.decode_request(frame)
    assert len(request.topics) == m.MAX_REQUEST_ITEMS
