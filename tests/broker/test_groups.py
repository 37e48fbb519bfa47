"""Group coordination over the wire: assignment, revoke-before-reassign, offsets, lag."""

from __future__ import annotations

from functools import partial

import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    FencedMemberEpochError,
    InvalidRequestError,
    UnknownMemberIdError,
)
from sluice.protocol.messages import MAX_PARTITIONS

from tests.broker.conftest import RawClient, create_topic, make_batch, produce


class Member:
    """A group member driven by hand: heartbeats report exactly what it was last given."""

    def __init__(self, client: RawClient, group: str, topics: list[str]) -> None:
        self.client = client
        self.group = group
        self.topics = topics
        self.member_id = ""
        self.epoch = 0
        self.owned: set[tuple[str, int]] = set()

    async def heartbeat(self, *, leave: bool = False) -> m.GroupHeartbeatResponse:
        response = await self.client.request(
            m.GroupHeartbeatRequest(
                group_id=self.group,
                member_id=self.member_id,
                member_epoch=-1 if leave else self.epoch,
                session_timeout_ms=10_000,
                topics=self.topics,
                owned=[m.TopicPartitions(topic=t, partitions=sorted(p for tt, p in self.owned if tt == t))
                       for t in self.topics],
            )
        )
        if response.error == 0 and not leave:
            self.member_id, self.epoch = response.member_id, response.member_epoch
            self.owned = {(a.topic, p) for a in response.assignment or [] for p in a.partitions}
        return response


async def settle(members: list[Member], rounds: int = 6) -> None:
    for _ in range(rounds):
        for member in members:
            assert (await member.heartbeat()).error == 0


async def test_three_members_share_six_partitions_and_rebalance(broker):
    clients = [await RawClient.connect(broker.port) for _ in range(3)]
    await create_topic(clients[0], "t", partitions=6)
    members = [Member(c, "g", ["t"]) for c in clients]
    await settle(members)
    assert sorted(len(mm.owned) for mm in members) == [2, 2, 2]
    assert set().union(*(mm.owned for mm in members)) == {("t", p) for p in range(6)}
    # One leaves cleanly: its partitions move to the others, never owned twice meanwhile.
    await members[2].heartbeat(leave=True)
    for _ in range(6):
        for member in members[:2]:
            await member.heartbeat()
            assert not (members[0].owned & members[1].owned)
    assert sorted(len(mm.owned) for mm in members[:2]) == [3, 3]
    # It returns: balance is restored without double ownership.
    members[2] = Member(clients[2], "g", ["t"])
    for _ in range(6):
        for member in members:
            await member.heartbeat()
            owned = [mm.owned for mm in members]
            assert sum(len(o) for o in owned) == len(set().union(*owned))
    assert sorted(len(mm.owned) for mm in members) == [2, 2, 2]
    for c in clients:
        await c.aclose()


async def test_commit_fetch_and_lag(broker, client):
    await create_topic(client, "t", partitions=2)
    await produce(client, "t", make_batch([b"x"] * 10), partition=0)
    member = Member(client, "g", ["t"])
    await settle([member], 2)
    response = await client.request(
        m.CommitOffsetsRequest(group_id="g", member_id=member.member_id, member_epoch=member.epoch,
                               offsets=[m.OffsetCommit(topic="t", partition=0, offset=4, metadata="m")])
    )
    assert response.partitions[0].error == 0
    fetched = await client.request(m.FetchOffsetsRequest(group_id="g"))
    assert [(p.topic, p.partition, p.offset, p.metadata) for p in fetched.partitions] == [("t", 0, 4, "m")]
    described = await client.request(m.DescribeGroupsRequest(groups=["g"]))
    offsets = described.groups[0].offsets
    assert [(o.offset, o.log_end_offset, o.lag) for o in offsets] == [(4, 10, 6)]
    listed = await client.request(m.ListGroupsRequest())
    assert [(g.group_id, g.members) for g in listed.groups] == [("g", 1)]


async def test_unknown_and_fenced_members_get_named_errors(broker, client):
    await create_topic(client, "t")
    response = await client.request(
        m.CommitOffsetsRequest(group_id="g", member_id="ghost", member_epoch=1,
                               offsets=[m.OffsetCommit(topic="t", partition=0, offset=1)])
    )
    assert response.error == UnknownMemberIdError.code
    member = Member(client, "g", ["t"])
    await settle([member], 1)
    member.epoch += 5
    assert (await member.heartbeat()).error == FencedMemberEpochError.code


async def test_committed_offsets_survive_restart(tmp_path, broker_config):
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        client = await RawClient.connect(handle.port)
        await create_topic(client, "t")
        response = await client.request(
            m.CommitOffsetsRequest(group_id="solo", member_id="", member_epoch=-1,
                                   offsets=[m.OffsetCommit(topic="t", partition=0, offset=7)])
        )
        assert response.partitions[0].error == 0
        await client.aclose()
        handle.shutdown()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        client = await RawClient.connect(handle.port)
        fetched = await client.request(m.FetchOffsetsRequest(group_id="solo"))
        assert [p.offset for p in fetched.partitions] == [7]
        await client.aclose()
        handle.shutdown()


async def test_a_refused_join_creates_no_group(client):
    """A join with a session timeout out of range is refused, and leaves no empty group behind
    (it used to: the group was made before the join was checked)."""
    response = await client.request(m.GroupHeartbeatRequest(
        group_id="g", member_id="", member_epoch=0, session_timeout_ms=10, topics=["t"]))
    assert response.error == InvalidRequestError.code and "session_timeout_ms" in response.message
    assert (await client.request(m.ListGroupsRequest())).groups == []


async def test_heartbeat_from_unknown_member_creates_no_group(client):
    response = await client.request(
        m.GroupHeartbeatRequest(group_id="ghosts", member_id="nobody", member_epoch=3,
                                session_timeout_ms=10_000)
    )
    assert response.error == UnknownMemberIdError.code
    await client.request(
        m.GroupHeartbeatRequest(group_id="ghosts", member_id="nobody", member_epoch=-1,
                                session_timeout_ms=10_000)
    )
    assert (await client.request(m.ListGroupsRequest())).groups == []


async def test_offsets_log_is_compacted_at_startup(broker_config, monkeypatch):
    """Many commits of few offsets: the next start rewrites the live offsets and drops the
    superseded segments, so replay stays proportional to what is live; nothing is lost."""
    import sluice.broker.domain.groups.offsets as groups

    monkeypatch.setattr(groups, "COMPACT_MIN_RECORDS", 20)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        client = await RawClient.connect(handle.port)
        await create_topic(client, "t", partitions=2)
        for offset in range(30):
            response = await client.request(m.CommitOffsetsRequest(
                group_id="solo", member_id="", member_epoch=-1,
                offsets=[m.OffsetCommit(topic="t", partition=offset % 2, offset=offset)]))
            assert response.partitions[0].error == 0
        await client.aclose()
        handle.shutdown()
    for _ in range(2):  # compacted on the first restart; the second replays the snapshot
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve, broker_config))
            plog = handle.broker.topics.partition(groups.OFFSETS_TOPIC, 0).log
            assert plog.log_start_offset >= 30 and plog.log_end_offset - plog.log_start_offset == 2
            client = await RawClient.connect(handle.port)
            fetched = await client.request(m.FetchOffsetsRequest(group_id="solo"))
            assert sorted((p.partition, p.offset) for p in fetched.partitions) == [(0, 28), (1, 29)]
            await client.aclose()
            handle.shutdown()


async def test_offsets_log_is_compacted_while_running(broker_config, monkeypatch):
    import sluice.broker.domain.groups.offsets as groups

    monkeypatch.setattr(groups, "COMPACT_MIN_RECORDS", 20)
    monkeypatch.setattr(groups, "COMPACT_INTERVAL_S", 0.05)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        plog = handle.broker.topics.partition(groups.OFFSETS_TOPIC, 0).log
        async with await RawClient.connect(handle.port) as client:
            await create_topic(client, "t")
            for offset in range(30):
                await client.request(m.CommitOffsetsRequest(
                    group_id="g2", member_id="", member_epoch=-1,
                    offsets=[m.OffsetCommit(topic="t", partition=0, offset=offset)]))
            # A tick may land after any of the commits past the 20th: then it starts at that
            # commit's snapshot. Either way the superseded segments went, and state is whole.
            with trio.fail_after(10):
                while plog.log_start_offset == 0:
                    await trio.sleep(0.02)
            assert plog.log_end_offset - plog.log_start_offset <= 11
            fetched = await client.request(m.FetchOffsetsRequest(group_id="g2"))
            assert [p.offset for p in fetched.partitions] == [29]
        handle.shutdown()


async def test_offsets_of_an_empty_group_expire(broker_config):
    config = type(broker_config)(port=0, data_dir=broker_config.data_dir, offsets_retention_ms=200)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, config))
        async with await RawClient.connect(handle.port) as client:
            await create_topic(client, "t")
            await client.request(m.CommitOffsetsRequest(
                group_id="old", member_id="", member_epoch=-1,
                offsets=[m.OffsetCommit(topic="t", partition=0, offset=3)]))
            with trio.fail_after(10):
                while (await client.request(m.ListGroupsRequest())).groups:
                    await trio.sleep(0.05)
        handle.shutdown()
    async with trio.open_nursery() as nursery:  # the deletion is durable
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as client:
            fetched = await client.request(m.FetchOffsetsRequest(group_id="old"))
            assert fetched.partitions == []
        handle.shutdown()


async def test_a_lone_member_of_a_topic_at_the_partition_maximum(nursery):
    """Issue 13.11: a lone member of a 10,000-partition topic (the documented maximum) could
    not heartbeat -- ``owned[0].partitions holds more than 10000 items`` -- and expired. Now it
    owns all of them, reports them, stays, and commits an offset for every one."""
    handle = await nursery.start(partial(serve, BrokerConfig(port=0, in_memory=True)))
    async with await RawClient.connect(handle.port) as client:
        await create_topic(client, "max", partitions=MAX_PARTITIONS)
        member = Member(client, "g", ["max"])
        for _ in range(3):  # join, report every partition owned, and again
            response = await member.heartbeat()
            assert response.error == 0, response.message
        assert len(member.owned) == MAX_PARTITIONS
        commit = await client.request(m.CommitOffsetsRequest(
            group_id="g", member_id=member.member_id, member_epoch=member.epoch,
            offsets=[m.OffsetCommit(topic="max", partition=p, offset=0)
                     for p in range(MAX_PARTITIONS)]))
        assert commit.error == 0 and not any(r.error for r in commit.partitions)
    handle.shutdown()
