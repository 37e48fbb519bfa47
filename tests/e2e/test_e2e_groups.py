"""Consumer groups against real broker processes: balance, clean and timed-out rebalances
without duplicates, resuming after commits (also across a broker kill -9), two groups, lag."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from functools import partial

import trio
from sluice.client import Admin, Consumer
from sluice.client.sync import Consumer as SyncConsumer

from tests.e2e.conftest import SLUICE
from tests.e2e.group_helpers import Member, create_topic, produce, wait_for
from tests.processes import subprocess_env

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


async def read(consumer, count: int, timeout: float = 10.0) -> list:
    out = []
    with trio.fail_after(timeout):
        async for record in consumer:
            out.append((record.partition, record.offset))
            if len(out) == count:
                break
    return out


def first_offsets(seen) -> dict:
    out = {}
    for partition, offset in seen:
        out.setdefault(partition, offset)
    return out


async def test_restart_resumes_after_commit_also_after_broker_kill(broker):
    bs = broker.bootstrap
    await create_topic(bs, "events", 2)
    await produce(bs, "events", 2, 30)
    options = dict(group_id="r", topics=["events"], auto_offset_reset="earliest", auto_commit=False)
    async with Consumer(bs, **options) as consumer:
        first = await read(consumer, 25)
        await consumer.commit()
        committed = {p: consumer.position("events", p) for p in range(2)}
    assert sum(committed.values()) == 25
    # A restarted member resumes right after the commit: nothing lost, nothing repeated.
    async with Consumer(bs, **options) as consumer:
        second = await read(consumer, 35)
        assert await consumer.committed() == {("events", p): committed[p] for p in range(2)}
        await consumer.commit()
    assert {p: o for p, o in first_offsets(second).items()} == committed
    assert sorted(first + second) == [(p, o) for p in range(2) for o in range(30)]

    # Commit, kill -9 the broker, restart it: a new member continues exactly after the commit.
    await produce(bs, "events", 2, 10, start=30)
    async with Consumer(bs, **options) as consumer:
        third = await read(consumer, 7)
        await consumer.commit()
        committed = {p: consumer.position("events", p) for p in range(2)}
    broker.kill()
    broker.start()
    async with Consumer(bs, **options) as consumer:
        fourth = await read(consumer, 13)
    assert first_offsets(fourth) == {p: o for p, o in committed.items() if o < 40}
    assert sorted(third + fourth) == [(p, o) for p in range(2) for o in range(30, 40)]


async def test_member_rejoins_after_broker_restart(broker):
    """The broker forgets members on restart: a live member rejoins (UnknownMemberIdError) and
    goes on from the committed offsets."""
    bs = broker.bootstrap
    await create_topic(bs, "live", 1)
    await produce(bs, "live", 1, 10)
    async with Consumer(bs, group_id="j", topics=["live"], auto_offset_reset="earliest",
                        auto_commit=False) as consumer:
        assert await read(consumer, 10) == [(0, o) for o in range(10)]
        await consumer.commit()
        before = consumer.member_id
        broker.kill()
        broker.start()
        await wait_for(lambda: consumer.member_id not in ("", before)
                       and consumer.assignment() == [("live", 0)])
        await produce(bs, "live", 1, 5, start=10)
        assert await read(consumer, 5) == [(0, o) for o in range(10, 15)]


async def test_two_groups_each_see_every_record(broker):
    bs = broker.bootstrap
    await create_topic(bs, "shared", 3)
    await produce(bs, "shared", 3, 20)
    seen = {"one": [], "two": []}
    async with trio.open_nursery() as nursery:
        members = [await nursery.start(Member(bs, g, "shared", seen[g]).run) for g in seen]
        await wait_for(lambda: all(len(s) >= 60 for s in seen.values()))
        for m in members:
            m.stop.set()
    everything = {(p, o) for p in range(3) for o in range(20)}
    for s in seen.values():
        assert len(s) == 60 and set(s) == everything


async def test_session_timeout_moves_a_dead_members_partitions(broker):
    bs = broker.bootstrap
    await create_topic(bs, "beats", 4)
    processed: list = []
    worker = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.e2e.group_worker", bs, "hb", "beats", "1500"],
        stdout=subprocess.PIPE, env=subprocess_env(),
    )
    try:
        async with trio.open_nursery() as nursery:
            member = await nursery.start(
                Member(bs, "hb", "beats", processed, session_timeout_ms=1500).run)
            lines = b""
            with trio.fail_after(10):
                while not (lines.endswith(b"assigned 2\n") and len(member.assignment()) == 2):
                    chunk = await worker.stdout.receive_some()
                    assert chunk, "group worker exited"
                    lines += chunk
            worker.kill()  # SIGKILL: no leave, no more heartbeats
            await worker.wait()
            took = await wait_for(lambda: len(member.assignment()) == 4, timeout=6)
            assert took < 1.5 + 1.5  # session timeout, plus a heartbeat and reconcile round
            await produce(bs, "beats", 4, 5)
            await wait_for(lambda: len(processed) == 20)
            member.stop.set()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


async def sluice(*args: str, env, check: bool = True):
    with trio.fail_after(30):
        result = await trio.run_process([*SLUICE, *args], capture_stdout=True,
                                        capture_stderr=True, env=env, check=False)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


async def test_lag_in_admin_and_cli_and_tail_with_group(broker, cli_env):
    bs = broker.bootstrap
    await create_topic(bs, "lagged", 2)
    await produce(bs, "lagged", 2, 10)
    async with Consumer(bs, group_id="lag", topics=["lagged"], auto_commit=False) as consumer:
        await wait_for(lambda: len(consumer.assignment()) == 2)
        await consumer.commit({("lagged", 0): 3, ("lagged", 1): 7})
    async with Admin(bs) as admin:
        info = await admin.describe_group("lag")
        assert [(g.group_id, g.members) for g in await admin.list_groups()] == [("lag", 0)]
    assert [(r.partition, r.committed, r.end_offset, r.lag) for r in info.partitions] == [
        (0, 3, 10, 7), (1, 7, 10, 3)]
    assert info.total_lag == 10 and info.members == []

    described = (await sluice("groups", "describe", "lag", env=cli_env)).stdout.decode()
    rows = [line.split() for line in described.splitlines() if line.startswith("lagged")]
    assert [row[1:5] for row in rows] == [["0", "3", "10", "7"], ["1", "7", "10", "3"]]
    assert "total lag 10" in described
    listed = (await sluice("groups", "list", env=cli_env)).stdout.decode()
    assert listed.splitlines()[1].split() == ["lag", "consumer", "empty", "0"]
    missing = await sluice("groups", "describe", "nope", env=cli_env, check=False)
    assert missing.returncode == 1 and missing.stdout == b""
    assert missing.stderr.decode().count("\n") == 1 and "nope" in missing.stderr.decode()

    # tail --group prints from the committed offsets and commits what it printed.
    tailed = await sluice("tail", "lagged", "--group", "lag", env=cli_env)
    assert sorted(tailed.stdout.splitlines()) == sorted(
        [b"0:%d" % i for i in range(3, 10)] + [b"1:%d" % i for i in range(7, 10)])
    async with Admin(bs) as admin:
        info = await admin.describe_group("lag")
    assert info.total_lag == 0 and [r.committed for r in info.partitions] == [10, 10]
    again = await sluice("tail", "lagged", "--group", "lag", env=cli_env)
    assert again.stdout == b""


async def test_sync_and_async_members_share_a_group(broker):
    bs = broker.bootstrap
    await create_topic(bs, "mix", 4)
    await produce(bs, "mix", 4, 25)
    processed: list = []
    stop = threading.Event()
    sync_owned: list = []

    def sync_member():
        with SyncConsumer(bs, group_id="mixed", topics=["mix"], auto_offset_reset="earliest",
                          session_timeout_ms=3000) as consumer:
            while not stop.is_set():
                for record in consumer.poll(timeout=0.1):
                    processed.append((record.partition, record.offset))
                sync_owned[:] = consumer.assignment()

    async with trio.open_nursery() as nursery:
        member = await nursery.start(Member(bs, "mixed", "mix", processed).run)
        nursery.start_soon(partial(trio.to_thread.run_sync, sync_member, abandon_on_cancel=True))
        await wait_for(lambda: len(sync_owned) == 2 and len(member.assignment()) == 2
                       and len(processed) == 100)
        assert not set(sync_owned) & member.assignment()
        stop.set()  # the sync member leaves cleanly: its partitions move at once
        await wait_for(lambda: len(member.assignment()) == 4, timeout=5)
        await produce(bs, "mix", 4, 25, start=25)
        await wait_for(lambda: len(processed) == 200)
        member.stop.set()
    assert sorted(processed) == [(p, o) for p in range(4) for o in range(50)]
