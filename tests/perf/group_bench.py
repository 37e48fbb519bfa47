"""Consumer-group benchmark against a real broker process (started here, in a temp dir).

    python tests/perf/group_bench.py            # 10 rebalance rounds, 5 s of commits
    python tests/perf/group_bench.py --quick    # 2 rounds, 1 s

Figures:
* rebalance on leave: 3 members on a 6-partition topic with records flowing to every
  partition; one member closes cleanly (commit, leave) -> seconds until the other members have
  consumed a record from every partition it had.
* rebalance on join: the member comes back -> seconds until it consumes from 2 partitions.
* commit throughput: one consumer calling ``commit()`` (2 partitions; each call is one
  fsync'd, acknowledged commit) back to back; also 8 consumers in 8 groups at once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sluice.client import Admin, Consumer, Producer  # noqa: E402

from tests.processes import BrokerProcess  # noqa: E402

PARTS = 6


async def keep_producing(bootstrap: str, topic: str) -> None:
    async with Producer(bootstrap, acks=1, linger_ms=1) as producer:
        while True:
            for p in range(PARTS):
                await producer.send(topic, b"x", partition=p)
            await trio.sleep(0.002)


class Tracker:
    """Who consumed what, when (trio clock)."""

    def __init__(self) -> None:
        self.last_seen: dict[tuple[str, int], tuple[str, float]] = {}


async def member(bootstrap: str, name: str, tracker: Tracker, stop: trio.Event,
                 task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with Consumer(bootstrap, group_id="bench", topics=["bench"],
                        auto_offset_reset="latest") as consumer:
        task_status.started(consumer)
        with trio.CancelScope() as scope:
            async def watch():
                await stop.wait()
                scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                async for batch in consumer.batches():
                    tp = (batch[0].topic, batch[0].partition)
                    tracker.last_seen[tp] = (name, trio.current_time())


async def wait_until(condition, timeout=30.0) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.001)
    return trio.current_time() - start


async def rebalance_rounds(bootstrap: str, rounds: int) -> tuple[list[float], list[float]]:
    tracker = Tracker()
    leaves, joins = [], []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_producing, bootstrap, "bench")
        stops = {n: trio.Event() for n in "ab"}
        consumers = {n: await nursery.start(member, bootstrap, n, tracker, stops[n]) for n in "ab"}
        for _ in range(rounds):
            stops["c"] = trio.Event()
            t0 = trio.current_time()
            consumers["c"] = await nursery.start(member, bootstrap, "c", tracker, stops["c"])
            joins.append(await wait_until(lambda t0=t0: sum(
                1 for who, at in tracker.last_seen.values() if who == "c" and at > t0) == 2))
            await wait_until(lambda: sorted(len(c.assignment()) for c in consumers.values()) == [2, 2, 2])
            await trio.sleep(0.2)  # steady state before the leave
            theirs = set(consumers["c"].assignment())
            t0 = trio.current_time()
            stops["c"].set()
            leaves.append(await wait_until(lambda t0=t0, theirs=theirs: all(
                tracker.last_seen.get(tp, ("", 0))[0] in "ab" and tracker.last_seen[tp][1] > t0
                for tp in theirs)))
        for stop in stops.values():
            stop.set()
        nursery.cancel_scope.cancel()
    return leaves, joins


async def commit_rate(bootstrap: str, seconds: float, consumers: int) -> float:
    count = 0

    async def one(i: int) -> None:
        nonlocal count
        async with Consumer(bootstrap, group_id=f"commits-{i}", topics=["commits"],
                            auto_commit=False, auto_offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                while len(consumer.assignment()) < 2:
                    await trio.sleep(0.01)
            deadline = trio.current_time() + seconds
            n = 0
            while trio.current_time() < deadline:
                await consumer.commit({("commits", 0): n, ("commits", 1): n})
                n += 1
            count += n

    async with trio.open_nursery() as nursery:
        for i in range(consumers):
            nursery.start_soon(one, i)
    return count / seconds


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"


async def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", Path(tmp) / "broker.log")
        broker.start()
        try:
            async with Admin(broker.bootstrap) as admin:
                await admin.create_topic("bench", PARTS)
                await admin.create_topic("commits", 2)
            one = await commit_rate(broker.bootstrap, args.seconds, 1)
            many = await commit_rate(broker.bootstrap, args.seconds, 8)
            leaves, joins = await rebalance_rounds(broker.bootstrap, args.rounds)
        finally:
            broker.stop()
    print(f"rebalance on clean leave (-> partitions consumed by others): {summary(leaves)}")
    print(f"rebalance on join (-> newcomer consumes its 2 partitions):   {summary(joins)}")
    print(f"commit throughput, 1 consumer, commit() back to back: {one:,.0f} commits/s")
    print(f"commit throughput, 8 consumers at once:               {many:,.0f} commits/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 1.0
    trio.run(run, args)


if __name__ == "__main__":
    main()
