"""Topic incarnations on the broker: a topic deleted and created again under the same name is a
new topic with a new id, and nothing kept for the old one -- committed offsets, producer state,
recovery points, data -- ever applies to it, also across crashes."""

from __future__ import annotations

import json
from functools import partial

import msgpack
import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.domain.groups import OFFSETS_TOPIC, Committed, OffsetCommit
from sluice.broker.server import serve
from sluice.broker.storage.manager import LogManager
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    OutOfOrderSequenceError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce, read_values
from tests.processes import BrokerProcess


async def topic_id(client: RawClient, name: str) -> str:
    response = await client.request(m.MetadataRequest(topics=[name]))
    return response.topics[0].topic_id


async def delete_topic(client: RawClient, name: str) -> m.TopicResult:
    response = await client.request(m.DeleteTopicsRequest(topics=[name]))
    assert response.topics[0].error == 0, response
    return response.topics[0]


async def commit(client: RawClient, group: str, topic: str, offsets: dict[int, int],
                 topic_id: str = "") -> m.CommitOffsetsResponse:
    return await client.request(m.CommitOffsetsRequest(
        group_id=group, member_id="", member_epoch=-1,
        offsets=[m.OffsetCommit(topic=topic, partition=p, offset=o, topic_id=topic_id)
                 for p, o in offsets.items()]))


async def committed(client: RawClient, group: str) -> list[tuple[str, int, int]]:
    response = await client.request(m.FetchOffsetsRequest(group_id=group))
    return [(r.topic, r.partition, r.offset) for r in response.partitions]


# -- ids -----------------------------------------------------------------------------------------


async def test_every_incarnation_has_its_own_id_in_create_metadata_describe_delete(client):
    created = (await create_topic(client, "t", partitions=2)).topics[0].topic_id
    assert len(created) == 32 and int(created, 16) >= 0
    assert await topic_id(client, "t") == created
    described = await client.request(m.DescribeTopicsRequest(topics=["t"]))
    assert described.topics[0].topic_id == created
    assert (await delete_topic(client, "t")).topic_id == created
    assert await topic_id(client, "t") == ""  # no such topic
    again = (await create_topic(client, "t", partitions=2)).topics[0].topic_id
    assert again != created and await topic_id(client, "t") == again


async def test_topic_ids_survive_a_restart(broker_config):
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as client:
            created = (await create_topic(client, "t")).topics[0].topic_id
        handle.shutdown()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as client:
            assert await topic_id(client, "t") == created
        handle.shutdown()


def test_topics_from_before_topic_ids_are_given_one_once(tmp_path):
    manager = LogManager(tmp_path).open()
    manager.create_topic("old", 1)
    manager.close()
    topics = json.loads((tmp_path / "meta" / "topics.json").read_text())
    del topics["old"]["topic_id"]  # as a broker from before topic ids wrote it
    (tmp_path / "meta" / "topics.json").write_text(json.dumps(topics))
    first = LogManager(tmp_path).open()
    minted = first.topics()["old"].topic_id
    first.close()
    assert LogManager(tmp_path).open().topics()["old"].topic_id == minted


# -- requests naming an incarnation ------------------------------------------------------------


async def test_produce_fetch_and_commit_naming_a_deleted_incarnation_are_refused(client):
    old = (await create_topic(client, "t")).topics[0].topic_id
    await delete_topic(client, "t")
    new = (await create_topic(client, "t")).topics[0].topic_id
    stale = await client.request(m.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=make_batch([b"old"]), topic_id=old)]))
    assert stale.partitions[0].error == UnknownTopicIdError.code
    assert new in stale.partitions[0].message and "deleted" in stale.partitions[0].message
    fetched = await client.request(m.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1000, partitions=[
        m.FetchPartition(topic="t", partition=0, offset=0, max_bytes=1000, topic_id=old)]))
    assert fetched.partitions[0].error == UnknownTopicIdError.code
    refused = await commit(client, "g", "t", {0: 1}, topic_id=old)
    assert refused.partitions[0].error == UnknownTopicIdError.code
    # The current id, or none at all (clients from before topic ids), is served as before.
    current = await client.request(m.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=make_batch([b"new"]), topic_id=new)]))
    assert current.partitions[0].error == 0
    await produce(client, "t", make_batch([b"any"]))
    assert await read_values(client, "t") == [b"new", b"any"]
    assert (await commit(client, "g", "t", {0: 2}, topic_id=new)).partitions[0].error == 0
    assert await committed(client, "g") == [("t", 0, 2)]


async def test_a_long_poll_on_a_deleted_incarnation_does_not_read_its_successor(broker, client):
    old = (await create_topic(client, "t")).topics[0].topic_id
    other = await RawClient.connect(broker.port)
    async with trio.open_nursery() as nursery:
        answer = []

        async def poll():
            answer.append(await client.request(m.FetchRequest(
                max_wait_ms=10_000, min_bytes=1, max_bytes=1000, partitions=[
                    m.FetchPartition(topic="t", partition=0, offset=0, max_bytes=1000, topic_id=old)])))

        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        await delete_topic(other, "t")
        await create_topic(other, "t")
        await produce(other, "t", make_batch([b"new"]))
    assert answer[0].partitions[0].error in (UnknownTopicIdError.code, UnknownTopicOrPartitionError.code)
    assert not m.records_length(answer[0].partitions[0].records)
    await other.aclose()


# -- committed offsets (issue 13.2, 14.8) --------------------------------------------------------


async def test_group_offsets_do_not_survive_a_topic_delete(broker, client):
    await create_topic(client, "t", partitions=2)
    await create_topic(client, "u")
    assert (await commit(client, "g", "t", {0: 100, 1: 5})).partitions[0].error == 0
    assert (await commit(client, "g", "u", {0: 3})).partitions[0].error == 0
    assert (await commit(client, "only-t", "t", {0: 9})).partitions[0].error == 0
    await delete_topic(client, "t")
    described = await client.request(m.DescribeGroupsRequest(groups=["g"]))
    assert [(o.topic, o.partition, o.offset, o.log_end_offset) for o in described.groups[0].offsets] \
        == [("u", 0, 3, 0)]  # no "t" rows with log end -1
    listed = await client.request(m.ListGroupsRequest())
    assert [g.group_id for g in listed.groups] == ["g"]  # nothing left of "only-t"
    await create_topic(client, "t", partitions=2)
    assert await committed(client, "g") == [("u", 0, 3)]
    fetched = await client.request(m.FetchOffsetsRequest(
        group_id="g", partitions=[m.TopicPartition(topic="t", partition=0)]))
    assert fetched.partitions[0].offset == -1
    assert fetched.partitions[0].topic_id == await topic_id(client, "t")


async def test_dropped_offsets_stay_dropped_after_a_restart(broker_config):
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as client:
            await create_topic(client, "t")
            await commit(client, "g", "t", {0: 100})
            await delete_topic(client, "t")
            await create_topic(client, "t")
            await commit(client, "g2", "t", {0: 1})
        handle.shutdown()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as client:
            assert await committed(client, "g") == []
            assert await committed(client, "g2") == [("t", 0, 1)]
        handle.shutdown()


def reopen(config: BrokerConfig) -> Broker:
    """The broker's domain as a restart finds it (no server, no tasks)."""
    return Broker(config, LogManager(config.data_dir).open())


@pytest.mark.parametrize("recreate", [False, True])
def test_offsets_of_a_deleted_topic_never_come_back_even_if_their_removal_was_lost(
        broker_config, recreate):
    """A crash after the delete but before the nil records for its offsets reached the disk:
    simulated by deleting (and recreating) the topic behind the coordinator's back."""
    state = reopen(broker_config)
    state.topics.create("t", 1, {})
    state.topics.create("u", 1, {})
    for topic, offset in (("t", 100), ("u", 7)):
        state.groups.commit("g", "", -1, [OffsetCommit(topic, 0, offset)])
    state.store.delete_topic("t")
    if recreate:
        state.store.create_topic("t", 1)
    state.close()
    state = reopen(broker_config)
    assert sorted(state.groups.offsets.of("g")) == [("u", 0)]
    state.close()
    state = reopen(broker_config)  # ... and the drop was recorded: still gone
    assert sorted(state.groups.offsets.of("g")) == [("u", 0)]
    state.close()


def test_offsets_committed_before_topic_ids_are_adopted(broker_config):
    state = reopen(broker_config)
    state.topics.create("t", 1, {})
    current = state.topics.topic_id("t")
    legacy = msgpack.packb([5, "meta", 1234])  # [offset, metadata, commit time]: no topic id
    state.groups.offsets._append([(msgpack.packb(["g", "t", 0]), legacy, [], 1234),
                                  (msgpack.packb(["g", "gone", 0]), legacy, [], 1234)])
    state.close()
    state = reopen(broker_config)
    assert state.groups.offsets.of("g") == {("t", 0): Committed(5, "meta", current)}
    state.close()


# -- producer state (issue 13.3) -----------------------------------------------------------------


def snapshot_of(data_dir, key: str):
    raw = (data_dir / "meta" / "producer-state").read_bytes()
    return msgpack.unpackb(raw, raw=False, strict_map_key=False).get(key)


async def test_a_crash_right_after_a_recreate_does_not_apply_the_old_producer_state(tmp_path):
    """The old topic's producer state is checkpointed at offset 3 (producer Q only); the new
    topic gets 3 batches from producer P (end offset 3 again); SIGKILL before any checkpoint.
    Without topic ids the restart loaded the old snapshot as the new topic's and replayed
    nothing after it: P was unknown, its next batch refused, a retry of its first written twice."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    broker.start(["--config", str(write_settings(tmp_path, checkpoint_interval_s=3600.0))])
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "t")
            q = (await client.request(m.InitProducerIdRequest())).producer_id
            for seq in range(3):
                batch = make_batch([b"q%d" % seq], producer_id=q, producer_epoch=0, base_sequence=seq)
                assert (await produce(client, "t", batch, acks=-1)).partitions[0].error == 0
        assert broker.stop() == 0  # a clean stop checkpoints the producer state: [3, {Q}]
        assert snapshot_of(broker.data_dir, "t-0")[0] == 3
        broker.start(["--config", str(tmp_path / "broker.toml")])
        async with await RawClient.connect(broker.port) as client:
            await delete_topic(client, "t")
            await create_topic(client, "t")
            p = (await client.request(m.InitProducerIdRequest())).producer_id

            def batch(seq: int) -> bytes:
                return bytes(make_batch([b"p%d" % seq], producer_id=p, producer_epoch=0, base_sequence=seq))

            for seq in range(3):
                assert (await produce(client, "t", batch(seq), acks=-1)).partitions[0].error == 0
        broker.kill()
        broker.start(["--config", str(tmp_path / "broker.toml")])
        async with await RawClient.connect(broker.port) as client:
            retry = (await produce(client, "t", batch(0), acks=-1)).partitions[0]
            assert (retry.error, retry.base_offset) == (0, 0)  # known duplicate: not rewritten
            after = (await produce(client, "t", batch(3), acks=-1)).partitions[0]
            assert (after.error, after.message, after.base_offset) == (0, "", 3)
            gap = (await produce(client, "t", batch(9), acks=-1)).partitions[0]
            assert gap.error == OutOfOrderSequenceError.code
            assert await read_values(client, "t") == [b"p0", b"p1", b"p2", b"p3"]
    finally:
        broker.kill()


def write_settings(tmp_path, **settings):
    path = tmp_path / "broker.toml"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    return path


def test_a_snapshot_from_before_topic_ids_is_not_trusted(broker_config):
    """A snapshot entry without a topic id may be of any incarnation: the log is replayed."""
    state = reopen(broker_config)
    state.topics.create("t", 1, {})
    state.close()
    path = broker_config.data_dir / "meta" / "producer-state"
    snapshots = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    snapshots["t-0"] = [0, {77: [0, [[0, 0, 0, 0]]]}]  # a producer this log never saw
    path.write_bytes(msgpack.packb(snapshots, use_bin_type=True))
    state = reopen(broker_config)
    assert len(state.topics.partition("t", 0).producers) == 0
    state.close()


# -- data directories ------------------------------------------------------------------------------


def test_a_recreated_topic_never_opens_a_directory_its_predecessor_left(tmp_path):
    manager = LogManager(tmp_path).open()
    manager.create_topic("t", 1)
    manager.delete_topic("t")
    # A delete that could not remove the directory (say EBUSY) leaves the old files behind.
    (tmp_path / "t-0").mkdir()
    (tmp_path / "t-0" / "00000000000000000000.log").write_bytes(bytes(make_batch([b"old"])))
    manager.create_topic("t", 1)
    assert manager.get_log("t", 0).log_end_offset == 0
    manager.close()


async def test_fetch_and_produce_without_an_id_keep_working_across_a_recreate(client):
    """Clients from before topic ids: served by name, as before."""
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"a"]))
    await delete_topic(client, "t")
    assert (await fetch(client, "t", 0)).partitions[0].error == UnknownTopicOrPartitionError.code
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"b"]))
    assert await read_values(client, "t") == [b"b"]


def test_the_offsets_topic_has_an_id(broker_config):
    state = reopen(broker_config)
    assert state.topics.topic_id(OFFSETS_TOPIC)
    state.close()
