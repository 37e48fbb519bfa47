"""``ConsumerGroup``: one group's members under server-side assignment (Sluice's own group
protocol; Kafka's KIP-848 model).

Members only heartbeat with their subscription and the partitions they own; the group
computes assignments (``assignor``: balanced and sticky) and reconciles members
incrementally:

* **Revoke before reassign.** A member is told its *target* minus anything another member still
  reports owning. The old owner is told its smaller target, finishes and commits, reports the
  partition released in its next heartbeat, and only then does the new owner receive it -- so
  no partition ever has two owners.
* **Epochs.** The group epoch bumps on every membership or subscription change; a member's
  epoch becomes the group epoch whenever its assignment changes. A heartbeat with an epoch
  newer than the broker's, or a commit from a member the group does not know, gets a named
  error (``FencedMemberEpochError`` / ``UnknownMemberIdError``).
* **Expiry.** A member that misses its session timeout is removed and its partitions move.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio
from sluice.broker.domain.groups.assignor import assign
from sluice.broker.domain.groups.membership import MemberView, TopicPartition, not_a_member
from sluice.protocol.errors import FencedMemberEpochError, InvalidRequestError

log = logging.getLogger("sluice.groups")

KIND = "consumer"
HEARTBEAT_INTERVAL_MS = 500
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 300_000


@dataclass(eq=False)
class Member:
    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    deadline: float
    epoch: int = 0
    owned: frozenset[TopicPartition] = frozenset()
    assigned: frozenset[TopicPartition] = frozenset()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a heartbeat asks of the group."""

    member_id: str  # "" to join
    member_epoch: int  # 0 to join, -1 to leave
    client_id: str = ""
    topics: frozenset[str] | None = None  # the subscription; None: unchanged
    session_timeout_ms: int = 0
    owned: frozenset[TopicPartition] | None = None  # None: unchanged


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """The member's id and epoch, and what it owns now (None after leaving)."""

    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int = 0
    assignment: frozenset[TopicPartition] | None = None


@dataclass(eq=False)
class ConsumerGroup:
    """The members of one group and their targets. ``partition_counts`` tells how many
    partitions a topic has (0 for none): the assignor's input."""

    group_id: str
    partition_counts: Callable[[str], int]
    epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)

    kind = KIND

    @property
    def state(self) -> str:
        if not self.members:
            return "empty"
        settled = all(mem.assigned == self.target.get(mid, frozenset()) and mem.owned == mem.assigned
                      for mid, mem in self.members.items())
        return "stable" if settled else "reconciling"

    def member_views(self) -> list[MemberView]:
        return [MemberView(mem.member_id, mem.client_id, mem.assigned)
                for mem in self.members.values()]

    def deadlines(self) -> Iterable[float]:
        return (mem.deadline for mem in self.members.values())

    def heartbeat(self, beat: Heartbeat) -> HeartbeatAnswer:
        """Join, stay or leave; raises ``UnknownMemberIdError``, ``FencedMemberEpochError``
        or (a join with a bad session timeout) ``InvalidRequestError``."""
        if beat.member_epoch == -1:
            self.remove(beat.member_id, reason="left")
            return HeartbeatAnswer(beat.member_id, -1)
        if beat.member_epoch == 0 and not beat.member_id:
            member = self._join(beat)
        else:
            member = self.members.get(beat.member_id)
            if member is None:
                raise not_a_member(beat.member_id, self.group_id, "; rejoin")
            if beat.member_epoch > member.epoch:
                raise FencedMemberEpochError(
                    f"member epoch {beat.member_epoch} is ahead of the broker's {member.epoch}"
                )
            if beat.topics is not None and beat.topics != member.topics:
                member.topics = beat.topics
                self.rebalance()
        member.deadline = trio.current_time() + member.session_timeout_ms / 1000
        if beat.owned is not None:
            member.owned = beat.owned
        self._reconcile(member)
        return HeartbeatAnswer(member.member_id, member.epoch, HEARTBEAT_INTERVAL_MS,
                               member.assigned)

    @staticmethod
    def check_session_timeout(timeout: int) -> None:
        if not MIN_SESSION_TIMEOUT_MS <= timeout <= MAX_SESSION_TIMEOUT_MS:
            raise InvalidRequestError(
                f"session_timeout_ms must be in [{MIN_SESSION_TIMEOUT_MS}, "
                f"{MAX_SESSION_TIMEOUT_MS}], got {timeout}"
            )

    def _join(self, beat: Heartbeat) -> Member:
        self.check_session_timeout(beat.session_timeout_ms)
        member = Member(
            member_id=uuid.uuid4().hex,
            client_id=beat.client_id,
            topics=beat.topics or frozenset(),
            session_timeout_ms=beat.session_timeout_ms,
            deadline=trio.current_time() + beat.session_timeout_ms / 1000,
        )
        self.members[member.member_id] = member
        log.info("member %s joined group %s", member.member_id, self.group_id)
        self.rebalance()
        return member

    def check_commit(self, member_id: str, member_epoch: int) -> None:
        """A commit from ``member_id`` at ``member_epoch`` may be taken (else raises)."""
        member = self.members.get(member_id)
        if member is None:
            raise not_a_member(member_id, self.group_id,
                               " (it left or was fenced); rejoin before committing")
        if member_epoch > member.epoch:
            raise FencedMemberEpochError(
                f"member epoch {member_epoch} is ahead of the broker's {member.epoch}"
            )

    def remove(self, member_id: str, *, reason: str) -> bool:
        """Remove a member (True if it was one) and rebalance the rest."""
        if self.members.pop(member_id, None) is None:
            return False
        log.info("member %s %s group %s", member_id, reason, self.group_id)
        self.rebalance()
        return True

    def expire(self, now: float) -> None:
        """Remove the members whose session timed out by ``now``."""
        for member in [m for m in self.members.values() if m.deadline <= now]:
            self.remove(member.member_id, reason="timed out of")

    def rebalance(self) -> None:
        """Membership, subscriptions or partition counts changed: new targets, new epoch."""
        self.epoch += 1
        counts = {topic: self.partition_counts(topic)
                  for member in self.members.values() for topic in member.topics}
        self.target = assign(
            {mid: mem.topics for mid, mem in self.members.items()},
            counts,
            {mid: mem.assigned for mid, mem in self.members.items()},
        )

    def _reconcile(self, member: Member) -> None:
        """Give the member its target minus what others still own (revoke before assign)."""
        owned_by_others = set()
        for other_id, other in self.members.items():
            if other_id != member.member_id:
                owned_by_others |= other.owned | other.assigned
        current = frozenset(self.target.get(member.member_id, frozenset()) - owned_by_others)
        if current != member.assigned:
            member.assigned = current
            member.epoch = self.epoch
