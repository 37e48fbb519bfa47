"""Consumer groups: server-side assignment (Kafka's KIP-848 model) and committed offsets.

Members only heartbeat (``group_heartbeat``) with their subscription and the partitions they
own; the coordinator computes assignments (``broker.assignor``: balanced and sticky) and
reconciles members incrementally:

* **Revoke before reassign.** A member is told its *target* minus anything another member still
  reports owning. The old owner is told its smaller target, finishes and commits, reports the
  partition released in its next heartbeat, and only then does the new owner receive it -- so
  no partition ever has two owners.
* **Epochs.** The group epoch bumps on every membership or subscription change; a member's
  epoch becomes the group epoch whenever its assignment changes. A heartbeat with an epoch
  newer than the broker's, or a commit from a member the broker no longer knows, gets a named
  error (``FencedMemberEpochError`` / ``UnknownMemberIdError``).
* **Expiry.** A member that misses its session timeout is removed and its partitions move.

Committed offsets live in the internal topic ``__consumer_offsets`` (one partition): each
commit appends one batch whose records are ``key = [group, topic, partition]``, ``value =
[offset, metadata, commit_time_ms, topic_id]`` (msgpack). A commit is acknowledged after
fdatasync. At startup the topic is replayed into memory.

Committed offsets belong to one incarnation of their topic (its ``topic_id``): deleting the
topic drops them (``topic_deleted`` appends a nil-valued record for each, so the log forgets
them too), and the replay at startup keeps only offsets whose id is the topic's current one --
so a crash between the topic's deletion and those records, or a recreate before they were
flushed, can never hand an old topic's offsets to a new topic of the same name. A commit may
name the incarnation it means (``topic_id``) and is refused with ``UnknownTopicIdError`` if
that is no longer the current one. Records written before topic ids (three fields) are taken
as the current incarnation's and rewritten with its id. So that the replay stays proportional to the
live offsets rather than to every commit ever made, the log is compacted (at startup and
every ``COMPACT_INTERVAL_S``) once it holds ``COMPACT_RATIO`` times more records than live
offsets: roll a segment, write every live offset into it, fdatasync, then delete the older
segments whole. A crash in between leaves both copies; replaying them gives the same state.
Offsets of a group that has had no members for ``offsets_retention_ms`` (a broker setting)
are dropped (a record with a nil value marks the deletion).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import msgpack
import trio
from sluice.broker.adapters.outcomes import Deferred
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.assignor import assign
from sluice.broker.domain.topics import TopicRegistry
from sluice.broker.storage import ValidatedBatches
from sluice.protocol import messages as m
from sluice.protocol.batch import build_batch, decode_records, iter_batches, parse_header
from sluice.protocol.errors import (
    ApiError,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    GroupNotEmptyError,
    InvalidGroupIdError,
    InvalidRequestError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger("sluice.groups")

OFFSETS_TOPIC = "__consumer_offsets"
HEARTBEAT_INTERVAL_MS = 500
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 300_000
MAX_METADATA_CHARS = 4096
COMPACT_MIN_RECORDS = 10_000
COMPACT_RATIO = 4
COMPACT_INTERVAL_S = 60.0
SNAPSHOT_BATCH_RECORDS = 1_000

TopicPartition = tuple[str, int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Member:
    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    deadline: float
    epoch: int = 0
    owned: frozenset[TopicPartition] = frozenset()
    assigned: frozenset[TopicPartition] = frozenset()


@dataclass
class Group:
    group_id: str
    epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    # (topic, partition) -> (offset, metadata, topic_id): only the current incarnations' offsets
    offsets: dict[TopicPartition, tuple[int, str, str]] = field(default_factory=dict)
    empty_since_ms: int = 0

    @property
    def state(self) -> str:
        if not self.members:
            return "empty"
        settled = all(mem.assigned == self.target.get(mid, frozenset()) and mem.owned == mem.assigned
                      for mid, mem in self.members.items())
        return "stable" if settled else "reconciling"


class GroupCoordinator:
    """All groups of this broker. Sync methods run inline; commits defer until fsync'd."""

    def __init__(self, topics: TopicRegistry, config: BrokerConfig) -> None:
        self._topics = topics
        self._config = config
        self._offsets = offsets = topics.partition(OFFSETS_TOPIC, 0)
        self.groups: dict[str, Group] = {}
        self._expiry_changed = trio.Event()
        self._replay()
        self._keep_current_incarnations()
        snapshot_start = self._write_snapshot_if_due()
        if snapshot_start is not None:  # before serving: nothing else appends meanwhile
            offsets.log.flush()
            offsets.log.delete_before(snapshot_start)

    # -- startup ------------------------------------------------------------------------------

    def _replay(self) -> None:
        plog = self._offsets.log
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            data = plog.read_bytes(offset, 4 << 20)
            batches = list(iter_batches(data))
            if not batches:
                break
            for batch in batches:
                for record in decode_records(batch):
                    if record.offset >= offset:
                        self._apply(record.key, record.value)
                offset = max(offset, parse_header(batch).next_offset)
        log.info("loaded committed offsets of %d group(s)", len(self.groups))

    def _apply(self, key: bytes, value: bytes | None) -> None:
        group_id, topic, partition = msgpack.unpackb(key, raw=False)
        group = self.groups.setdefault(group_id, Group(group_id, empty_since_ms=now_ms()))
        if value is None:
            group.offsets.pop((topic, partition), None)
            if not group.offsets and not group.members:
                del self.groups[group_id]
        else:
            fields = msgpack.unpackb(value, raw=False)
            topic_id = fields[3] if len(fields) > 3 else None  # None: written before topic ids
            group.offsets[(topic, partition)] = (fields[0], fields[1], topic_id)

    def _keep_current_incarnations(self) -> None:
        """After the replay: drop (and record the drop of) offsets of topics deleted since --
        recreated or not -- and give offsets from before topic ids the current id."""
        dropped, adopted = [], []
        for group in self.groups.values():
            for (topic, partition), (offset, metadata, topic_id) in list(group.offsets.items()):
                current = self._topics.topic_id(topic)
                if current is not None and topic_id in (current, None):
                    if topic_id is None:
                        group.offsets[(topic, partition)] = (offset, metadata, current)
                        adopted.append((group.group_id, topic, partition, offset, metadata, current))
                    continue
                del group.offsets[(topic, partition)]
                dropped.append((group.group_id, topic, partition))
        self._forget_empty_groups()
        stamp = now_ms()
        records = [_tombstone(*gtp, stamp) for gtp in dropped]
        records += [_offset_record(*row, stamp) for row in adopted]
        for i in range(0, len(records), SNAPSHOT_BATCH_RECORDS):
            self._append(records[i : i + SNAPSHOT_BATCH_RECORDS])
        if records:
            log.info("dropped %d committed offset(s) of deleted topics; gave %d a topic id",
                     len(dropped), len(adopted))

    def _forget_empty_groups(self) -> None:
        for group_id in [g.group_id for g in self.groups.values() if not g.offsets and not g.members]:
            del self.groups[group_id]

    # -- compaction of the offsets log -----------------------------------------------------------

    def _write_snapshot_if_due(self) -> int | None:
        """If the log is mostly superseded commits, append every live offset to a fresh
        segment and return where that snapshot starts (everything before it may go)."""
        plog = self._offsets.log
        records = plog.log_end_offset - plog.log_start_offset
        live = sum(len(g.offsets) for g in self.groups.values())
        if records < COMPACT_MIN_RECORDS or records < COMPACT_RATIO * live:
            return None
        plog.roll()
        start = plog.log_end_offset
        stamp = now_ms()
        rows = [
            _offset_record(g.group_id, t, p, offset, metadata, topic_id, stamp)
            for g in self.groups.values()
            for (t, p), (offset, metadata, topic_id) in g.offsets.items()
        ]
        for i in range(0, len(rows), SNAPSHOT_BATCH_RECORDS):
            self._append(rows[i : i + SNAPSHOT_BATCH_RECORDS])
        log.info("compacting %s: %d records -> %d live offsets", OFFSETS_TOPIC, records, live)
        return start

    async def run_compaction(self) -> None:
        """Compact the offsets log now and then (see the module docstring)."""
        while True:
            await trio.sleep(COMPACT_INTERVAL_S)
            start = self._write_snapshot_if_due()
            if start is not None:
                await self._offsets.wait_committed(self._offsets.log.log_end_offset - 1)
                self._offsets.log.delete_before(start)

    # -- membership ---------------------------------------------------------------------------

    def heartbeat(self, request: m.GroupHeartbeatRequest, client_id: str = "") -> m.GroupHeartbeatResponse:
        if not request.group_id:
            raise InvalidGroupIdError("group_id must not be empty")
        joining = request.member_epoch == 0 and not request.member_id
        group = self.groups.get(request.group_id)
        if group is None and joining:
            group = self.groups[request.group_id] = Group(request.group_id, empty_since_ms=now_ms())
        if request.member_epoch == -1:
            if group is not None:
                self._remove(group, request.member_id, reason="left")
            return m.GroupHeartbeatResponse(member_id=request.member_id, member_epoch=-1)
        if joining:
            member = self._join(group, request, client_id)
        else:
            member = group.members.get(request.member_id) if group is not None else None
            if member is None:
                raise UnknownMemberIdError(
                    f"member {request.member_id} is not in group {request.group_id}; rejoin"
                )
            if request.member_epoch > member.epoch:
                raise FencedMemberEpochError(
                    f"member epoch {request.member_epoch} is ahead of the broker's {member.epoch}"
                )
            if request.topics is not None and frozenset(request.topics) != member.topics:
                member.topics = frozenset(request.topics)
                self._rebalance(group)
        member.deadline = trio.current_time() + member.session_timeout_ms / 1000
        self._expiry_changed.set()
        if request.owned is not None:
            member.owned = frozenset(
                (tp.topic, p) for tp in request.owned for p in tp.partitions
            )
        self._reconcile(group, member)
        return m.GroupHeartbeatResponse(
            member_id=member.member_id,
            member_epoch=member.epoch,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            assignment=_as_topic_partitions(member.assigned),
        )

    def _join(self, group: Group, request: m.GroupHeartbeatRequest, client_id: str) -> Member:
        timeout = request.session_timeout_ms
        if not MIN_SESSION_TIMEOUT_MS <= timeout <= MAX_SESSION_TIMEOUT_MS:
            raise InvalidRequestError(
                f"session_timeout_ms must be in [{MIN_SESSION_TIMEOUT_MS}, "
                f"{MAX_SESSION_TIMEOUT_MS}], got {timeout}"
            )
        member = Member(
            member_id=uuid.uuid4().hex,
            client_id=client_id,
            topics=frozenset(request.topics or ()),
            session_timeout_ms=timeout,
            deadline=trio.current_time() + timeout / 1000,
        )
        group.members[member.member_id] = member
        log.info("member %s joined group %s", member.member_id, group.group_id)
        self._rebalance(group)
        return member

    def _remove(self, group: Group, member_id: str, *, reason: str) -> None:
        if group.members.pop(member_id, None) is None:
            return
        log.info("member %s %s group %s", member_id, reason, group.group_id)
        if not group.members:
            group.empty_since_ms = now_ms()
        self._rebalance(group)

    def _rebalance(self, group: Group) -> None:
        group.epoch += 1
        counts = {}
        for member in group.members.values():
            for topic in member.topics:
                info = self._topics.topic(topic)
                counts[topic] = info.config.partitions if info is not None else 0
        group.target = assign(
            {mid: mem.topics for mid, mem in group.members.items()},
            counts,
            {mid: mem.assigned for mid, mem in group.members.items()},
        )

    def _reconcile(self, group: Group, member: Member) -> None:
        """Give the member its target minus what others still own (revoke before assign)."""
        owned_by_others = set()
        for other_id, other in group.members.items():
            if other_id != member.member_id:
                owned_by_others |= other.owned | other.assigned
        current = frozenset(group.target.get(member.member_id, frozenset()) - owned_by_others)
        if current != member.assigned:
            member.assigned = current
            member.epoch = group.epoch

    def partitions_added(self, partitions) -> None:
        """(``TopicListener``) Partition counts changed: recompute every group's targets."""
        self.topics_changed()

    def topics_changed(self) -> None:
        """Partition counts changed (topic created/deleted): recompute every group's targets."""
        for group in self.groups.values():
            if group.members:
                self._rebalance(group)

    def topic_deleted(self, topic: str) -> None:
        """The topic is gone: forget every group's offsets of it (a nil-valued record each, so
        the log forgets them too) and rebalance the groups that consumed it."""
        stamp = now_ms()
        records = []
        for group in self.groups.values():
            for tp in [tp for tp in group.offsets if tp[0] == topic]:
                del group.offsets[tp]
                records.append(_tombstone(group.group_id, *tp, stamp))
        self._forget_empty_groups()
        for i in range(0, len(records), SNAPSHOT_BATCH_RECORDS):
            self._append(records[i : i + SNAPSHOT_BATCH_RECORDS])
        self.topics_changed()

    async def run_expiry(self) -> None:
        """Remove members whose session timed out; drop long-empty groups' offsets."""
        while True:
            deadlines = [mem.deadline for g in self.groups.values() for mem in g.members.values()]
            self._expiry_changed = trio.Event()
            idle_s = min(60.0, self._config.offsets_retention_ms / 1000)
            with trio.move_on_at(min(deadlines, default=trio.current_time() + idle_s)):
                await self._expiry_changed.wait()
            now = trio.current_time()
            for group in list(self.groups.values()):
                for member in list(group.members.values()):
                    if member.deadline <= now:
                        self._remove(group, member.member_id, reason="timed out of")
            self._expire_offsets()

    def _expire_offsets(self) -> None:
        cutoff = now_ms() - self._config.offsets_retention_ms
        stale = [g for g in self.groups.values() if not g.members and g.empty_since_ms < cutoff]
        for group in stale:
            records = self._drop(group)
            if records:
                self._append(records)

    def _drop(self, group: Group) -> list:
        """Forget a group without members; the records that delete its offsets from the log."""
        del self.groups[group.group_id]
        stamp = now_ms()
        return [_tombstone(group.group_id, t, p, stamp) for (t, p) in group.offsets]

    def delete_groups(self, request: m.DeleteGroupsRequest):
        """Delete groups without members and their committed offsets (answered once the
        deletion is fsync'd, like a commit)."""
        results, records = [], []
        for group_id in request.groups:
            group = self.groups.get(group_id)
            if group is None:
                error: ApiError | None = GroupIdNotFoundError(f"no group {group_id!r}")
            elif group.members:
                error = GroupNotEmptyError(
                    f"group {group_id!r} has {len(group.members)} member(s); stop them first")
            else:
                error = None
                records += self._drop(group)
            results.append(m.GroupResult(group_id=group_id) if error is None else m.GroupResult(
                group_id=group_id, error=error.code, message=error.message))
        response = m.DeleteGroupsResponse(groups=results)
        if not records:
            return response
        last_offset = self._append(records)

        async def complete() -> m.DeleteGroupsResponse:
            await self._offsets.wait_committed(last_offset)
            return response

        return Deferred(complete)

    # -- offsets ------------------------------------------------------------------------------

    def commit(self, request: m.CommitOffsetsRequest):
        group = self.groups.get(request.group_id)
        if not request.group_id:
            raise InvalidGroupIdError("group_id must not be empty")
        if request.member_id:
            member = group.members.get(request.member_id) if group else None
            if member is None:
                raise UnknownMemberIdError(
                    f"member {request.member_id} is not in group {request.group_id} "
                    "(it left or was fenced); rejoin before committing"
                )
            if request.member_epoch > member.epoch:
                raise FencedMemberEpochError(
                    f"member epoch {request.member_epoch} is ahead of the broker's {member.epoch}"
                )
        elif group is not None and group.members:
            raise UnknownMemberIdError(
                f"group {request.group_id} has members; commits must name a member"
            )
        results = []
        records = []
        accepted = []
        stamp = now_ms()
        for item in request.offsets:
            try:
                topic_id = self._check_commit(item)
            except ApiError as error:
                results.append(m.PartitionResult(topic=item.topic, partition=item.partition,
                                                 error=error.code, message=error.message))
                continue
            records.append(_offset_record(request.group_id, item.topic, item.partition,
                                          item.offset, item.metadata, topic_id, stamp))
            accepted.append((item, topic_id))
            results.append(m.PartitionResult(topic=item.topic, partition=item.partition))
        if not records:
            return m.CommitOffsetsResponse(partitions=results)
        last_offset = self._append(records)
        group = self.groups.setdefault(request.group_id, Group(request.group_id, empty_since_ms=stamp))
        for item, topic_id in accepted:
            group.offsets[(item.topic, item.partition)] = (item.offset, item.metadata, topic_id)

        async def complete() -> m.CommitOffsetsResponse:
            await self._offsets.wait_committed(last_offset)
            return m.CommitOffsetsResponse(partitions=results)

        return Deferred(complete)

    def _check_commit(self, item: m.OffsetCommit) -> str:
        """The id of the topic incarnation the commit is for; raises why it can't be taken."""
        if item.offset < 0:
            raise InvalidRequestError(f"offset {item.offset} must be >= 0")
        if len(item.metadata) > MAX_METADATA_CHARS:
            raise InvalidRequestError(f"metadata longer than {MAX_METADATA_CHARS} characters")
        if self._topics.find(item.topic, item.partition) is None:
            raise UnknownTopicOrPartitionError(f"unknown topic or partition {item.topic}[{item.partition}]")
        return self._topics.partition(item.topic, item.partition, item.topic_id).topic_id

    def _append(self, records) -> int:
        return self._offsets.append(ValidatedBatches.parse(build_batch(records))).last_offset

    def fetch_offsets(self, request: m.FetchOffsetsRequest) -> m.FetchOffsetsResponse:
        group = self.groups.get(request.group_id)
        committed = group.offsets if group else {}
        if request.partitions is None:
            wanted = sorted(committed)
        else:
            wanted = [(tp.topic, tp.partition) for tp in request.partitions]
        out = []
        for topic, partition in wanted:
            offset, metadata, topic_id = committed.get((topic, partition), (-1, "", None))
            if topic_id is None:  # no offset: the topic's current id, if there is such a topic
                topic_id = self._topics.topic_id(topic) or ""
            out.append(m.OffsetFetchResult(topic=topic, partition=partition, offset=offset,
                                           metadata=metadata, topic_id=topic_id))
        return m.FetchOffsetsResponse(partitions=out)

    # -- visibility ---------------------------------------------------------------------------

    def list_groups(self, request: m.ListGroupsRequest) -> m.ListGroupsResponse:
        return m.ListGroupsResponse(
            groups=[
                m.GroupListing(group_id=g.group_id, state=g.state, members=len(g.members))
                for g in sorted(self.groups.values(), key=lambda g: g.group_id)
            ]
        )

    def describe_groups(self, request: m.DescribeGroupsRequest) -> m.DescribeGroupsResponse:
        out = []
        for group_id in request.groups:
            group = self.groups.get(group_id)
            if group is None:
                err = GroupIdNotFoundError(f"no group {group_id!r}")
                out.append(m.GroupDescription(group_id=group_id, error=err.code, message=err.message))
                continue
            members = [
                m.MemberDescription(
                    member_id=mem.member_id,
                    client_id=mem.client_id,
                    assignment=_as_topic_partitions(mem.assigned),
                )
                for mem in group.members.values()
            ]
            offsets = []
            for (topic, partition), (offset, _, _) in sorted(group.offsets.items()):
                partition_state = self._topics.find(topic, partition)
                end = partition_state.high_watermark if partition_state else -1
                offsets.append(
                    m.GroupOffset(topic=topic, partition=partition, offset=offset,
                                  log_end_offset=end, lag=max(0, end - offset) if end >= 0 else -1)
                )
            out.append(
                m.GroupDescription(group_id=group_id, state=group.state, epoch=group.epoch,
                                   members=members, offsets=offsets)
            )
        return m.DescribeGroupsResponse(groups=out)


def _offset_record(group_id: str, topic: str, partition: int, offset: int, metadata: str,
                   topic_id: str, stamp: int) -> tuple:
    """The ``__consumer_offsets`` record of one committed offset."""
    key = msgpack.packb([group_id, topic, partition])
    return key, msgpack.packb([offset, metadata, stamp, topic_id]), [], stamp


def _tombstone(group_id: str, topic: str, partition: int, stamp: int) -> tuple:
    """The ``__consumer_offsets`` record that drops one committed offset."""
    return msgpack.packb([group_id, topic, partition]), None, [], stamp


def _as_topic_partitions(tps) -> list[m.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return [m.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]
