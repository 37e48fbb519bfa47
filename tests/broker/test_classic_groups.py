"""Kafka's classic group protocol in the domain (``ClassicGroup``): rounds, generations,
leaders, timeouts and the errors that make members rejoin -- driven by hand, with trio's
clock standing still (``expire(now)`` is called with the instant that matters)."""

from __future__ import annotations

import pytest
from sluice.broker.domain.groups.classic import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    Assignment,
    ClassicGroup,
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    JoinRequest,
    RebalanceInProgressError,
)
from sluice.broker.domain.groups.offsets import OffsetCommit
from sluice.protocol.errors import (
    BrokerShuttingDownError,
    FencedMemberEpochError,
    UnknownMemberIdError,
)


def request(member_id: str = "", *, client_id: str = "c", session_ms: int = 10_000,
            rebalance_ms: int = 30_000, protocol_type: str = "consumer",
            protocols=(("range", b"meta"),)) -> JoinRequest:
    return JoinRequest(member_id=member_id, client_id=client_id, client_host="/127.0.0.1",
                       session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
                       protocol_type=protocol_type, protocols=tuple(protocols))


def answer(reply):
    """A reply that must already be given: its value (or its error, raised)."""
    assert reply.done
    return reply.get()


def stable_pair(group: ClassicGroup, rebalance_ms: int = 30_000):
    """Two members, A the leader, through a full round; returns their ids."""
    a = answer(group.join(request(client_id="a", rebalance_ms=rebalance_ms))).member_id
    answer(group.sync(a, 1, {a: Assignment(b"A")}))
    b_join = group.join(request(client_id="b", protocols=(("range", b"mb"),),
                                rebalance_ms=rebalance_ms))
    assert not b_join.done and group.state == PREPARING_REBALANCE
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat(a, 1)
    a_joined = answer(group.join(request(a, rebalance_ms=rebalance_ms)))
    b = answer(b_join).member_id
    answer(group.sync(a, 2, {a: Assignment(b"A2"), b: Assignment(b"B2")}))
    assert group.state == STABLE and a_joined.leader == a
    return a, b


async def test_a_lone_member_leads_its_own_round_and_gets_its_assignment():
    group = ClassicGroup("g")
    joined = answer(group.join(request(client_id="solo")))
    assert joined.generation == 1 and joined.leader == joined.member_id
    assert joined.members == ((joined.member_id, None, b"meta"),)
    assert joined.protocol_name == "range" and group.state == COMPLETING_REBALANCE
    assignment = Assignment(b"opaque", frozenset({("t", 0)}))
    assert answer(group.sync(joined.member_id, 1, {joined.member_id: assignment})) == assignment
    assert group.state == STABLE
    assert group.member_views()[0].assignment == frozenset({("t", 0)})
    group.heartbeat(joined.member_id, 1)  # all well: no error


async def test_a_newcomer_makes_everyone_rejoin_and_followers_wait_for_the_leader():
    group = ClassicGroup("g")
    a = answer(group.join(request(client_id="a"))).member_id
    answer(group.sync(a, 1, {a: Assignment(b"A")}))
    b_join = group.join(request(client_id="b", protocols=(("range", b"mb"),)))
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat(a, 1)
    a_joined = answer(group.join(request(a)))
    b_joined = answer(b_join)
    assert a_joined.generation == b_joined.generation == 2
    assert a_joined.leader == b_joined.leader == a
    assert {m for m, _, _ in a_joined.members} == {a, b_joined.member_id}
    assert b_joined.members == ()  # only the leader learns the others' metadata
    b = b_joined.member_id
    b_sync = group.sync(b, 2, None)
    assert not b_sync.done  # waits for the leader's assignment
    group.heartbeat(b, 2)  # completing: heartbeats are fine
    answer(group.sync(a, 2, {a: Assignment(b"A2"), b: Assignment(b"B2")}))
    assert answer(b_sync).data == b"B2"


async def test_a_member_that_does_not_rejoin_in_time_is_dropped():
    group = ClassicGroup("g")
    a, b = stable_pair(group, rebalance_ms=5_000)  # shorter than the sessions (10 s)
    c_join = group.join(request(client_id="c", rebalance_ms=5_000))
    group.join(request(a, rebalance_ms=5_000))  # a rejoins, b does not
    deadline = group.round_deadline
    group.expire(deadline - 0.001)
    assert not c_join.done
    group.expire(deadline)
    joined = answer(c_join)
    assert b not in group.members and joined.generation == 3
    with pytest.raises(UnknownMemberIdError):
        group.heartbeat(b, 2)


async def test_session_expiry_removes_a_silent_member_and_rebalances():
    group = ClassicGroup("g")
    a, b = stable_pair(group)
    group.members[a].deadline = 100.0
    group.members[b].deadline = 50.0
    group.expire(60.0)
    assert b not in group.members and group.state == PREPARING_REBALANCE
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat(a, 2)
    assert answer(group.join(request(a))).generation == 3


async def test_leaving_rebalances_the_rest_and_the_last_one_empties_the_group():
    group = ClassicGroup("g")
    a, b = stable_pair(group)
    group.leave(b)
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat(a, 2)
    joined = answer(group.join(request(a)))
    assert joined.generation == 3 and joined.members == ((a, None, b"meta"),)
    answer(group.sync(a, 3, {}))
    group.leave(a)
    assert group.state == EMPTY and not group.members and group.generation == 4
    with pytest.raises(UnknownMemberIdError):
        group.leave(a)


async def test_commits_are_fenced_by_generation_and_refused_while_completing():
    group = ClassicGroup("g")
    a = answer(group.join(request())).member_id
    with pytest.raises(RebalanceInProgressError):
        group.check_commit(a, 1)
    answer(group.sync(a, 1, {}))
    group.check_commit(a, 1)
    with pytest.raises(FencedMemberEpochError):
        group.check_commit(a, 0)
    with pytest.raises(UnknownMemberIdError):
        group.check_commit("nobody", 1)


async def test_protocols_must_be_shared_and_the_most_preferred_wins():
    group = ClassicGroup("g")
    a = answer(group.join(request(protocols=(("range", b"1"), ("roundrobin", b"2"))))).member_id
    answer(group.sync(a, 1, {}))
    with pytest.raises(InconsistentGroupProtocolError):
        group.join(request(protocol_type="connect"))
    with pytest.raises(InconsistentGroupProtocolError):
        group.join(request(protocols=(("sticky", b""),)))
    b_join = group.join(request(protocols=(("roundrobin", b"3"), ("range", b"4"))))
    c_join = group.join(request(protocols=(("roundrobin", b"5"),)))
    joined = answer(group.join(request(a, protocols=(("range", b"1"), ("roundrobin", b"2")))))
    assert joined.protocol_name == "roundrobin"  # two votes to one
    assert dict((m, meta) for m, _, meta in joined.members)[a] == b"2"
    assert answer(b_join).protocol_name == answer(c_join).protocol_name == "roundrobin"


async def test_a_follower_checking_in_with_the_same_protocols_keeps_its_generation():
    group = ClassicGroup("g")
    a, b = stable_pair(group)
    again = answer(group.join(request(b, protocols=(("range", b"mb"),))))
    assert again.generation == 2 and group.state == STABLE
    # The leader rejoining means it wants to assign again: everybody rejoins.
    assert not group.join(request(a)).done and group.state == PREPARING_REBALANCE


async def test_members_that_do_not_sync_in_time_are_dropped():
    group = ClassicGroup("g")
    a, b = stable_pair(group)
    c_join = group.join(request(client_id="c"))
    group.join(request(a))
    group.join(request(b))
    c = answer(c_join).member_id
    b_sync = group.sync(b, 3, None)
    group.expire(group.round_deadline)  # the leader never sent its assignment
    assert set(group.members) == {b}
    with pytest.raises(RebalanceInProgressError):
        answer(b_sync)
    assert c not in group.members


async def test_bad_session_timeouts_and_stopping_broker():
    group = ClassicGroup("g")
    with pytest.raises(InvalidSessionTimeoutError):
        group.join(request(session_ms=10))
    a = answer(group.join(request())).member_id
    answer(group.sync(a, 1, {}))
    waiting = group.join(request())
    group.fail_waiting(BrokerShuttingDownError())
    with pytest.raises(BrokerShuttingDownError):
        answer(waiting)


@pytest.fixture
def coordinator(broker):
    broker.broker.topics.create("t", 2, {})
    return broker.broker.groups


async def test_the_kinds_share_offsets_and_a_group_takes_the_kind_of_its_next_member(coordinator):
    from sluice.broker.domain.groups import Heartbeat

    written = coordinator.commit("g", "", -1, [OffsetCommit("t", 0, 5)])
    await coordinator.wait_durable(written)
    assert coordinator.list_groups()[0].kind == "consumer"  # made by a commit
    joined = answer(coordinator.join("g", request()))
    summary = coordinator.list_groups()[0]
    assert (summary.kind, summary.members) == ("classic", 1)
    # A Sluice member cannot join while Kafka's are there, nor the other way round.
    with pytest.raises(InconsistentGroupProtocolError):
        coordinator.heartbeat("g", Heartbeat(member_id="", member_epoch=0, topics=frozenset({"t"}),
                                             session_timeout_ms=10_000))
    answer(coordinator.sync("g", joined.member_id, 1, {}))
    written = coordinator.commit("g", joined.member_id, 1, [OffsetCommit("t", 1, 7)])
    await coordinator.wait_durable(written)
    view = coordinator.describe("g")
    assert [(o.partition, o.offset) for o in view.offsets] == [(0, 5), (1, 7)]
    assert coordinator.leave("g", [joined.member_id, "ghost"])[1] is not None
    answer_ = coordinator.heartbeat("g", Heartbeat(member_id="", member_epoch=0,
                                                   topics=frozenset({"t"}), session_timeout_ms=10_000))
    assert answer_.member_id and coordinator.list_groups()[0].kind == "consumer"
    with pytest.raises(InconsistentGroupProtocolError):
        coordinator.join("g", request())
    assert coordinator.classic("g") is None
