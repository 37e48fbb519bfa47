"""``ClassicGroup``: one group's members under Kafka's classic group protocol -- client-side
assignment through JoinGroup, SyncGroup, Heartbeat and LeaveGroup.

The broker never reads what members say to each other: each member joins with its protocols
(name and opaque metadata, in its order of preference), the broker picks one protocol every
member supports, makes one member the leader and hands it every member's metadata; the
leader computes the assignment and sends it in its SyncGroup; the broker passes each member
its share as opaque bytes (``Assignment.data``; ``partitions`` is what the adapter could
read of it, for listings).

Phases (Kafka's ``GroupCoordinator``):

* ``empty``: no members (committed offsets may remain).
* ``preparing_rebalance``: a member joined, changed its protocols, left or expired. Every
  member must join again (an existing member learns so from its next heartbeat or SyncGroup:
  ``RebalanceInProgressError``). The round completes once every known member has a JoinGroup
  waiting, or when the rebalance timeout (the members' largest) runs out -- members that did
  not rejoin by then are removed.
* ``completing_rebalance``: the generation went up; the join answers went out (the leader's
  with every member's metadata); SyncGroups wait for the leader's. Members that have not sent
  theirs within the rebalance timeout are removed, and the group rebalances again.
* ``stable``: the leader's assignment is in; SyncGroups are answered at once.

Invariants: the generation only grows; a member waiting for a JoinGroup or SyncGroup answer
is kept alive (its connection is busy with that request), any other member expires once its
session timeout passes without a request from it; every waiting answer is eventually given
(with the round's result, or with the error that ended it).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio
from sluice.broker.domain.groups.membership import MemberView, TopicPartition, not_a_member
from sluice.protocol.errors import (
    ApiError,
    FencedMemberEpochError,
    InvalidGroupIdError,
    InvalidRequestError,
)

log = logging.getLogger("sluice.groups")

KIND = "classic"
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 1_800_000  # Kafka's group.max.session.timeout.ms

EMPTY = "empty"
PREPARING_REBALANCE = "preparing_rebalance"
COMPLETING_REBALANCE = "completing_rebalance"
STABLE = "stable"


class RebalanceInProgressError(FencedMemberEpochError):
    """The group is rebalancing: join it again. (Kafka: REBALANCE_IN_PROGRESS; a Sluice
    client, which cannot be in a classic group, would see a fenced epoch and rejoin.)"""


class InconsistentGroupProtocolError(InvalidGroupIdError):
    """The member's protocol type or protocols do not match the group's members', or the
    group id is taken by members of the other kind. (Kafka: INCONSISTENT_GROUP_PROTOCOL.)"""


class InvalidSessionTimeoutError(InvalidRequestError):
    """A session timeout outside what the coordinator allows. (Kafka: INVALID_SESSION_TIMEOUT.)"""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a JoinGroup asks: ``member_id`` "" for a new member; ``protocols`` are
    ``(name, metadata)`` in the member's order of preference."""

    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """A JoinGroup's answer. ``members`` -- ``(member id, group instance id, metadata of the
    chosen protocol)`` each -- is given to the leader only."""

    generation: int
    protocol_name: str
    leader: str
    member_id: str
    members: tuple[tuple[str, str | None, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Assignment:
    """A member's share of the leader's assignment: the bytes the leader sent for it, and the
    partitions they name where the adapter could read them (listings show those)."""

    data: bytes = b""
    partitions: frozenset[TopicPartition] = frozenset()


NO_ASSIGNMENT = Assignment()
T = TypeVar("T")


class Reply(Generic[T]):
    """An answer given later: set once (a value or an ``ApiError``), awaited with ``wait``."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: ApiError | None = None

    @classmethod
    def of(cls, value: T) -> Reply[T]:
        reply = cls()
        reply.set(value)
        return reply

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        if not self.done:
            self._value = value
            self._done.set()

    def fail(self, error: ApiError) -> None:
        if not self.done:
            self._error = error
            self._done.set()

    def get(self) -> T:
        """The value of a reply already given (``done``); raises its error."""
        if not self.done:
            raise RuntimeError("the reply is not given yet")
        if self._error is not None:
            raise self._error
        return self._value

    async def wait(self) -> T:
        await self._done.wait()
        return self.get()


@dataclass(eq=False)
class ClassicMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]
    deadline: float
    assignment: Assignment = NO_ASSIGNMENT
    joining: Reply[Joined] | None = None  # a JoinGroup waiting for the round to complete
    syncing: Reply[Assignment] | None = None  # a SyncGroup waiting for the leader's
    synced: bool = False  # sent its SyncGroup in this generation

    @property
    def awaiting(self) -> bool:
        """Waiting for an answer: its connection is busy with it, so it is kept alive."""
        return self.joining is not None or self.syncing is not None

    def metadata(self, protocol: str) -> bytes:
        return next(data for name, data in self.protocols if name == protocol)

    def touch(self) -> None:
        self.deadline = trio.current_time() + self.session_timeout_ms / 1000


@dataclass(eq=False)
class ClassicGroup:
    """The members of one classic group and the round they are in (see the module doc)."""

    group_id: str
    generation: int = 0
    phase: str = EMPTY
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, ClassicMember] = field(default_factory=dict)
    round_deadline: float = math.inf  # the rebalance timeout of the current phase

    kind = KIND

    # -- Membership ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.generation

    @property
    def state(self) -> str:
        return self.phase

    def member_views(self) -> list[MemberView]:
        return [MemberView(m.member_id, m.client_id, m.assignment.partitions)
                for m in self.members.values()]

    def deadlines(self) -> Iterable[float]:
        yield self.round_deadline
        yield from (m.deadline for m in self.members.values() if not m.awaiting)

    def expire(self, now: float) -> None:
        for member in [m for m in self.members.values() if not m.awaiting and m.deadline <= now]:
            self._remove(member, "timed out of")
        if self.round_deadline <= now:
            if self.phase == PREPARING_REBALANCE:
                self._complete_join()
            elif self.phase == COMPLETING_REBALANCE:
                late = [m for m in self.members.values() if not m.synced]
                for member in late:
                    self._remove(member, "did not sync in time with")

    def rebalance(self) -> None:
        """Partition counts changed: nothing to do here -- the leader, which assigns, sees the
        change in its metadata and rejoins (as with Kafka)."""

    def check_commit(self, member_id: str, member_epoch: int) -> None:
        member = self._member(member_id, " (it left or was fenced); rejoin before committing")
        if self.phase == COMPLETING_REBALANCE:
            raise RebalanceInProgressError(
                f"group {self.group_id} is completing a rebalance; commit after SyncGroup")
        if member_epoch != self.generation:
            raise FencedMemberEpochError(
                f"generation {member_epoch} is not group {self.group_id}'s {self.generation}")
        member.touch()

    # -- the classic protocol ----------------------------------------------------------------

    @staticmethod
    def check_session_timeout(timeout_ms: int) -> None:
        if not MIN_SESSION_TIMEOUT_MS <= timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            raise InvalidSessionTimeoutError(
                f"session_timeout_ms must be in [{MIN_SESSION_TIMEOUT_MS}, "
                f"{MAX_SESSION_TIMEOUT_MS}], got {timeout_ms}")

    def join(self, request: JoinRequest) -> Reply[Joined]:
        """A JoinGroup: its answer, now or once the round completes. Raises
        ``InvalidSessionTimeoutError``, ``InconsistentGroupProtocolError`` or (an unknown
        ``member_id``) ``UnknownMemberIdError``."""
        self.check_session_timeout(request.session_timeout_ms)
        known = self._member(request.member_id, "; join without a member id") \
            if request.member_id else None
        self._admit_protocols(request)
        if known is None:
            member = ClassicMember(
                member_id=f"{request.client_id or 'member'}-{uuid.uuid4()}",
                group_instance_id=request.group_instance_id, client_id=request.client_id,
                client_host=request.client_host, session_timeout_ms=request.session_timeout_ms,
                rebalance_timeout_ms=_rebalance_timeout(request), protocols=request.protocols,
                deadline=math.inf,
            )
            self.members[member.member_id] = member
            log.info("member %s joined group %s", member.member_id, self.group_id)
            return self._await_round(member, "a member joined")
        member = known
        changed = member.protocols != request.protocols
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = _rebalance_timeout(request)
        member.client_id, member.client_host = request.client_id, request.client_host
        if self.phase in (STABLE, COMPLETING_REBALANCE) and not changed and (
                self.phase == COMPLETING_REBALANCE or member.member_id != self.leader):
            # It has this generation already (its answer was lost, or it checks in): say it
            # again rather than make everybody rejoin.
            member.touch()
            return Reply.of(self._joined(member))
        return self._await_round(member, "a member rejoined" if not changed
                                 else "a member changed its protocols")

    def sync(self, member_id: str, generation: int,
             assignments: Mapping[str, Assignment] | None) -> Reply[Assignment]:
        """A SyncGroup: the member's assignment, now or once the leader's arrives.
        ``assignments`` is the leader's (None or empty from the others). Raises
        ``UnknownMemberIdError``, ``FencedMemberEpochError`` (another generation) or
        ``RebalanceInProgressError``."""
        member = self._member(member_id, "; rejoin")
        if generation != self.generation:
            raise FencedMemberEpochError(
                f"generation {generation} is not group {self.group_id}'s {self.generation}")
        if self.phase == PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {self.group_id} is rebalancing; rejoin")
        member.touch()
        if self.phase == STABLE:
            return Reply.of(member.assignment)
        if member.syncing is not None:  # a repeated SyncGroup replaces the one waiting
            member.syncing.fail(RebalanceInProgressError("replaced by a newer SyncGroup"))
        member.syncing = reply = Reply()
        member.synced = True
        if member_id == self.leader:
            for other in self.members.values():
                other.assignment = (assignments or {}).get(other.member_id, NO_ASSIGNMENT)
            self.phase = STABLE
            self.round_deadline = math.inf
            log.info("group %s is stable at generation %d with %d member(s)", self.group_id,
                     self.generation, len(self.members))
            for other in self.members.values():
                if other.syncing is not None:
                    other.syncing.set(other.assignment)
                    other.syncing = None
                    other.touch()
        return reply

    def heartbeat(self, member_id: str, generation: int) -> None:
        """A Heartbeat: returns if all is well; else raises ``UnknownMemberIdError``,
        ``FencedMemberEpochError`` or ``RebalanceInProgressError`` (rejoin)."""
        member = self._member(member_id, "; rejoin")
        if generation != self.generation:
            raise FencedMemberEpochError(
                f"generation {generation} is not group {self.group_id}'s {self.generation}")
        member.touch()
        if self.phase == PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {self.group_id} is rebalancing; rejoin")

    def leave(self, member_id: str) -> None:
        """A LeaveGroup: the member goes and the others rebalance (``UnknownMemberIdError``
        if it is not a member)."""
        self._remove(self._member(member_id, ""), "left")

    def fail_waiting(self, error: ApiError) -> None:
        """Answer every waiting JoinGroup and SyncGroup with ``error`` (the broker stops)."""
        for member in self.members.values():
            for reply in (member.joining, member.syncing):
                if reply is not None:
                    reply.fail(error)
            member.joining = member.syncing = None
            member.touch()

    # -- rounds ---------------------------------------------------------------------------------

    def _member(self, member_id: str, what_next: str) -> ClassicMember:
        member = self.members.get(member_id)
        if member is None:
            raise not_a_member(member_id, self.group_id, what_next)
        return member

    def _admit_protocols(self, request: JoinRequest) -> None:
        """Refuse a JoinGroup whose protocols the other members cannot share; the first
        member sets the group's protocol type."""
        if not request.protocol_type or not request.protocols:
            raise InconsistentGroupProtocolError("a JoinGroup must name a protocol type and "
                                                 "at least one protocol")
        others = [m for m in self.members.values() if m.member_id != request.member_id]
        if not others:
            self.protocol_type = request.protocol_type
            return
        if request.protocol_type != self.protocol_type:
            raise InconsistentGroupProtocolError(
                f"group {self.group_id} uses protocol type {self.protocol_type!r}, not "
                f"{request.protocol_type!r}")
        if not _common_protocols([*others, request]):
            raise InconsistentGroupProtocolError(
                f"no protocol of {[name for name, _ in request.protocols]} is supported by "
                f"every member of group {self.group_id}")

    def _await_round(self, member: ClassicMember, reason: str) -> Reply[Joined]:
        if member.joining is not None:  # a repeated JoinGroup replaces the one waiting
            member.joining.fail(RebalanceInProgressError("replaced by a newer JoinGroup"))
        member.joining = reply = Reply()
        self._prepare_rebalance(reason)
        if all(m.joining is not None for m in self.members.values()):
            self._complete_join()
        return reply

    def _prepare_rebalance(self, reason: str) -> None:
        """Start a round (if none is under way): every member must join again."""
        if self.phase == PREPARING_REBALANCE:
            return
        for member in self.members.values():
            if member.syncing is not None:
                member.syncing.fail(RebalanceInProgressError(
                    f"group {self.group_id} is rebalancing ({reason}); rejoin"))
                member.syncing = None
                member.touch()
            member.assignment = NO_ASSIGNMENT
            member.synced = False
        self.phase = PREPARING_REBALANCE
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self.round_deadline = trio.current_time() + timeout_ms / 1000
        log.info("group %s is rebalancing: %s", self.group_id, reason)

    def _complete_join(self) -> None:
        """End the join phase: drop members that did not rejoin, start the next generation,
        answer every waiting JoinGroup."""
        for member in [m for m in self.members.values() if m.joining is None]:
            del self.members[member.member_id]
            log.info("member %s did not rejoin group %s in time", member.member_id, self.group_id)
        self.generation += 1
        if not self.members:
            self.phase, self.protocol_type, self.protocol_name, self.leader = EMPTY, None, None, None
            self.round_deadline = math.inf
            return
        self.protocol_name = _choose_protocol(list(self.members.values()))
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.phase = COMPLETING_REBALANCE
        timeout_ms = max(m.rebalance_timeout_ms for m in self.members.values())
        self.round_deadline = trio.current_time() + timeout_ms / 1000
        for member in self.members.values():
            member.joining.set(self._joined(member))
            member.joining = None
            member.touch()

    def _joined(self, member: ClassicMember) -> Joined:
        members = ()
        if member.member_id == self.leader:
            members = tuple((m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                            for m in self.members.values())
        return Joined(self.generation, self.protocol_name, self.leader, member.member_id, members)

    def _remove(self, member: ClassicMember, reason: str) -> None:
        del self.members[member.member_id]
        log.info("member %s %s group %s", member.member_id, reason, self.group_id)
        gone = not_a_member(member.member_id, self.group_id, f" ({reason} it)")
        for reply in (member.joining, member.syncing):
            if reply is not None:
                reply.fail(gone)
        if self.leader == member.member_id:
            self.leader = None
        if self.phase == PREPARING_REBALANCE:
            if all(m.joining is not None for m in self.members.values()):
                self._complete_join()
        elif self.members:
            self._prepare_rebalance(f"member {member.member_id} {reason} it")
        else:
            self._complete_join()  # nobody left: the group is empty, in a new generation


def _rebalance_timeout(request: JoinRequest) -> int:
    """JoinGroup v0 has no rebalance timeout: the session timeout serves (as in Kafka)."""
    if request.rebalance_timeout_ms > 0:
        return request.rebalance_timeout_ms
    return request.session_timeout_ms


def _common_protocols(members: Sequence[ClassicMember | JoinRequest]) -> set[str]:
    common = None
    for member in members:
        names = {name for name, _ in member.protocols}
        common = names if common is None else common & names
    return common or set()


def _choose_protocol(members: Sequence[ClassicMember]) -> str:
    """The protocol every member supports that most members prefer (each votes for its first
    choice among them; a tie goes to the leader's -- here, the first member's -- preference)."""
    common = _common_protocols(members)
    votes = Counter(next(name for name, _ in m.protocols if name in common) for m in members)
    first = [name for name, _ in members[0].protocols if name in common]
    return max(first, key=lambda name: (votes[name], -first.index(name)))
