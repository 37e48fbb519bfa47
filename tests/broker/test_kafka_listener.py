"""The Kafka listener on the wire (a raw Kafka-protocol client, an in-process broker): every API
it serves, the errors Kafka gives, what it closes on, records crossing between the protocols,
and Fetch answered with sendfile."""

from __future__ import annotations

import struct
from functools import partial

import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.protocol import compression
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, iter_batches, parse_header
from sluice.protocol.kafka import ErrorCode
from sluice.protocol.kafka import messages as k
from sluice.protocol.kafka.consumer_protocol import read_assignment, write_assignment

from tests.broker.conftest import RawClient, create_topic, make_batch, produce, read_values
from tests.broker.kafka_client import (
    KafkaRawClient,
    create_kafka_topic,
    fetch_request,
    kafka_batch,
    produce_request,
)

E = ErrorCode


@pytest.fixture
async def kafka(broker):
    async with await KafkaRawClient.connect(broker.kafka_port) as client:
        yield client


def partition_result(response):
    return response.responses[0].partition_responses[0]


def fetched(response):
    return response.responses[0].partitions[0]


def records_of(part) -> list[tuple[int, bytes | None, bytes | None, list]]:
    return [(r.offset, r.key, r.value, list(r.headers)) for b in iter_batches(part.records)
            for r in decode_records(b)]


# -- handshake, metadata, topics ------------------------------------------------------------


async def test_api_versions_and_an_unknown_version_answered_at_v0(kafka):
    response = await kafka.request(k.ApiVersionsRequest(client_software_name="t",
                                                        client_software_version="1"))
    ranges = {a.api_key: (a.min_version, a.max_version) for a in response.api_keys}
    assert response.error_code == 0 and ranges[0] == (0, 8) and ranges[1] == (0, 11)
    assert set(ranges) == {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 32}
    # A client opening with a newer ApiVersions than this broker knows is told which it does.
    kafka.conn._awaiting.clear()
    raw = struct.pack(">hhih", 18, 9, 77, 1) + b"x" + b"\x00" * 3
    await kafka.send_raw(struct.pack(">i", len(raw)) + raw)
    frame = await kafka.stream.receive_some(1 << 16)
    size, cid, error = struct.unpack_from(">iih", frame)
    assert (cid, error) == (77, E.UNSUPPORTED_VERSION) and size == len(frame) - 4


async def test_metadata_names_this_broker_the_leader_of_everything(broker, kafka):
    await create_kafka_topic(kafka, "t", 3)
    response = await kafka.request(k.MetadataRequest(topics=None))
    assert [(b.node_id, b.host, b.port) for b in response.brokers] == [
        (0, "127.0.0.1", broker.kafka_port)]
    assert response.controller_id == 0
    assert [t.name for t in response.topics] == ["t"]  # internal topics are not listed
    parts = response.topics[0].partitions
    assert [(p.partition_index, p.leader_id, p.leader_epoch, p.replica_nodes, p.isr_nodes)
            for p in parts] == [(i, 0, -1, [0], [0]) for i in range(3)]
    R = k.MetadataRequest
    missing = await kafka.request(R(topics=[R.MetadataRequestTopic(name="nope")]))
    assert missing.topics[0].error_code == E.UNKNOWN_TOPIC_OR_PARTITION


async def test_create_topics_with_kafka_settings_validate_only_and_refusals(broker, kafka):
    R = k.CreateTopicsRequest

    def topic(name, partitions=2, replication=1, **configs):
        return R.CreatableTopic(name=name, num_partitions=partitions,
                                replication_factor=replication,
                                configs=[R.CreatableTopicConfig(name=n.replace("_", "."),
                                                                value=v)
                                         for n, v in configs.items()])

    response = await kafka.request(R(topics=[
        topic("a", retention_ms="3600000", cleanup_policy="delete"),
        topic("b", replication=3),
        topic("c", cleanup_policy="compact"),
        topic("d", flush_messages="1"),
        topic("e", partitions=0),
        topic("a"),
        topic("-bad name-"),
    ]))
    codes = [(t.name, t.error_code) for t in response.topics]
    assert codes == [("a", 0), ("b", E.INVALID_REPLICATION_FACTOR), ("c", E.INVALID_CONFIG),
                     ("d", E.INVALID_CONFIG), ("e", E.INVALID_PARTITIONS),
                     ("a", E.TOPIC_ALREADY_EXISTS), ("-bad name-", E.INVALID_TOPIC_EXCEPTION)]
    assert "cleanup.policy=delete only" in response.topics[2].error_message
    info = broker.broker.topics.topic("a")
    assert (info.config.partitions, info.config.retention_ms) == (2, 3_600_000)
    dry = await kafka.request(R(topics=[topic("f")], validate_only=True))
    assert dry.topics[0].error_code == 0 and broker.broker.topics.topic("f") is None
    # A replica assignment naming this broker alone gives the partition count.
    assigned = R.CreatableTopic(name="g", num_partitions=-1, replication_factor=-1, assignments=[
        R.CreatableReplicaAssignment(partition_index=i, broker_ids=[0]) for i in range(3)])
    assert (await kafka.request(R(topics=[assigned]))).topics[0].error_code == 0
    assert broker.broker.topics.topic("g").config.partitions == 3


async def test_delete_topics_and_describe_configs(broker, kafka):
    await create_kafka_topic(kafka, "t", 1, **{"retention.ms": "60000"})
    R = k.DescribeConfigsRequest
    response = await kafka.request(R(resources=[
        R.DescribeConfigsResource(resource_type=2, resource_name="t", configuration_keys=None),
        R.DescribeConfigsResource(resource_type=2, resource_name="nope",
                                  configuration_keys=None),
        R.DescribeConfigsResource(resource_type=4, resource_name="0",
                                  configuration_keys=["message.max.bytes"]),
    ]))
    topic, missing, brokers = response.results
    settings = {c.name: (c.value, c.config_source, c.read_only) for c in topic.configs}
    assert settings["retention.ms"] == ("60000", 1, False)  # set on the topic
    assert settings["segment.bytes"] == (str(1 << 30), 5, False)  # the default
    assert settings["cleanup.policy"] == ("delete", 5, True)
    assert missing.error_code == E.UNKNOWN_TOPIC_OR_PARTITION
    assert [(c.name, c.value) for c in brokers.configs] == [("message.max.bytes", str(8 << 20))]
    D = k.DeleteTopicsRequest
    deleted = await kafka.request(D(topic_names=["t", "t", "__consumer_offsets"], timeout_ms=1000))
    assert [r.error_code for r in deleted.responses] == [
        0, E.UNKNOWN_TOPIC_OR_PARTITION, E.INVALID_REQUEST]
    assert broker.broker.topics.topic("t") is None


# -- records --------------------------------------------------------------------------------


async def test_produce_then_fetch_returns_the_batches_as_produced(kafka):
    await create_kafka_topic(kafka, "t")
    batch = kafka_batch([b"a", b"b"], key=b"k", headers=(("h", b"v"),),
                        compression_codec=compression.ZSTD)
    sent = bytes(batch)
    result = partition_result(await kafka.request(produce_request("t", batch, acks=-1)))
    assert (result.error_code, result.base_offset, result.log_start_offset) == (0, 0, 0)
    part = fetched(await kafka.request(fetch_request("t", 0)))
    assert (part.error_code, part.high_watermark, part.last_stable_offset) == (0, 2, 2)
    assert part.aborted_transactions is None
    stored = bytes(part.records)
    assert stored[8:] == sent[8:]  # as produced: only the base offset (0 here) is stamped
    assert parse_header(stored).attributes & 7 == compression.ZSTD
    assert records_of(part) == [(0, b"k", b"a", [("h", b"v")]), (1, b"k", b"b", [("h", b"v")])]


async def test_list_offsets_earliest_latest_and_by_time(kafka):
    await create_kafka_topic(kafka, "t")
    for value in (b"x", b"y"):
        await kafka.request(produce_request("t", kafka_batch([value])))
    R = k.ListOffsetsRequest

    async def offset_for(timestamp):
        response = await kafka.request(R(topics=[R.ListOffsetsTopic(name="t", partitions=[
            R.ListOffsetsPartition(partition_index=0, timestamp=timestamp)])]))
        return response.topics[0].partitions[0]

    assert (await offset_for(-2)).offset == 0
    assert (await offset_for(-1)).offset == 2
    assert (await offset_for(0)).offset == 0
    assert (await offset_for(2**62)).offset == -1
    assert (await offset_for(-7)).error_code == E.INVALID_REQUEST


async def test_produce_errors_are_per_partition(kafka):
    await create_kafka_topic(kafka, "t")
    cases = [
        (produce_request("nope", kafka_batch([b"x"])), E.UNKNOWN_TOPIC_OR_PARTITION),
        (produce_request("t", kafka_batch([b"x"]), partition=5), E.UNKNOWN_TOPIC_OR_PARTITION),
        (produce_request("t", kafka_batch([b"x"]) + b"junk"), E.CORRUPT_MESSAGE),
        (produce_request("t", kafka_batch([b"x"]), acks=2), E.INVALID_REQUIRED_ACKS),
        (produce_request("t", kafka_batch([b"x"]), transactional_id="tx"),
         E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        (produce_request("t", kafka_batch([b"x"], producer_id=99, producer_epoch=0, base_sequence=3)),
         E.OUT_OF_ORDER_SEQUENCE_NUMBER),
    ]
    for request, code in cases:
        result = partition_result(await kafka.request(request))
        assert result.error_code == code, (request, result)
    corrupted = kafka_batch([b"x"])
    corrupted[-1] ^= 0xFF
    result = partition_result(await kafka.request(produce_request("t", corrupted)))
    assert result.error_code == E.CORRUPT_MESSAGE and "CRC" in result.error_message


async def test_an_idempotent_producer_is_checked_like_sluice_s(kafka):
    await create_kafka_topic(kafka, "t")
    init = await kafka.request(k.InitProducerIdRequest(transactional_id=None,
                                                       transaction_timeout_ms=60_000))
    assert init.error_code == 0 and init.producer_id >= 0 and init.producer_epoch == 0
    ids = dict(producer_id=init.producer_id, producer_epoch=0)
    first = partition_result(await kafka.request(
        produce_request("t", kafka_batch([b"a", b"b"], base_sequence=0, **ids), acks=-1)))
    retry = partition_result(await kafka.request(
        produce_request("t", kafka_batch([b"a", b"b"], base_sequence=0, **ids), acks=-1)))
    assert first.base_offset == retry.base_offset == 0 and retry.error_code == 0
    gap = partition_result(await kafka.request(
        produce_request("t", kafka_batch([b"c"], base_sequence=5, **ids))))
    assert gap.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER
    transactional = await kafka.request(k.InitProducerIdRequest(transactional_id="tx",
                                                                transaction_timeout_ms=1))
    assert transactional.error_code == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    part = fetched(await kafka.request(fetch_request("t", 0)))
    assert [v for _, _, v, _ in records_of(part)] == [b"a", b"b"]


async def test_fetch_errors_and_fetch_sessions_refused(kafka):
    await create_kafka_topic(kafka, "t")
    await kafka.request(produce_request("t", kafka_batch([b"x"])))
    part = fetched(await kafka.request(fetch_request("t", 7)))
    assert (part.error_code, part.high_watermark, part.log_start_offset) == (
        E.OFFSET_OUT_OF_RANGE, 1, 0)
    assert fetched(await kafka.request(fetch_request("nope", 0))).error_code == \
        E.UNKNOWN_TOPIC_OR_PARTITION
    incremental = await kafka.request(fetch_request("t", 0, session_id=12, session_epoch=3))
    assert incremental.error_code == E.FETCH_SESSION_ID_NOT_FOUND
    full = await kafka.request(fetch_request("t", 0, session_id=0, session_epoch=0))
    assert full.error_code == 0 and full.session_id == 0 and records_of(fetched(full))


async def test_a_long_poll_is_answered_by_the_next_append(broker, kafka):
    await create_kafka_topic(kafka, "t")
    async with await KafkaRawClient.connect(broker.kafka_port) as producer:
        with trio.fail_after(10):
            await kafka.send(fetch_request("t", 0, max_wait_ms=30_000))
            await producer.request(produce_request("t", kafka_batch([b"late"])))
            part = fetched(await kafka.receive())
    assert [v for _, _, v, _ in records_of(part)] == [b"late"]


async def test_fetch_bytes_go_out_with_sendfile(broker, kafka):
    """The Kafka fetch path is zero-copy: the stored batches leave through sendfile (the
    socket channel counts what it sent that way)."""
    await create_kafka_topic(kafka, "t")
    batch = kafka_batch([bytes([i]) * 1000 for i in range(200)])  # ~200 KiB: not copied
    assert len(batch) > 128 * 1024
    await kafka.request(produce_request("t", batch))
    sent = broker.channels["kafka"]
    before = sent.sendfile_bytes
    part = fetched(await kafka.request(fetch_request("t", 0, max_bytes=1 << 20)))
    assert len(part.records) == len(batch)
    assert sent.sendfile_bytes - before == len(batch)
    assert broker.channels["sluice"].sendfile_bytes == 0


async def test_acks_zero_gets_no_answer_and_a_failure_closes_the_connection(broker, kafka):
    await create_kafka_topic(kafka, "t")
    await kafka.send(produce_request("t", kafka_batch([b"quiet"]), acks=0))
    assert (await kafka.request(k.ApiVersionsRequest())).error_code == 0  # answered next
    await kafka.send(produce_request("nope", kafka_batch([b"lost"]), acks=0))
    with trio.fail_after(10):
        assert await kafka.read_until_closed() == b""
    async with RawClient(await trio.open_tcp_stream("127.0.0.1", broker.port)) as sluice:
        assert await read_values(sluice, "t") == [b"quiet"]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    struct.pack(">i", -5),  # a negative size
    struct.pack(">i", 2**30) + b"x" * 100,  # over max_frame_bytes: refused before buffering
    struct.pack(">ihhih", 10, 77, 0, 1, -1),  # an unknown API key
    struct.pack(">ihhih", 10, 0, 2, 1, -1),  # Produce v2: advertised, no schema (magic < 2)
    struct.pack(">ihhih", 12, 3, 8, 1, -1) + b"\xff\xff",  # Metadata cut short
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not Kafka at all
], ids=["negative-size", "oversized", "unknown-api", "old-version", "truncated", "http"])
async def test_garbage_closes_the_connection_without_a_word(broker, kafka, data):
    await kafka.send_raw(data)
    with trio.fail_after(10):
        assert await kafka.read_until_closed() == b""
    async with await KafkaRawClient.connect(broker.kafka_port) as other:  # the broker is fine
        assert (await other.request(k.ApiVersionsRequest())).error_code == 0
    assert broker.broker.requests.api("kafka", "ApiVersions").requests >= 1


async def test_the_broker_refuses_requests_while_stopping(broker, kafka):
    await create_kafka_topic(kafka, "t")
    broker.broker.begin_shutdown()
    result = partition_result(await kafka.request(produce_request("t", kafka_batch([b"x"]))))
    assert result.error_code == E.NOT_LEADER_OR_FOLLOWER
    joined = await kafka.request(join_request("g"))
    assert joined.error_code == E.COORDINATOR_NOT_AVAILABLE


# -- groups -----------------------------------------------------------------------------------


def join_request(group: str, member_id: str = "", metadata: bytes = b"meta") -> k.JoinGroupRequest:
    R = k.JoinGroupRequest
    return R(group_id=group, session_timeout_ms=10_000, rebalance_timeout_ms=10_000,
             member_id=member_id, protocol_type="consumer",
             protocols=[R.JoinGroupRequestProtocol(name="range", metadata=metadata)])


async def test_a_classic_group_round_commits_and_shows_in_both_protocols(broker, kafka):
    await create_kafka_topic(kafka, "t", 2)
    found = await kafka.request(k.FindCoordinatorRequest(key="g", key_type=0))
    assert (found.node_id, found.port) == (0, broker.kafka_port)
    joined = await kafka.request(join_request("g"))
    assert joined.error_code == 0 and joined.generation_id == 1
    assert joined.leader == joined.member_id and joined.members[0].metadata == b"meta"
    me, generation = joined.member_id, joined.generation_id
    mine = write_assignment({("t", 0), ("t", 1)})
    S = k.SyncGroupRequest
    synced = await kafka.request(S(group_id="g", generation_id=generation, member_id=me,
                                   assignments=[S.SyncGroupRequestAssignment(member_id=me,
                                                                             assignment=mine)]))
    assert synced.error_code == 0 and bytes(synced.assignment) == mine
    beat = await kafka.request(k.HeartbeatRequest(group_id="g", generation_id=generation,
                                                  member_id=me))
    assert beat.error_code == 0
    C = k.OffsetCommitRequest
    committed = await kafka.request(C(
        group_id="g", generation_id_or_member_epoch=generation, member_id=me,
        topics=[C.OffsetCommitRequestTopic(name="t", partitions=[
            C.OffsetCommitRequestPartition(partition_index=0, committed_offset=3,
                                           committed_metadata="m")])]))
    assert committed.topics[0].partitions[0].error_code == 0
    stale = await kafka.request(C(
        group_id="g", generation_id_or_member_epoch=generation + 5, member_id=me,
        topics=[C.OffsetCommitRequestTopic(name="t", partitions=[
            C.OffsetCommitRequestPartition(partition_index=0, committed_offset=9)])]))
    assert stale.topics[0].partitions[0].error_code == E.ILLEGAL_GENERATION
    F = k.OffsetFetchRequest
    offsets = await kafka.request(F(group_id="g", topics=[
        F.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 1])]))
    assert [(p.partition_index, p.committed_offset, p.metadata)
            for p in offsets.topics[0].partitions] == [(0, 3, "m"), (1, -1, "")]
    listed = await kafka.request(k.ListGroupsRequest())
    assert [(g.group_id, g.protocol_type) for g in listed.groups] == [("g", "consumer")]
    described = (await kafka.request(k.DescribeGroupsRequest(groups=["g", "none"]))).groups
    assert (described[0].group_state, described[0].protocol_data) == ("Stable", "range")
    assert read_assignment(described[0].members[0].member_assignment) == {("t", 0), ("t", 1)}
    assert described[1].group_state == "Dead"
    # Sluice's clients see the group too: its kind, its members and their lag.
    async with RawClient(await trio.open_tcp_stream("127.0.0.1", broker.port)) as sluice:
        groups = (await sluice.request(m.ListGroupsRequest())).groups
        assert [(g.group_id, g.kind, g.state, g.members) for g in groups] == [
            ("g", "classic", "stable", 1)]
        group = (await sluice.request(m.DescribeGroupsRequest(groups=["g"]))).groups[0]
        assert group.members[0].assignment[0].partitions == [0, 1]
        assert [(o.partition, o.offset) for o in group.offsets] == [(0, 3)]
    left = await kafka.request(k.LeaveGroupRequest(
        group_id="g", members=[k.LeaveGroupRequest.MemberIdentity(member_id=me),
                               k.LeaveGroupRequest.MemberIdentity(member_id="ghost")]))
    assert [r.error_code for r in left.members] == [0, E.UNKNOWN_MEMBER_ID]
    old = await kafka.request(k.HeartbeatRequest(group_id="g", generation_id=generation,
                                                 member_id=me), 0)
    assert old.error_code == E.UNKNOWN_MEMBER_ID


async def test_a_second_member_waits_for_the_round_and_the_first_is_told_to_rejoin(broker):
    async with await KafkaRawClient.connect(broker.kafka_port) as a, \
            await KafkaRawClient.connect(broker.kafka_port) as b:
        first = await a.request(join_request("g"))
        S = k.SyncGroupRequest
        await a.request(S(group_id="g", generation_id=1, member_id=first.member_id))
        with trio.fail_after(10):
            await b.send(join_request("g", metadata=b"b"))
            beat = await a.request(k.HeartbeatRequest(group_id="g", generation_id=1,
                                                      member_id=first.member_id))
            assert beat.error_code == E.REBALANCE_IN_PROGRESS
            again = await a.request(join_request("g", first.member_id))
            second = await b.receive()
        assert again.generation_id == second.generation_id == 2
        assert again.leader == first.member_id and len(again.members) == 2
        assert second.members == []
        with trio.fail_after(10):
            await b.send(S(group_id="g", generation_id=2, member_id=second.member_id))
            await a.request(S(group_id="g", generation_id=2, member_id=first.member_id,
                              assignments=[S.SyncGroupRequestAssignment(
                                  member_id=second.member_id, assignment=b"yours")]))
            assert bytes((await b.receive()).assignment) == b"yours"


async def test_kinds_do_not_mix_in_one_group_id(broker, kafka):
    await create_kafka_topic(kafka, "t")
    async with RawClient(await trio.open_tcp_stream("127.0.0.1", broker.port)) as sluice:
        beat = await sluice.request(m.GroupHeartbeatRequest(
            group_id="g", member_id="", member_epoch=0, topics=["t"], session_timeout_ms=10_000))
        owned = [m.TopicPartitions(topic="t", partitions=[0])]
        beat = await sluice.request(m.GroupHeartbeatRequest(
            group_id="g", member_id=beat.member_id, member_epoch=beat.member_epoch, owned=owned,
            session_timeout_ms=10_000))
        assert beat.error == 0
        refused = await kafka.request(join_request("g"))
        assert refused.error_code == E.INCONSISTENT_GROUP_PROTOCOL
        described = (await kafka.request(k.DescribeGroupsRequest(groups=["g"]))).groups[0]
        assert described.protocol_type == "consumer" and described.group_state == "Stable"
        assert read_assignment(described.members[0].member_assignment) == {("t", 0)}


async def test_records_cross_between_the_protocols(broker, kafka):
    async with RawClient(await trio.open_tcp_stream("127.0.0.1", broker.port)) as sluice:
        await create_topic(sluice, "t")
        await produce(sluice, "t", make_batch([b"from sluice"]))
        await kafka.request(produce_request("t", kafka_batch([b"from kafka"], key=b"k")))
        assert await read_values(sluice, "t") == [b"from sluice", b"from kafka"]
    part = fetched(await kafka.request(fetch_request("t", 0)))
    assert [v for _, _, v, _ in records_of(part)] == [b"from sluice", b"from kafka"]


async def test_kafka_listener_settings(tmp_path, nursery):
    """No Kafka listener with kafka = false; port 0 gives it any free port."""
    off = await nursery.start(partial(serve, BrokerConfig(port=0, kafka=False, in_memory=True)))
    assert off.kafka_port is None
    on = await nursery.start(partial(serve, BrokerConfig(port=0, in_memory=True)))
    assert on.kafka_port not in (None, 0, on.port)
    off.shutdown()
    on.shutdown()
