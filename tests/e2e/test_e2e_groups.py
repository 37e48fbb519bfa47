"""Consumer groups against real broker processes: balance, clean and timed-out rebalances
without duplicates, resuming after commits (also across a broker kill -9), two groups, lag."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import trio

from client import Admin, Consumer
from tests.e2e.group_helpers import Member, create_topic, produce, wait_for

PARTS = 6
PER_PART = 50


def owned_counts(members) -> list[int]:
    return sorted(len(m.assignment()) for m in members)


def assert_disjoint(members) -> None:
    sets = [m.assignment() for m in members]
    assert sum(map(len, sets)) == len(set().union(*sets))


async def test_three_members_balance_rebalance_without_duplicates(broker):
    bs = broker.bootstrap
    await create_topic(bs, "orders", PARTS)
    await produce(bs, "orders", PARTS, PER_PART)
    processed: list = []
    async with trio.open_nursery() as nursery:
        a = await nursery.start(Member(bs, "g", "orders", processed, mode="record").run)
        b = await nursery.start(Member(bs, "g", "orders", processed, mode="batch").run)
        c = await nursery.start(Member(bs, "g", "orders", processed, mode="batch").run)
        members = [a, b, c]
        await wait_for(lambda: owned_counts(members) == [2, 2, 2] and len(processed) == PARTS * PER_PART)
        assert_disjoint(members)
        assert set().union(*(m.assignment() for m in members)) == {("orders", p) for p in range(PARTS)}

        # c leaves cleanly: its partitions move to a and b at once (well within the session).
        c.stop.set()
        await c.closed.wait()
        moved = await wait_for(lambda: owned_counts([a, b]) == [3, 3], timeout=5)
        assert moved < 3
        await produce(bs, "orders", PARTS, PER_PART, start=PER_PART)
        await wait_for(lambda: len(processed) == 2 * PARTS * PER_PART)

        # c returns while records keep arriving: balance is restored, partitions are
        # revoked from a and b mid-stream.
        c2 = Member(bs, "g", "orders", processed, mode="record")
        async with trio.open_nursery() as inner:
            inner.start_soon(produce, bs, "orders", PARTS, PER_PART, 2 * PER_PART)
            await nursery.start(c2.run)
        members = [a, b, c2]
        await wait_for(lambda: owned_counts(members) == [2, 2, 2])
        assert_disjoint(members)
        await wait_for(lambda: len(processed) >= 3 * PARTS * PER_PART)
        for m in members:
            m.stop.set()
    counts = Counter(processed)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    assert not duplicates
    assert set(counts) == {(p, o) for p in range(PARTS) for o in range(3 * PER_PART)}
    async with Admin(bs) as admin:
        info = await admin.describe_group("g")
    assert info.total_lag == 0
    assert {(p.partition, p.committed) for p in info.partitions} == {
        (p, 3 * PER_PART) for p in range(PARTS)
    }
