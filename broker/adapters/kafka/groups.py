"""FindCoordinator, the classic group protocol and committed offsets: Kafka's messages <-> the
domain's ``GroupCoordinator``.

This broker coordinates every group. JoinGroup and SyncGroup answers wait for the round (a
``Deferred``, awaited in the connection's turn: Kafka clients send nothing else on their
coordinator connection meanwhile); Heartbeat and LeaveGroup are answered at once;
OffsetCommit once the offsets log has committed it. Committed offsets are shared with
Sluice's groups, and both kinds are listed and described here and by ``sluice groups``
(Sluice's groups described as Kafka's consumer groups: their assignment in the consumer
protocol's bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sluice.broker.adapters.kafka.context import KafkaContext
from sluice.broker.adapters.kafka.responses import error_code
from sluice.broker.adapters.outcomes import Deferred, when_durable
from sluice.broker.domain.groups import (
    Assignment,
    ClassicGroup,
    GroupView,
    Joined,
    JoinRequest,
    OffsetCommit,
    Reply,
)
from sluice.broker.domain.groups.classic import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
)
from sluice.protocol.errors import ApiError, GroupIdNotFoundError
from sluice.protocol.kafka import ErrorCode, RequestHeader
from sluice.protocol.kafka import messages as k
from sluice.protocol.kafka.consumer_protocol import (
    PROTOCOL_TYPE,
    read_assignment,
    write_assignment,
)

GROUP_KEY = 0
NO_GENERATION = -1
# Group states as Kafka names them (DescribeGroups), for both kinds of group.
KAFKA_STATES = {
    EMPTY: "Empty", PREPARING_REBALANCE: "PreparingRebalance",
    COMPLETING_REBALANCE: "CompletingRebalance", STABLE: "Stable",
    "reconciling": "Reconciling",  # a Sluice group moving partitions (KIP-848's name)
}
DEAD = "Dead"  # what Kafka describes a group that does not exist as
SLUICE_ASSIGNOR = "sluice"  # the protocol_data of a Sluice group: the broker assigns


def handle_find_coordinator(ctx: KafkaContext, header: RequestHeader,
                            request: k.FindCoordinatorRequest) -> k.FindCoordinatorResponse:
    if request.key_type != GROUP_KEY:
        return k.FindCoordinatorResponse(
            error_code=int(ErrorCode.COORDINATOR_NOT_AVAILABLE), node_id=-1, port=-1,
            error_message="transactions are not supported: no transaction coordinator")
    host, port = ctx.advertised
    return k.FindCoordinatorResponse(node_id=ctx.broker.broker_id, host=host, port=port)


# -- the classic protocol ---------------------------------------------------------------------


def handle_join_group(ctx: KafkaContext, header: RequestHeader, request: k.JoinGroupRequest):
    reply = ctx.broker.groups.join(request.group_id, JoinRequest(
        member_id=request.member_id, client_id=header.client_id or "",
        client_host="/" + ctx.peer.rpartition(":")[0],
        session_timeout_ms=request.session_timeout_ms,
        rebalance_timeout_ms=request.rebalance_timeout_ms,
        protocol_type=request.protocol_type,
        protocols=tuple((p.name, bytes(p.metadata)) for p in request.protocols),
        group_instance_id=request.group_instance_id,
    ))

    def answer(joined: Joined) -> k.JoinGroupResponse:
        R = k.JoinGroupResponse
        return R(generation_id=joined.generation, protocol_name=joined.protocol_name,
                 leader=joined.leader, member_id=joined.member_id, members=[
                     R.JoinGroupResponseMember(member_id=m, group_instance_id=i, metadata=data)
                     for m, i, data in joined.members])

    return _replied(reply, answer, lambda code: k.JoinGroupResponse(
        error_code=code, member_id=request.member_id), header)


def handle_sync_group(ctx: KafkaContext, header: RequestHeader, request: k.SyncGroupRequest):
    groups = ctx.broker.groups
    group = groups.classic(request.group_id)
    consumer = group is not None and group.protocol_type == PROTOCOL_TYPE
    assignments = {a.member_id: _assignment(bytes(a.assignment), consumer)
                   for a in request.assignments}
    reply = groups.sync(request.group_id, request.member_id, request.generation_id, assignments)
    return _replied(reply, lambda a: k.SyncGroupResponse(assignment=a.data),
                    lambda code: k.SyncGroupResponse(error_code=code), header)


def _assignment(data: bytes, consumer: bool) -> Assignment:
    """The leader's bytes for one member, and the partitions they name if they are a
    consumer assignment (any other protocol type's bytes are only passed on)."""
    partitions = read_assignment(data) if consumer else None
    return Assignment(data, partitions or frozenset())


def _replied(reply: Reply, answer: Callable, failed: Callable[[int], object],
             header: RequestHeader):
    """The response a ``Reply`` gives: now if it is given, else once it is (``Deferred``)."""
    def respond():
        try:
            return answer(reply.get())
        except ApiError as exc:
            return failed(error_code(exc, header))

    if reply.done:
        return respond()

    async def given():
        try:
            await reply.wait()
        except ApiError:
            pass
        return respond()

    return Deferred(given)


def handle_heartbeat(ctx: KafkaContext, header: RequestHeader,
                     request: k.HeartbeatRequest) -> k.HeartbeatResponse:
    ctx.broker.groups.classic_heartbeat(request.group_id, request.member_id,
                                        request.generation_id)
    return k.HeartbeatResponse()


def handle_leave_group(ctx: KafkaContext, header: RequestHeader,
                       request: k.LeaveGroupRequest) -> k.LeaveGroupResponse:
    R = k.LeaveGroupResponse
    if header.api_version < 3:  # one member, its error the response's
        error = ctx.broker.groups.leave(request.group_id, [request.member_id])[0]
        if error is not None:
            raise error
        return R()
    leaving = request.members
    errors = ctx.broker.groups.leave(request.group_id, [m.member_id for m in leaving])
    return R(members=[
        R.MemberResponse(member_id=m.member_id, group_instance_id=m.group_instance_id,
                         error_code=0 if e is None else error_code(e, header))
        for m, e in zip(leaving, errors, strict=True)])


# -- committed offsets ------------------------------------------------------------------------


def handle_offset_commit(ctx: KafkaContext, header: RequestHeader, request: k.OffsetCommitRequest):
    R = k.OffsetCommitResponse
    groups = ctx.broker.groups
    wanted = [(t.name, p) for t in request.topics for p in t.partitions]
    written = groups.commit(request.group_id, request.member_id,
                            request.generation_id_or_member_epoch, [
                                OffsetCommit(name, p.partition_index, p.committed_offset,
                                             p.committed_metadata or "")
                                for name, p in wanted])
    errors = iter(written.errors)
    response = R(topics=[R.OffsetCommitResponseTopic(name=t.name, partitions=[
        R.OffsetCommitResponsePartition(partition_index=p.partition_index,
                                        error_code=_code(next(errors), header))
        for p in t.partitions]) for t in request.topics])
    return when_durable(groups, written, response)


def handle_offset_fetch(ctx: KafkaContext, header: RequestHeader,
                        request: k.OffsetFetchRequest) -> k.OffsetFetchResponse:
    R = k.OffsetFetchResponse
    wanted = None if request.topics is None else [
        (t.name, p) for t in request.topics for p in t.partition_indexes]
    by_topic: dict[str, list] = {}
    for found in ctx.broker.groups.fetch_offsets(request.group_id, wanted):
        committed = found.committed
        by_topic.setdefault(found.topic, []).append(R.OffsetFetchResponsePartition(
            partition_index=found.partition,
            committed_offset=committed.offset if committed else -1,
            metadata=committed.metadata if committed else ""))
    return R(topics=[R.OffsetFetchResponseTopic(name=name, partitions=parts)
                     for name, parts in by_topic.items()])


def _code(error: ApiError | None, header: RequestHeader) -> int:
    return 0 if error is None else error_code(error, header)


# -- listing and describing ------------------------------------------------------------------


def handle_list_groups(ctx: KafkaContext, header: RequestHeader,
                       request: k.ListGroupsRequest) -> k.ListGroupsResponse:
    R = k.ListGroupsResponse
    groups = ctx.broker.groups
    return R(groups=[R.ListedGroup(group_id=g.group_id,
                                   protocol_type=_protocol_type(groups.classic(g.group_id)))
                     for g in groups.list_groups()])


def _protocol_type(classic: ClassicGroup | None) -> str:
    """A classic group's protocol type ("" while it has no members, as in Kafka); Sluice's
    groups are consumer groups."""
    if classic is None:
        return PROTOCOL_TYPE
    return classic.protocol_type or ""


def handle_describe_groups(ctx: KafkaContext, header: RequestHeader,
                           request: k.DescribeGroupsRequest) -> k.DescribeGroupsResponse:
    R = k.DescribeGroupsResponse
    groups = ctx.broker.groups
    out = []
    for group_id in request.groups:
        try:
            view = groups.describe(group_id)
        except GroupIdNotFoundError:
            out.append(R.DescribedGroup(group_id=group_id, group_state=DEAD))
            continue
        classic = groups.classic(group_id)
        out.append(R.DescribedGroup(
            group_id=group_id, group_state=KAFKA_STATES.get(view.state, view.state),
            protocol_type=_protocol_type(classic),
            protocol_data=(classic.protocol_name or "") if classic else SLUICE_ASSIGNOR,
            members=list(_classic_members(classic) if classic else _sluice_members(view))))
    return R(groups=out)


def _classic_members(group: ClassicGroup) -> Iterable:
    R = k.DescribeGroupsResponse
    chosen = group.protocol_name
    for m in group.members.values():
        yield R.DescribedGroupMember(
            member_id=m.member_id, group_instance_id=m.group_instance_id,
            client_id=m.client_id, client_host=m.client_host,
            member_metadata=m.metadata(chosen) if chosen else b"",
            member_assignment=m.assignment.data)


def _sluice_members(view: GroupView) -> Iterable:
    R = k.DescribeGroupsResponse
    for m in view.members:
        yield R.DescribedGroupMember(member_id=m.member_id, client_id=m.client_id,
                                     member_assignment=write_assignment(m.assignment))
