"""Admin requests and their results as plain values, sans-IO (trio and blocking Admin share it)."""

from __future__ import annotations

from typing import NamedTuple

from sluice.client.bootstrap import DEFAULT_BOOTSTRAP, timeout_s
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    ApiError,
    GroupIdNotFoundError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

OFFSET_SPECS = {"earliest": -2, "latest": -1}


class AdminOptions:
    """What the trio and the blocking ``Admin`` take: each call's request is answered within
    ``request_timeout_ms`` or fails with ``RequestTimeoutError``; a lost connection is
    reopened for up to ``reconnect_timeout_ms``."""

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-admin",
        request_timeout_ms: int = 30_000,
        reconnect_timeout_ms: int = 30_000,
    ):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_s = timeout_s("request_timeout_ms", request_timeout_ms)
        self.reconnect_timeout_s = timeout_s("reconnect_timeout_ms", reconnect_timeout_ms, zero=True)


class PartitionInfo(NamedTuple):
    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int
    segments: int


class TopicInfo(NamedTuple):
    name: str
    configs: dict[str, int]
    partitions: list[PartitionInfo]
    topic_id: str = ""  # this incarnation of the topic ("" from a broker without topic ids)


class TopicMeta(NamedTuple):
    """What clients route by: a topic's partition count and the id of its incarnation."""

    partitions: int
    topic_id: str


def create_topics(specs) -> m.CreateTopicsRequest:
    return m.CreateTopicsRequest(topics=[
        m.TopicSpec(name=name, partitions=partitions, configs=dict(configs or {}))
        for name, partitions, configs in specs
    ])


def alter_topics(specs) -> m.AlterTopicsRequest:
    """``specs``: ``(name, partitions or None, configs)`` triples."""
    return m.AlterTopicsRequest(topics=[
        m.TopicAlteration(name=name, partitions=partitions, configs=dict(configs or {}))
        for name, partitions, configs in specs
    ])


def delete_topics(names) -> m.DeleteTopicsRequest:
    return m.DeleteTopicsRequest(topics=list(names))


def metadata(topics=None) -> m.MetadataRequest:
    return m.MetadataRequest(topics=None if topics is None else list(topics))


def describe_topics(names=None) -> m.DescribeTopicsRequest:
    return m.DescribeTopicsRequest(topics=None if names is None else list(names))


def list_offsets(specs) -> m.ListOffsetsRequest:
    return m.ListOffsetsRequest(partitions=[
        m.ListOffsetsPartition(topic=t, partition=p, timestamp=OFFSET_SPECS.get(ts, ts))
        for (t, p), ts in specs.items()
    ])


def check_topic_results(response) -> None:
    for result in response.topics:
        if result.error:
            raise error_for_code(result.error, result.message or f"topic {result.name!r}")


def topic_metas(response: m.MetadataResponse) -> dict[str, TopicMeta | ApiError]:
    """Each topic of a metadata answer: its ``TopicMeta``, or the error it has (unknown...)."""
    return {
        t.name: error_for_code(t.error, t.message or f"unknown topic {t.name!r}") if t.error
        else TopicMeta(len(t.partitions), t.topic_id)
        for t in response.topics
    }


def topic_meta(response: m.MetadataResponse, name: str) -> TopicMeta:
    """The ``TopicMeta`` of ``name`` from a metadata answer (raises its error)."""
    found = topic_metas(response).get(name)
    if found is None:
        raise UnknownTopicOrPartitionError(f"no metadata for topic {name!r}")
    if isinstance(found, ApiError):
        raise found
    return found


def topic_names(response: m.MetadataResponse) -> list[str]:
    return sorted(t.name for t in response.topics if not t.error)


def topic_infos(response: m.DescribeTopicsResponse) -> list[TopicInfo]:
    out = []
    for t in response.topics:
        if t.error:
            raise error_for_code(t.error, t.message or f"unknown topic {t.name!r}")
        parts = [
            PartitionInfo(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes,
                          p.segments)
            for p in t.partitions
        ]
        out.append(TopicInfo(t.name, dict(t.configs), parts, t.topic_id))
    return out


def offsets(response: m.ListOffsetsResponse) -> dict:
    out = {}
    for r in response.partitions:
        if r.error:
            raise error_for_code(r.error, f"{r.topic}[{r.partition}]: offset lookup failed")
        out[(r.topic, r.partition)] = None if r.offset < 0 else (r.offset, r.timestamp)
    return out


# -- groups ------------------------------------------------------------------------------------


class GroupListing(NamedTuple):
    group_id: str
    state: str  # "empty", "stable" or "reconciling"; classic: Kafka's states, snake_case
    members: int
    kind: str = "consumer"  # "consumer" (Sluice's clients) or "classic" (Kafka's clients)


class MemberInfo(NamedTuple):
    member_id: str
    client_id: str
    partitions: list[tuple[str, int]]


class GroupPartitionInfo(NamedTuple):
    topic: str
    partition: int
    committed: int | None  # None: assigned but nothing committed yet
    end_offset: int
    lag: int | None  # end_offset - committed; None without a commit
    member_id: str | None  # the member it is assigned to, if any


class GroupInfo(NamedTuple):
    group_id: str
    state: str
    epoch: int
    members: list[MemberInfo]
    partitions: list[GroupPartitionInfo]
    total_lag: int


def list_groups() -> m.ListGroupsRequest:
    return m.ListGroupsRequest()


def group_listings(response: m.ListGroupsResponse) -> list[GroupListing]:
    return [GroupListing(g.group_id, g.state, g.members, g.kind) for g in response.groups]


def describe_groups(group_ids) -> m.DescribeGroupsRequest:
    return m.DescribeGroupsRequest(groups=list(group_ids))


def delete_groups(group_ids) -> m.DeleteGroupsRequest:
    return m.DeleteGroupsRequest(groups=list(group_ids))


def check_group_results(response: m.DeleteGroupsResponse) -> None:
    for result in response.groups:
        if result.error:
            raise error_for_code(result.error, result.message or f"group {result.group_id!r}")


def alter_group_offsets(group_id: str, offsets: dict) -> m.CommitOffsetsRequest:
    """An administrator's commit (no member): accepted only while the group has no members."""
    return m.CommitOffsetsRequest(
        group_id=group_id, member_id="", member_epoch=-1,
        offsets=[m.OffsetCommit(topic=t, partition=p, offset=o)
                 for (t, p), o in sorted(offsets.items())],
    )


def check_partition_results(response: m.CommitOffsetsResponse) -> None:
    for r in response.partitions:
        if r.error:
            raise error_for_code(r.error, r.message or f"{r.topic}[{r.partition}] failed")


def group_description(response: m.DescribeGroupsResponse, group_id: str) -> m.GroupDescription:
    for g in response.groups:
        if g.group_id == group_id:
            if g.error:
                raise error_for_code(g.error, g.message or f"no group {group_id!r}")
            return g
    raise GroupIdNotFoundError(f"no group {group_id!r}")


def unlisted_assigned(description: m.GroupDescription) -> list[tuple[str, int]]:
    """Partitions assigned to a member that have no committed offset (so no lag row yet)."""
    listed = {(o.topic, o.partition) for o in description.offsets}
    return sorted(
        (a.topic, p) for mem in description.members for a in mem.assignment
        for p in a.partitions if (a.topic, p) not in listed
    )


def group_info(description: m.GroupDescription, end_offsets: dict) -> GroupInfo:
    """``end_offsets``: log end of each ``unlisted_assigned`` partition."""
    owner = {}
    members = []
    for mem in description.members:
        parts = sorted((a.topic, p) for a in mem.assignment for p in a.partitions)
        members.append(MemberInfo(mem.member_id, mem.client_id, parts))
        owner.update((tp, mem.member_id) for tp in parts)
    rows = [
        GroupPartitionInfo(o.topic, o.partition, o.offset, o.log_end_offset,
                           o.lag if o.lag >= 0 else None, owner.get((o.topic, o.partition)))
        for o in description.offsets
    ]
    rows += [
        GroupPartitionInfo(t, p, None, end_offsets.get((t, p), -1), None, owner.get((t, p)))
        for t, p in unlisted_assigned(description)
    ]
    rows.sort(key=lambda r: (r.topic, r.partition))
    total = sum(r.lag for r in rows if r.lag is not None)
    return GroupInfo(description.group_id, description.state, description.epoch,
                     sorted(members, key=lambda mem: mem.member_id), rows, total)
