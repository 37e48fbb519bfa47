"""Records cross process boundaries intact: produced by one process, consumed by another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.partitioner import partition_for_key

from tests.e2e.workers import expected_record
from tests.processes import subprocess_env

WORKER = str(Path(__file__).with_name("workers.py"))


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic(name, partitions)


async def consume_all(bootstrap: str, topic: str, count: int) -> dict[int, list]:
    """Every record of ``topic`` until ``count`` have arrived, per partition."""
    by_partition: dict[int, list] = {}
    seen = 0
    async with Consumer(bootstrap, topics=[topic], auto_offset_reset="earliest") as consumer:
        async for batch in consumer.batches():
            for record in batch:
                by_partition.setdefault(record.partition, []).append(record)
            seen += len(batch)
            if seen >= count:
                break
    return by_partition


def check_exactly_once_in_order(by_partition: dict[int, list], count: int) -> None:
    """Offsets dense from 0, record numbers increasing per partition, all ``count`` present."""
    numbers = []
    for records in by_partition.values():
        assert [r.offset for r in records] == list(range(len(records)))
        seqs = [int(dict(r.headers).get("seq", b"-1")) if r.headers else None for r in records]
        known = [s for s in seqs if s is not None]
        assert known == sorted(known)
        for r in records:
            i = r.timestamp - expected_record(0)[3]
            key, value, headers, ts = expected_record(i)
            assert (r.key, r.value, r.headers, r.timestamp) == (key, value, headers, ts)
            numbers.append(i)
    assert sorted(numbers) == list(range(count)), "gaps or duplicates"


def run_worker(bootstrap: str, topic: str, count: int, acks: str = "1") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, bootstrap, topic, str(count), acks],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(),
    )


async def test_records_cross_processes_byte_for_byte(broker):
    await create_topic(broker.bootstrap, "orders", 3)
    worker = run_worker(broker.bootstrap, "orders", 3000)
    with trio.fail_after(30):
        out, err = await trio.to_thread.run_sync(worker.communicate)
    assert worker.returncode == 0, err.decode()
    with trio.fail_after(30):
        by_partition = await consume_all(broker.bootstrap, "orders", 3000)
    check_exactly_once_in_order(by_partition, 3000)


async def test_broker_killed_mid_produce_no_loss_no_duplicates(broker):
    await create_topic(broker.bootstrap, "durable", 2)
    total = 6000
    worker = run_worker(broker.bootstrap, "durable", total, acks="all")
    with trio.fail_after(60):
        line = b""
        while not line.startswith(b"progress") or int(line.split()[1]) < 1500:
            line = await trio.to_thread.run_sync(worker.stdout.readline)
            assert line, worker.stderr.read().decode()
        broker.kill()
        broker.start()  # same port, same data dir
        rest, err = await trio.to_thread.run_sync(worker.communicate)
    assert worker.returncode == 0, err.decode()
    assert rest.splitlines()[-1] == b"done"
    with trio.fail_after(30):
        by_partition = await consume_all(broker.bootstrap, "durable", total)
    check_exactly_once_in_order(by_partition, total)


async def test_keyed_records_same_partition_across_processes(broker):
    await create_topic(broker.bootstrap, "keyed", 4)
    workers = [run_worker(broker.bootstrap, "keyed", 600) for _ in range(2)]
    with trio.fail_after(30):
        for worker in workers:
            _, err = await trio.to_thread.run_sync(worker.communicate)
            assert worker.returncode == 0, err.decode()
        by_partition = await consume_all(broker.bootstrap, "keyed", 1200)
    partitions_of: dict[bytes, set[int]] = {}
    for partition, records in by_partition.items():
        for r in records:
            partitions_of.setdefault(r.key, set()).add(partition)
    assert len(partitions_of) == 97
    for key, partitions in partitions_of.items():
        assert partitions == {partition_for_key(key, 4)}
