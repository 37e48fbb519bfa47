"""Consumer groups: memberships of each kind, the committed offsets they share, and the
coordinator over both (see ``coordinator``)."""

from sluice.broker.domain.groups.consumer import Heartbeat, HeartbeatAnswer
from sluice.broker.domain.groups.coordinator import GroupCoordinator, OffsetFetched, Written
from sluice.broker.domain.groups.membership import GroupSummary, GroupView, MemberView, OffsetLag
from sluice.broker.domain.groups.offsets import OFFSETS_TOPIC, Committed, OffsetCommit

__all__ = [
    "OFFSETS_TOPIC",
    "Committed",
    "GroupCoordinator",
    "GroupSummary",
    "GroupView",
    "Heartbeat",
    "HeartbeatAnswer",
    "MemberView",
    "OffsetCommit",
    "OffsetFetched",
    "OffsetLag",
    "Written",
]
