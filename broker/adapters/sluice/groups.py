"""The group APIs: Sluice's wire messages <-> the domain's ``GroupCoordinator``.

Sluice's members use server-side assignment (``group_heartbeat``); commits, offset fetches,
listings and deletions work on every group, whatever kind. A commit or deletion is answered
once the offsets log has committed it (a ``Deferred``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sluice.broker.adapters.outcomes import Deferred
from sluice.broker.adapters.sluice.context import RequestContext
from sluice.broker.domain.groups import GroupCoordinator, Heartbeat, OffsetCommit, Written
from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError


def handle_group_heartbeat(
    ctx: RequestContext, request: m.GroupHeartbeatRequest
) -> m.GroupHeartbeatResponse:
    owned = None if request.owned is None else frozenset(
        (tp.topic, p) for tp in request.owned for p in tp.partitions)
    answer = ctx.broker.groups.heartbeat(request.group_id, Heartbeat(
        member_id=request.member_id,
        member_epoch=request.member_epoch,
        client_id=ctx.client_id,
        topics=None if request.topics is None else frozenset(request.topics),
        session_timeout_ms=request.session_timeout_ms,
        owned=owned,
    ))
    return m.GroupHeartbeatResponse(
        member_id=answer.member_id, member_epoch=answer.member_epoch,
        heartbeat_interval_ms=answer.heartbeat_interval_ms,
        assignment=None if answer.assignment is None else _topic_partitions(answer.assignment),
    )


def handle_commit_offsets(ctx: RequestContext, request: m.CommitOffsetsRequest):
    groups = ctx.broker.groups
    written = groups.commit(request.group_id, request.member_id, request.member_epoch, [
        OffsetCommit(o.topic, o.partition, o.offset, o.metadata, o.topic_id)
        for o in request.offsets
    ])
    response = m.CommitOffsetsResponse(partitions=[
        _result(m.PartitionResult, error, topic=o.topic, partition=o.partition)
        for o, error in zip(request.offsets, written.errors, strict=True)
    ])
    return _when_durable(groups, written, response)


def handle_fetch_offsets(ctx: RequestContext, request: m.FetchOffsetsRequest) -> m.FetchOffsetsResponse:
    wanted = None if request.partitions is None else [
        (tp.topic, tp.partition) for tp in request.partitions]
    return m.FetchOffsetsResponse(partitions=[
        m.OffsetFetchResult(
            topic=f.topic, partition=f.partition, topic_id=f.topic_id,
            offset=f.committed.offset if f.committed else -1,
            metadata=f.committed.metadata if f.committed else "",
        )
        for f in ctx.broker.groups.fetch_offsets(request.group_id, wanted)
    ])


def handle_list_groups(ctx: RequestContext, request: m.ListGroupsRequest) -> m.ListGroupsResponse:
    return m.ListGroupsResponse(groups=[
        m.GroupListing(group_id=g.group_id, state=g.state, members=g.members)
        for g in ctx.broker.groups.list_groups()
    ])


def handle_describe_groups(
    ctx: RequestContext, request: m.DescribeGroupsRequest
) -> m.DescribeGroupsResponse:
    out = []
    for group_id in request.groups:
        try:
            group = ctx.broker.groups.describe(group_id)
        except ApiError as err:
            out.append(m.GroupDescription(group_id=group_id, error=err.code, message=err.message))
            continue
        out.append(m.GroupDescription(
            group_id=group_id, state=group.state, epoch=group.epoch,
            members=[
                m.MemberDescription(member_id=mem.member_id, client_id=mem.client_id,
                                    assignment=_topic_partitions(mem.assignment))
                for mem in group.members
            ],
            offsets=[
                m.GroupOffset(topic=o.topic, partition=o.partition, offset=o.offset,
                              log_end_offset=o.log_end_offset, lag=o.lag)
                for o in group.offsets
            ],
        ))
    return m.DescribeGroupsResponse(groups=out)


def handle_delete_groups(ctx: RequestContext, request: m.DeleteGroupsRequest):
    groups = ctx.broker.groups
    written = groups.delete_groups(request.groups)
    response = m.DeleteGroupsResponse(groups=[
        _result(m.GroupResult, error, group_id=group_id)
        for group_id, error in zip(request.groups, written.errors, strict=True)
    ])
    return _when_durable(groups, written, response)


def _result(message: type, error: ApiError | None, **fields):
    """A per-item result message: ``fields``, and ``error`` if there was one."""
    if error is None:
        return message(**fields)
    return message(**fields, error=error.code, message=error.message)


def _when_durable(groups: GroupCoordinator, written: Written, response):
    """``response`` now if nothing was written, else once the offsets log committed it."""
    if written.wait_for is None:
        return response

    async def durable():
        await groups.wait_durable(written)
        return response

    return Deferred(durable)


def _topic_partitions(tps: Iterable[tuple[str, int]]) -> list[m.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return [m.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]
