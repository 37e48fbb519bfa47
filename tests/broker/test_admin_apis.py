"""alter_topics (add partitions, set configs) and delete_groups over the wire, and that both
last across a restart."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import trio
from sluice.broker.server import serve
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    GroupIdNotFoundError,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRequestError,
    UnknownTopicOrPartitionError,
)

from tests.broker.conftest import RawClient, create_topic, make_batch, produce, read_values
from tests.broker.test_groups import Member, settle


async def alter(client: RawClient, name: str, partitions=None, configs=None) -> m.TopicResult:
    response = await client.request(m.AlterTopicsRequest(
        topics=[m.TopicAlteration(name=name, partitions=partitions, configs=configs or {})]))
    return response.topics[0]


async def describe(client: RawClient, name: str) -> m.TopicDescription:
    return (await client.request(m.DescribeTopicsRequest(topics=[name]))).topics[0]


async def delete_group(client: RawClient, group: str) -> m.GroupResult:
    return (await client.request(m.DeleteGroupsRequest(groups=[group]))).groups[0]


async def commit(client: RawClient, group: str, topic: str, offset: int) -> None:
    response = await client.request(m.CommitOffsetsRequest(
        group_id=group, member_id="", member_epoch=-1,
        offsets=[m.OffsetCommit(topic=topic, partition=0, offset=offset)]))
    assert response.partitions[0].error == 0, response


@asynccontextmanager
async def running(broker_config):
    """A broker on ``broker_config`` and a client of it; shut down cleanly at the end."""
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        client = await RawClient.connect(handle.port)
        try:
            yield client
        finally:
            await client.aclose()
            handle.shutdown()


async def test_added_partitions_take_records_and_configs_apply_at_once(client):
    await create_topic(client, "t", 2)
    assert (await alter(client, "t", 4, {"retention_ms": 3_600_000})).error == 0
    described = await describe(client, "t")
    assert [p.partition for p in described.partitions] == [0, 1, 2, 3]
    assert described.configs["retention_ms"] == 3_600_000
    assert described.configs["partitions"] == 4
    assert (await produce(client, "t", make_batch([b"new"]), partition=3)).partitions[0].error == 0
    assert await read_values(client, "t", 3) == [b"new"]
    # A config alone; the partition count stays.
    assert (await alter(client, "t", configs={"max_message_bytes": 1024})).error == 0
    produced = await produce(client, "t", make_batch([b"x" * 2000]), partition=0)
    assert produced.partitions[0].error != 0  # the new max_message_bytes holds already
    assert len((await describe(client, "t")).partitions) == 4


async def test_bad_alterations_are_refused_with_named_errors(client):
    await create_topic(client, "t", 3)
    cases = [
        (("t", 2), {}, InvalidPartitionsError, "can be added, not removed"),
        (("t",), {"retention": 1}, InvalidConfigError, "unknown config key(s) retention"),
        (("t",), {"segment_bytes": 0}, InvalidConfigError, "segment_bytes must be"),
        (("t",), {"partitions": 1}, InvalidConfigError, "partitions is not a config"),
        (("nope", 4), {}, UnknownTopicOrPartitionError, "unknown topic 'nope'"),
        (("__consumer_offsets", 2), {}, InvalidRequestError, "cannot be altered"),
    ]
    for args, configs, error, text in cases:
        result = await alter(client, *args, configs=configs)
        assert (result.error, text in result.message) == (error.code, True), result
    described = await describe(client, "t")
    assert len(described.partitions) == 3 and described.configs["segment_bytes"] > 0


async def test_alterations_last_across_a_restart(broker_config):
    async with running(broker_config) as client:
        await create_topic(client, "t", 1, retention_ms=60_000)
        assert (await alter(client, "t", 3, {"segment_bytes": 1 << 20})).error == 0
        await produce(client, "t", make_batch([b"two"]), partition=2)
    async with running(broker_config) as client:
        described = await describe(client, "t")
        assert len(described.partitions) == 3
        assert (described.configs["retention_ms"], described.configs["segment_bytes"]) == (
            60_000, 1 << 20)
        assert await read_values(client, "t", 2) == [b"two"]


async def test_group_with_members_is_not_deleted(client):
    await create_topic(client, "t")
    member = Member(client, "busy", ["t"])
    await settle([member], 2)
    result = await delete_group(client, "busy")
    assert result.error == GroupNotEmptyError.code and "1 member(s)" in result.message
    assert (await delete_group(client, "never")).error == GroupIdNotFoundError.code
    await member.heartbeat(leave=True)
    assert (await delete_group(client, "busy")).error == 0
    listed = await client.request(m.ListGroupsRequest())
    assert [g.group_id for g in listed.groups] == []


async def test_a_deleted_group_stays_deleted_across_a_restart(broker_config):
    async with running(broker_config) as client:
        await create_topic(client, "t")
        await commit(client, "gone", "t", 5)
        await commit(client, "kept", "t", 7)
        assert (await delete_group(client, "gone")).error == 0
        fetched = await client.request(m.FetchOffsetsRequest(group_id="gone"))
        assert fetched.partitions == []
    async with running(broker_config) as client:
        listed = await client.request(m.ListGroupsRequest())
        assert [g.group_id for g in listed.groups] == ["kept"]
