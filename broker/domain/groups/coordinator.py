"""``GroupCoordinator``: every group of this broker -- its members (of whichever kind) and its
committed offsets -- and their upkeep.

A group exists from its first join or commit (or, at startup, its first offset in the log)
until it is deleted, or has had no members for ``offsets_retention_ms`` (its offsets are then
dropped with it), or has neither members nor offsets once a topic deletion took its last
offsets. Memberships are of one kind per group (``membership.Membership``): Sluice's
server-side assignment (``consumer``) today, Kafka's classic groups with the Kafka listener
(a group without members -- made by a commit, or loaded from the offsets log -- takes the
kind of its first member); committed offsets (``offsets``) are shared by every kind, so a
group is listed and described with its lag whatever protocol its members speak.

Commits: a member's commit is checked against its membership (unknown member, stale epoch);
a commit naming no member is an administrator's (``sluice groups reset-offsets``) and is
taken only while the group has no members. ``commit`` and ``delete_groups`` return at once;
their callers answer after ``wait_durable`` (the offsets log's commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.groups.consumer import ConsumerGroup, Heartbeat, HeartbeatAnswer
from sluice.broker.domain.groups.membership import (
    GroupSummary,
    GroupView,
    Membership,
    OffsetLag,
    TopicPartition,
    not_a_member,
)
from sluice.broker.domain.groups.offsets import Committed, CommittedOffsets, OffsetCommit
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.topics import TopicRegistry
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.errors import (
    ApiError,
    GroupIdNotFoundError,
    GroupNotEmptyError,
    InvalidGroupIdError,
    UnknownMemberIdError,
)

log = logging.getLogger("sluice.groups")

MAX_EXPIRY_SLEEP_S = 60.0


@dataclass(eq=False)
class Group:
    """One group id: its members, and since when it has had none (offsets expire from then)."""

    group_id: str
    membership: Membership
    empty_since_ms: int


@dataclass(frozen=True, slots=True)
class Written:
    """Per-item errors (None: taken) of a commit or deletion, and the offsets log's offset to
    ``wait_durable`` for before answering (None: nothing was written)."""

    errors: list[ApiError | None]
    wait_for: int | None


@dataclass(frozen=True, slots=True)
class OffsetFetched:
    """A group's committed offset of one partition (None: none), and the incarnation it
    belongs to -- with no offset, the topic's current one ("" if there is no such topic)."""

    topic: str
    partition: int
    committed: Committed | None
    topic_id: str


class GroupCoordinator:
    """All groups; sync methods run inline, ``wait_durable`` waits for the offsets log."""

    def __init__(self, topics: TopicRegistry, config: BrokerConfig) -> None:
        self._topics = topics
        self._config = config
        self.offsets = CommittedOffsets(topics)
        now = wall_clock_ms()
        self.groups: dict[str, Group] = {
            group_id: self._new_group(group_id, now) for group_id in self.offsets.groups()
        }
        self._expiry_changed = trio.Event()

    def _new_group(self, group_id: str, now: int) -> Group:
        return Group(group_id, ConsumerGroup(group_id, self._partition_count), now)

    def _partition_count(self, topic: str) -> int:
        info = self._topics.topic(topic)
        return info.config.partitions if info is not None else 0

    # -- server-side assignment (consumer groups) -----------------------------------------------

    def heartbeat(self, group_id: str, beat: Heartbeat) -> HeartbeatAnswer:
        """A member of a consumer group joins, stays or leaves (``ConsumerGroup.heartbeat``)."""
        if not group_id:
            raise InvalidGroupIdError("group_id must not be empty")
        joining = beat.member_epoch == 0 and not beat.member_id
        group = self.groups.get(group_id)
        if group is None:
            if beat.member_epoch == -1:
                return HeartbeatAnswer(beat.member_id, -1)
            if not joining:
                raise not_a_member(beat.member_id, group_id, "; rejoin")
            ConsumerGroup.check_session_timeout(beat.session_timeout_ms)
            group = self.groups[group_id] = self._new_group(group_id, wall_clock_ms())
        had_members = bool(group.membership.members)
        try:
            return group.membership.heartbeat(beat)
        finally:
            self._members_changed(group, had_members)

    def _members_changed(self, group: Group, had_members: bool) -> None:
        if had_members and not group.membership.members:
            group.empty_since_ms = wall_clock_ms()
        self._expiry_changed.set()

    # -- committed offsets (every kind of group) ----------------------------------------------

    def commit(self, group_id: str, member_id: str, member_epoch: int,
               commits: Sequence[OffsetCommit]) -> Written:
        """Check and record ``commits`` (see the module docstring)."""
        if not group_id:
            raise InvalidGroupIdError("group_id must not be empty")
        group = self.groups.get(group_id)
        if member_id:
            if group is None:
                raise not_a_member(member_id, group_id,
                                   " (it left or was fenced); rejoin before committing")
            group.membership.check_commit(member_id, member_epoch)
        elif group is not None and group.membership.members:
            raise UnknownMemberIdError(f"group {group_id} has members; commits must name a member")
        errors: list[ApiError | None] = []
        accepted = []
        for commit in commits:
            try:
                accepted.append((commit, self.offsets.check(commit)))
                errors.append(None)
            except ApiError as error:
                errors.append(error)
        if not accepted:
            return Written(errors, None)
        wait_for = self.offsets.commit(group_id, accepted)
        if group is None:
            self.groups[group_id] = self._new_group(group_id, wall_clock_ms())
        return Written(errors, wait_for)

    async def wait_durable(self, written: Written) -> None:
        """Wait until what ``commit`` or ``delete_groups`` wrote is committed."""
        if written.wait_for is not None:
            await self.offsets.wait_durable(written.wait_for)

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None
    ) -> list[OffsetFetched]:
        """The group's committed offsets of ``partitions`` (None: all it has, sorted)."""
        committed = self.offsets.of(group_id)
        wanted = sorted(committed) if partitions is None else list(partitions)
        out = []
        for topic, partition in wanted:
            found = committed.get((topic, partition))
            topic_id = found.topic_id if found is not None else self._topics.topic_id(topic) or ""
            out.append(OffsetFetched(topic, partition, found, topic_id))
        return out

    # -- visibility -----------------------------------------------------------------------------

    def list_groups(self) -> list[GroupSummary]:
        return [
            GroupSummary(g.group_id, g.membership.kind, g.membership.state, len(g.membership.members))
            for g in sorted(self.groups.values(), key=lambda g: g.group_id)
        ]

    def describe(self, group_id: str) -> GroupView:
        """The group's members and its offsets with their lag (``GroupIdNotFoundError``)."""
        group = self.groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"no group {group_id!r}")
        offsets = []
        for (topic, partition), committed in sorted(self.offsets.of(group_id).items()):
            found = self._topics.find(topic, partition)
            end = found.high_watermark if found is not None else -1
            lag = max(0, end - committed.offset) if end >= 0 else -1
            offsets.append(OffsetLag(topic, partition, committed.offset, end, lag))
        membership = group.membership
        return GroupView(group_id, membership.kind, membership.state, membership.epoch,
                         membership.member_views(), offsets)

    def delete_groups(self, group_ids: Sequence[str]) -> Written:
        """Delete groups without members, and their committed offsets."""
        errors: list[ApiError | None] = []
        wait_for = None
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is None:
                errors.append(GroupIdNotFoundError(f"no group {group_id!r}"))
            elif group.membership.members:
                errors.append(GroupNotEmptyError(
                    f"group {group_id!r} has {len(group.membership.members)} member(s); "
                    "stop them first"))
            else:
                errors.append(None)
                wait_for = self._drop(group) or wait_for
        return Written(errors, wait_for)

    def _drop(self, group: Group) -> int | None:
        del self.groups[group.group_id]
        return self.offsets.drop_group(group.group_id)

    # -- upkeep ---------------------------------------------------------------------------------

    async def run_expiry(self) -> None:
        """Remove members whose session timed out; drop long-empty groups and their offsets."""
        while True:
            deadlines = [d for g in self.groups.values() for d in g.membership.deadlines()]
            self._expiry_changed = trio.Event()
            idle_s = min(MAX_EXPIRY_SLEEP_S, self._config.offsets_retention_ms / 1000)
            with trio.move_on_at(min(deadlines, default=trio.current_time() + idle_s)):
                await self._expiry_changed.wait()
            now = trio.current_time()
            for group in list(self.groups.values()):
                had_members = bool(group.membership.members)
                group.membership.expire(now)
                if had_members and not group.membership.members:
                    group.empty_since_ms = wall_clock_ms()
            self._expire_empty_groups()

    def _expire_empty_groups(self) -> None:
        cutoff = wall_clock_ms() - self._config.offsets_retention_ms
        for group in [g for g in self.groups.values()
                      if not g.membership.members and g.empty_since_ms < cutoff]:
            self._drop(group)

    async def run_compaction(self) -> None:
        await self.offsets.run_compaction()

    # -- TopicListener ----------------------------------------------------------------------------

    def partitions_added(self, partitions: Sequence[Partition]) -> None:
        """Partition counts changed: every group with members is assigned again."""
        self._rebalance_all()

    def topic_deleted(self, name: str) -> None:
        """Forget every group's offsets of the topic, and groups left with nothing; assign
        the others again."""
        self.offsets.topic_deleted(name)
        for group in list(self.groups.values()):
            if not group.membership.members and not self.offsets.of(group.group_id):
                del self.groups[group.group_id]
        self._rebalance_all()

    def _rebalance_all(self) -> None:
        for group in self.groups.values():
            if group.membership.members:
                group.membership.rebalance()
