"""Sticky, balanced assignment of partitions to group members (pure function, no state).

Given each member's subscription and the previous assignment, compute a new one such that:

* every partition of a subscribed topic goes to exactly one member subscribed to its topic;
* counts are balanced: with ``n`` partitions and ``k`` members eligible for them, nobody gets
  more than ``ceil(n / k)`` while another eligible member has fewer than ``floor(n / k)``;
* sticky: a member keeps the partitions it had, up to its share, so a rebalance moves only
  what must move (the partitions of a member that left, or a newcomer's share).

Partition counts are per topic; members are ordered by id so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping

TopicPartition = tuple[str, int]


def assign(
    subscriptions: Mapping[str, frozenset[str]],
    partition_counts: Mapping[str, int],
    previous: Mapping[str, frozenset[TopicPartition]],
) -> dict[str, frozenset[TopicPartition]]:
    """member id -> the partitions it should own."""
    members = sorted(subscriptions)
    result: dict[str, set[TopicPartition]] = {member: set() for member in members}
    if not members:
        return {}
    wanted = sorted(
        (topic, p)
        for topic in set().union(*subscriptions.values())
        for p in range(partition_counts.get(topic, 0))
    )
    eligible = {tp: [m for m in members if tp[0] in subscriptions[m]] for tp in wanted}
    floor_share = _floor_shares(members, eligible)
    previous_owner = {tp: m for m, tps in previous.items() for tp in tps if m in result}
    # Pass 1 (sticky): everyone keeps what it had, up to its floor share.
    leftover = []
    for tp in wanted:
        member = previous_owner.get(tp)
        if member is not None and member in eligible[tp] and len(result[member]) < floor_share[member]:
            result[member].add(tp)
        else:
            leftover.append(tp)
    # Pass 2 (balance): the rest go to the least-loaded eligible member; among equals, the
    # previous owner keeps it.
    for tp in leftover:
        candidates = eligible[tp]
        if candidates:
            was = previous_owner.get(tp)
            best = min(candidates, key=lambda m: (len(result[m]), m != was, m))
            result[best].add(tp)
    return {member: frozenset(tps) for member, tps in result.items()}


def _floor_shares(members: list[str], eligible: Mapping[TopicPartition, list[str]]) -> dict[str, int]:
    """Each member's floor share: partitions split evenly among the members eligible for them.

    With a common subscription this is ``n // k`` for everybody.
    """
    load = {m: 0.0 for m in members}
    for candidates in eligible.values():
        for m in candidates:
            load[m] += 1 / len(candidates)
    return {m: int(load[m] + 1e-9) for m in members}
