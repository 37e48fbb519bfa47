"""What every kind of group membership offers the coordinator (``Membership``), and the
views of groups it hands out.

Two kinds of group share one namespace of group ids and one store of committed offsets:
``consumer`` groups (server-side assignment, ``consumer.ConsumerGroup``: Sluice's protocol)
and, with the Kafka listener, ``classic`` groups (client-side assignment: JoinGroup,
SyncGroup, Heartbeat, LeaveGroup, opaque assignment bytes, generations). The coordinator
treats a group's members through this interface only, so both kinds are listed, described
(with lag), expired and deleted alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sluice.protocol.errors import UnknownMemberIdError

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as listings show it: who, and the partitions it is assigned."""

    member_id: str
    client_id: str
    assignment: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class OffsetLag:
    """A committed offset, the partition's high watermark, and how far behind it is (-1:
    the partition is gone)."""

    topic: str
    partition: int
    offset: int
    log_end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: str
    kind: str
    state: str
    members: int


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as ``describe`` shows it."""

    group_id: str
    kind: str
    state: str
    epoch: int  # the group epoch (consumer) or generation (classic)
    members: list[MemberView]
    offsets: list[OffsetLag]


class Membership(Protocol):
    """One group's members, of one kind.

    ``epoch`` is the group's epoch or generation; ``members`` maps member ids to members."""

    kind: str
    epoch: int

    @property
    def members(self) -> dict: ...
    @property
    def state(self) -> str: ...

    def member_views(self) -> list[MemberView]: ...

    def deadlines(self) -> Iterable[float]:
        """When each member's session runs out (``trio.current_time`` clock)."""

    def expire(self, now: float) -> None:
        """Remove the members whose session ran out by ``now``."""

    def rebalance(self) -> None:
        """Partition counts changed: assign again (or make the members rejoin)."""

    def check_commit(self, member_id: str, member_epoch: int) -> None:
        """Raise ``UnknownMemberIdError`` or the kind's fencing error unless a commit from
        ``member_id`` at ``member_epoch`` may be taken."""


def not_a_member(member_id: str, group_id: str, what_next: str) -> UnknownMemberIdError:
    return UnknownMemberIdError(f"member {member_id} is not in group {group_id}{what_next}")
