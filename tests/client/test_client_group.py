"""The sans-IO group membership: requests it builds, plans it makes, resets and commits."""

import pytest
from sluice.client.group import GroupMembership, normalize_offsets
from sluice.protocol import messages as m
from sluice.protocol.errors import UnknownTopicOrPartitionError

ID_1, ID_2 = "1" * 32, "2" * 32

def answer(member_id="m1", epoch=1, assignment=None, interval=500):
    return m.GroupHeartbeatResponse(
        member_id=member_id, member_epoch=epoch, heartbeat_interval_ms=interval,
        assignment=None if assignment is None else [
            m.TopicPartitions(topic=t, partitions=ps) for t, ps in assignment.items()],
    )


def test_join_request_then_assignment_plan():
    g = GroupMembership("g", ["t"], session_timeout_ms=1500)
    join = g.heartbeat_request(now=0.0)
    assert (join.member_id, join.member_epoch, join.topics, join.owned, join.session_timeout_ms) == (
        "", 0, ["t"], [], 1500)
    assert g.leave_request() is None
    plan = g.on_heartbeat(answer(assignment={"t": [0, 1]}, interval=200), now=0.0)
    assert plan.assign == {("t", 0), ("t", 1)} and not plan.revoke
    assert g.heartbeat_interval_s == 0.2 and g.next_heartbeat == 0.2
    g.took(plan.assign)
    hb = g.heartbeat_request(now=1.0)
    assert (hb.member_id, hb.member_epoch) == ("m1", 1)
    assert hb.owned == [m.TopicPartitions(topic="t", partitions=[0, 1])]
    # nil assignment = unchanged
    assert g.on_heartbeat(answer(assignment=None), now=1.0) == (frozenset(), frozenset())


def test_revoke_is_reported_owned_until_released():
    g = GroupMembership("g", ["t"])
    g.took(g.on_heartbeat(answer(assignment={"t": [0, 1, 2]}), now=0).assign)
    plan = g.on_heartbeat(answer(epoch=2, assignment={"t": [0]}), now=1)
    assert plan.revoke == {("t", 1), ("t", 2)} and not plan.assign
    g.start_revoke({("t", 1): 5, ("t", 2): None}, {"t": ID_1})
    # still owned (and not planned again) until released
    assert g.plan() == (frozenset(), frozenset())
    assert g.heartbeat_request(now=2).owned[0].partitions == [0, 1, 2]
    g.released([("t", 1), ("t", 2)])
    assert g.next_heartbeat == 0.0  # report it at once
    assert g.heartbeat_request(now=3).owned[0].partitions == [0]


def test_commits_name_the_topic_incarnation_of_their_positions():
    """A partition being revoked commits in the incarnation its position was taken in, even if
    the consumer has moved on to a new incarnation of the topic since (deleted and recreated)."""
    g = GroupMembership("g", ["t"])
    g.took(g.on_heartbeat(answer(assignment={"t": [0, 1]}), now=0).assign)
    g.on_heartbeat(answer(epoch=2, assignment={"t": [0]}), now=1)
    g.start_revoke({("t", 1): 5}, {"t": ID_1})
    request = g.commit_request({("t", 0): 3, ("t", 1): 5}, {"t": ID_2})
    assert [(o.partition, o.topic_id) for o in request.offsets] == [(0, ID_2), (1, ID_1)]
    g.released([("t", 1)])
    assert g.commit_request({("t", 1): 6}, {"t": ID_2}).offsets[0].topic_id == ID_2
    g.committed = {("t", 0): 3, ("u", 0): 1}
    g.forget_topic("t")
    assert g.committed == {("u", 0): 1}


def test_reset_drops_everything_and_rejoins():
    g = GroupMembership("g", ["t"])
    g.took(g.on_heartbeat(answer(assignment={"t": [0, 1]}), now=0).assign)
    assert g.leave_request().member_epoch == -1
    assert g.reset() == [("t", 0), ("t", 1)]
    join = g.heartbeat_request(now=1)
    assert (join.member_id, join.member_epoch, join.owned) == ("", 0, [])


def test_commit_bookkeeping_and_errors():
    g = GroupMembership("g", ["t"], auto_commit_interval_ms=1000)
    g.on_heartbeat(answer(assignment={"t": [0, 1]}), now=10.0)
    assert not g.auto_commit_due(10.5) and g.auto_commit_due(11.0)
    request = g.commit_request({("t", 1): 4, ("t", 0): 2}, {"t": ID_1})
    assert (request.member_id, [(o.partition, o.offset, o.topic_id) for o in request.offsets]) == (
        "m1", [(0, 2, ID_1), (1, 4, ID_1)])
    g.on_commit(m.CommitOffsetsResponse(partitions=[
        m.PartitionResult(topic="t", partition=0), m.PartitionResult(topic="t", partition=1)]),
        {("t", 0): 2, ("t", 1): 4})
    assert g.uncommitted({("t", 0): 2, ("t", 1): 5, ("t", 2): None}) == {("t", 1): 5}
    with pytest.raises(UnknownTopicOrPartitionError):
        g.on_commit(m.CommitOffsetsResponse(partitions=[m.PartitionResult(
            topic="t", partition=9, error=UnknownTopicOrPartitionError.code, message="no")]),
            {("t", 9): 1})
    found = g.on_fetch_offsets(m.FetchOffsetsResponse(partitions=[
        m.OffsetFetchResult(topic="t", partition=0, offset=7),
        m.OffsetFetchResult(topic="t", partition=1, offset=-1)]))
    assert found == {("t", 0): 7}


def test_offsets_and_config_are_checked():
    assert normalize_offsets({("t", 0): 3}) == {("t", 0): 3}
    with pytest.raises(ValueError):
        normalize_offsets({("t", 0): -1})
    with pytest.raises(ValueError):
        GroupMembership("g", [])
    with pytest.raises(ValueError):
        GroupMembership("", ["t"])
