"""Consumer-group membership as a client sees it, sans-IO (shared by the trio and blocking
consumers; no sockets, no clocks of its own -- callers pass ``now``).

The broker computes assignments (see docs/GROUPS.md); the client only heartbeats and
reconciles. ``GroupMembership`` keeps:

* ``member_id`` / ``member_epoch``: who we are ("" and 0 until the first answer);
* ``assigned``: what the broker last told us to own;
* ``owned``: what we hold and report in every heartbeat's ``owned``. A partition leaves
  ``owned`` only after the consumer has stopped fetching it, let the application finish the
  records already handed out, committed it (auto-commit) and called ``on_revoke``
  (``released``). The broker gives it to another member only then.
* ``revoking``: partitions being revoked -> the position to commit for each (captured when the
  consumer stopped fetching them), and in ``revoking_ids`` the topic incarnation that position
  belongs to.

Every commit names the topic incarnation (``topic_id``) its positions belong to, so a position
in a topic that was deleted meanwhile is refused by the broker instead of landing in a new
topic of the same name.

``on_heartbeat`` returns a ``Plan``: partitions to start revoking and partitions to take. The
consumer does the I/O (commit, fetch_offsets, callbacks) and reports back with ``took`` and
``released``. ``reset`` (after ``UnknownMemberIdError`` / ``FencedMemberEpochError``) drops
everything and makes the next heartbeat a fresh join.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from sluice.protocol import messages as m
from sluice.protocol.errors import FencedMemberEpochError, UnknownMemberIdError, error_for_code

TopicPartition = tuple[str, int]
DEFAULT_HEARTBEAT_INTERVAL_MS = 500
REJOIN_ERRORS = (UnknownMemberIdError, FencedMemberEpochError)


class Plan(NamedTuple):
    revoke: frozenset[TopicPartition]
    assign: frozenset[TopicPartition]


def as_topic_partitions(tps) -> list[m.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return [m.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]


def from_topic_partitions(items) -> frozenset[TopicPartition]:
    return frozenset((item.topic, p) for item in items or () for p in item.partitions)


def normalize_offsets(offsets) -> dict[TopicPartition, int]:
    """``{(topic, partition): offset}`` (or pairs of those) with checked types."""
    items = offsets.items() if hasattr(offsets, "items") else offsets
    out = {}
    for (topic, partition), offset in items:
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"{topic}[{partition}]: offset must be an int >= 0, got {offset!r}")
        out[(topic, int(partition))] = offset
    return out


async def call_back(callback, partitions: list[TopicPartition]) -> None:
    """Run an ``on_assign`` / ``on_revoke`` callback, sync or async."""
    if callback is None:
        return
    result = callback(partitions)
    if inspect.isawaitable(result):
        await result


def call_back_sync(callback, partitions: list[TopicPartition]) -> None:
    if callback is None:
        return
    if inspect.iscoroutinefunction(callback):
        raise TypeError("the blocking consumer takes plain (non-async) callbacks")
    callback(partitions)


class GroupMembership:
    def __init__(
        self,
        group_id: str,
        topics,
        *,
        session_timeout_ms: int = 10_000,
        auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
    ) -> None:
        if not group_id:
            raise ValueError("group_id must be a non-empty string")
        if not topics:
            raise ValueError("a group consumer needs topics=[...] to subscribe to")
        self.group_id = group_id
        self.topics = sorted(set(topics))
        self.session_timeout_ms = session_timeout_ms
        self.auto_commit = auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.member_id = ""
        self.member_epoch = 0
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_INTERVAL_MS / 1000
        self.joined = False  # a heartbeat was answered since the last (re)join
        self.assigned: frozenset[TopicPartition] = frozenset()
        self.owned: set[TopicPartition] = set()
        self.revoking: dict[TopicPartition, int | None] = {}
        self.revoking_ids: dict[TopicPartition, str] = {}
        self.committed: dict[TopicPartition, int] = {}  # what we last committed
        self.next_heartbeat = 0.0
        self.next_auto_commit = float("inf")

    # -- heartbeats -------------------------------------------------------------------------

    def heartbeat_request(self, now: float) -> m.GroupHeartbeatRequest:
        self.next_heartbeat = now + self.heartbeat_interval_s
        return m.GroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=self.member_epoch,
            session_timeout_ms=self.session_timeout_ms,
            topics=self.topics,
            owned=as_topic_partitions(self.owned),
        )

    def leave_request(self) -> m.GroupHeartbeatRequest | None:
        """The leave heartbeat (``member_epoch=-1``), or None if we never joined."""
        if not self.member_id:
            return None
        return m.GroupHeartbeatRequest(
            group_id=self.group_id, member_id=self.member_id, member_epoch=-1,
            session_timeout_ms=self.session_timeout_ms,
        )

    def on_heartbeat(self, response: m.GroupHeartbeatResponse, now: float) -> Plan:
        if not self.joined and self.auto_commit:
            self.next_auto_commit = now + self.auto_commit_interval_s
        self.joined = True
        self.member_id = response.member_id
        self.member_epoch = response.member_epoch
        if response.heartbeat_interval_ms > 0:
            self.heartbeat_interval_s = response.heartbeat_interval_ms / 1000
            self.next_heartbeat = min(self.next_heartbeat, now + self.heartbeat_interval_s)
        if response.assignment is not None:
            self.assigned = from_topic_partitions(response.assignment)
        return self.plan()

    def plan(self) -> Plan:
        """What to do now: partitions to start revoking, partitions to take."""
        revoke = frozenset(tp for tp in self.owned - self.assigned if tp not in self.revoking)
        assign = frozenset(self.assigned - self.owned)
        return Plan(revoke, assign)

    def start_revoke(self, positions: dict[TopicPartition, int | None], topic_ids: dict[str, str]) -> None:
        """The consumer stopped fetching these; ``positions`` is what to commit for them, in
        the topic incarnations of ``topic_ids``."""
        self.revoking.update(positions)
        self.revoking_ids.update((tp, topic_ids.get(tp[0], "")) for tp in positions)

    def took(self, partitions) -> None:
        self.owned.update(partitions)

    def released(self, partitions) -> None:
        """Revoked partitions are done: the next heartbeat reports them released."""
        for tp in partitions:
            self.owned.discard(tp)
            self.revoking.pop(tp, None)
            self.revoking_ids.pop(tp, None)
        self.next_heartbeat = 0.0  # tell the broker now, so their new owner can start

    def reset(self) -> list[TopicPartition]:
        """Fenced or forgotten by the broker: drop everything, rejoin; the partitions lost."""
        lost = sorted(self.owned)
        self.member_id, self.member_epoch, self.joined = "", 0, False
        self.assigned = frozenset()
        self.owned.clear()
        self.revoking.clear()
        self.revoking_ids.clear()
        self.next_heartbeat = 0.0
        return lost

    # -- offsets ----------------------------------------------------------------------------

    def commit_request(self, offsets: dict[TopicPartition, int], topic_ids: dict[str, str]) -> m.CommitOffsetsRequest:
        """Commit ``offsets``, positions in the topic incarnations of ``topic_ids`` (those of
        partitions being revoked: as captured by ``start_revoke``)."""
        return m.CommitOffsetsRequest(
            group_id=self.group_id, member_id=self.member_id, member_epoch=self.member_epoch,
            offsets=[m.OffsetCommit(topic=t, partition=p, offset=o,
                                    topic_id=self.revoking_ids.get((t, p), topic_ids.get(t, "")))
                     for (t, p), o in sorted(offsets.items())],
        )

    def forget_topic(self, topic: str) -> None:
        """The topic was deleted (and maybe recreated): what we committed for it is gone."""
        self.committed = {tp: o for tp, o in self.committed.items() if tp[0] != topic}

    def on_commit(self, response: m.CommitOffsetsResponse, offsets: dict) -> None:
        """Remember what was committed; raise the first per-partition error."""
        first = None
        for result in response.partitions:
            tp = (result.topic, result.partition)
            if result.error:
                first = first or error_for_code(
                    result.error, result.message or f"commit of {tp[0]}[{tp[1]}] failed")
            elif tp in offsets:
                self.committed[tp] = offsets[tp]
        if first is not None:
            raise first

    def uncommitted(self, positions: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
        """The positions that differ from what we last committed (None: nothing consumed yet)."""
        return {tp: o for tp, o in positions.items()
                if o is not None and self.committed.get(tp) != o}

    def auto_commit_due(self, now: float) -> bool:
        return self.auto_commit and now >= self.next_auto_commit

    def auto_committed(self, now: float) -> None:
        self.next_auto_commit = now + self.auto_commit_interval_s

    def fetch_offsets_request(self, partitions) -> m.FetchOffsetsRequest:
        return m.FetchOffsetsRequest(
            group_id=self.group_id,
            partitions=[m.TopicPartition(topic=t, partition=p) for t, p in sorted(partitions)],
        )

    def on_fetch_offsets(self, response: m.FetchOffsetsResponse) -> dict[TopicPartition, int]:
        """Committed offsets of the partitions that have one."""
        out = {}
        for result in response.partitions:
            if result.error:
                raise error_for_code(result.error, result.message or "fetch_offsets failed")
            if result.offset >= 0:
                out[(result.topic, result.partition)] = result.offset
                self.committed[(result.topic, result.partition)] = result.offset
        return out
