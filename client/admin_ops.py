"""Admin requests and their results as plain values, and every admin operation as a procedure,
sans-IO (the trio and blocking ``Admin`` share it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sluice.client.bootstrap import DEFAULT_BOOTSTRAP, timeout_s
from sluice.client.network import Call, Network
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    GroupIdNotFoundError,
    error_for_code,
)

OFFSET_SPECS = {"earliest": -2, "latest": -1}


class AdminBase:
    """What the trio and the blocking ``Admin`` share: the options, the engine (``net``) and
    every operation, written once as a procedure (``client.procedure``) that each ``Admin``
    runs with its driver. Each call's request is answered within ``request_timeout_ms`` or
    fails with ``RequestTimeoutError``; a lost connection is reopened for up to
    ``reconnect_timeout_ms``."""

    OPERATIONS = (
        "create_topic", "create_topics", "alter_topic", "delete_topic", "delete_topics",
        "list_topics", "describe_topic", "describe_topics", "list_offsets", "list_groups",
        "describe_group", "delete_groups", "alter_group_offsets",
    )

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-admin",
        request_timeout_ms: int = 30_000,
        reconnect_timeout_ms: int = 30_000,
        clock: Callable[[], float],
    ):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_s = timeout_s("request_timeout_ms", request_timeout_ms)
        self.reconnect_timeout_s = timeout_s("reconnect_timeout_ms", reconnect_timeout_ms, zero=True)
        self.net = Network(bootstrap, client_id=client_id, clock=clock,
                           request_timeout_s=self.request_timeout_s,
                           reconnect_timeout_s=self.reconnect_timeout_s)

    def create_topic(self, name: str, partitions: int = 1, configs=None):
        """Create a topic (``TopicAlreadyExistsError``, ``InvalidTopicError``...)."""
        check_topic_results((yield Call(create_topics([(name, partitions, configs or {})]))))

    def create_topics(self, specs):
        """``specs``: ``(name, partitions, configs)`` triples; raises the first error."""
        check_topic_results((yield Call(create_topics(specs))))

    def alter_topic(self, name: str, partitions: int | None = None, configs=None):
        """Add partitions (``partitions``: the new count) and/or set configs of a topic."""
        check_topic_results((yield Call(alter_topics([(name, partitions, configs)]))))

    def delete_topic(self, name: str):
        check_topic_results((yield Call(delete_topics([name]))))

    def delete_topics(self, names):
        check_topic_results((yield Call(delete_topics(names))))

    def list_topics(self):
        return topic_names((yield Call(metadata())))

    def describe_topic(self, name: str):
        return topic_infos((yield Call(describe_topics([name]))))[0]

    def describe_topics(self, names=None):
        return topic_infos((yield Call(describe_topics(names))))

    def list_offsets(self, specs):
        """``{(topic, partition): timestamp or "earliest"/"latest"}`` ->
        ``{(topic, partition): (offset, timestamp) or None}``."""
        return (yield from offsets_from_leaders(self.net, specs))

    def list_groups(self):
        """Every group the broker knows: ``(group_id, state, members)``."""
        return group_listings((yield Call(list_groups())))

    def describe_group(self, group_id: str):
        """Members and their partitions; per partition committed offset, log end and lag
        (``end_offset - committed``), and the total lag. ``GroupIdNotFoundError`` if unknown."""
        description = group_description((yield Call(describe_groups([group_id]))), group_id)
        missing = unlisted_assigned(description)
        ends = {}
        if missing:
            found = yield from offsets_from_leaders(self.net, {tp: "latest" for tp in missing})
            ends = {tp: v[0] for tp, v in found.items() if v is not None}
        return group_info(description, ends)

    def delete_groups(self, group_ids):
        """Delete groups without members, and their committed offsets
        (``GroupNotEmptyError`` if one has members, ``GroupIdNotFoundError`` if unknown)."""
        check_group_results((yield Call(delete_groups(group_ids))))

    def alter_group_offsets(self, group_id: str, offsets: dict):
        """Commit ``{(topic, partition): offset}`` for a group that has no members (as
        ``sluice groups reset-offsets`` does); a group with members refuses it."""
        check_partition_results((yield Call(alter_group_offsets(group_id, offsets))))


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


def offsets_from_leaders(net: Network, specs: dict):
    """Procedure: ``offsets`` of ``list_offsets(specs)``, each partition asked of its leader
    (a topic whose leaders are not known is looked up first)."""
    by_node: dict[int | None, dict] = {}
    for tp, spec in specs.items():
        if net.metadata.leader(*tp) is None:
            yield from net.look_up(tp[0])
        by_node.setdefault(net.metadata.leader(*tp), {})[tp] = spec
    out = {}
    for node, asked in by_node.items():
        channel = None if node is None else net.channel(node)
        out.update(offsets((yield Call(list_offsets(asked)), channel)))
    return out


def check_topic_results(response) -> None:
    for result in response.topics:
        if result.error:
            raise error_for_code(result.error, result.message or f"topic {result.name!r}")


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
