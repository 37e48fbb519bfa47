"""Scenario 7: a topic deleted and created again, over and over, under live clients.

Producers (two trio ``Producer``s and a blocking one, idempotent, ``acks="all"``) write to the
topic without pause; two consumers follow it (trio and blocking, ``topics=``, earliest) and two
trio members of one group consume it with auto-commit. Meanwhile the topic is deleted and created
again with 1-4 partitions, sometimes staying deleted for a moment. Promised, checked on the last
incarnation of the topic (the earlier ones are deleted, with everything acknowledged to them):
every record acknowledged to it is there exactly once, at the offset it was acknowledged at, and
nothing else is (nothing of an earlier incarnation leaks into it); offsets are dense from 0;
every client recovers by itself -- no record fails with anything but "that topic was deleted"
(``UnknownTopicIdError`` / ``UnknownTopicOrPartitionError``), each producer gets records
acknowledged by the last incarnation, both consumers and the group read all of it, and the
group's committed offsets are within it.

Which incarnation a record was acknowledged by is the producer's own record of where it sent the
batch (``batch.topic_id``; the broker refuses a batch meant for another incarnation).
"""

from __future__ import annotations

import random
import threading
import time
from functools import partial

import pytest
import trio
from sluice.client import Admin, Consumer, Producer
from sluice.client.errors import UnknownTopicIdError, UnknownTopicOrPartitionError
from sluice.client.sync import Consumer as SyncConsumer
from sluice.client.sync import Producer as SyncProducer
from sluice.protocol import messages as m

from tests.broker.conftest import RawClient, read_records
from tests.torture.harness import MODES, Broker, record

TOPIC = "phoenix"
GROUP = "watchers"
GONE = (UnknownTopicIdError, UnknownTopicOrPartitionError)
SCALE = {
    "quick": dict(recreates=3, gap=(0.8, 1.5), absent=(0.0, 0.3), seconds=60),
    "long": dict(recreates=20, gap=(0.5, 2.5), absent=(0.0, 1.0), seconds=300),
}


class Ledger:
    """What the clients were told and what they read (appended to from threads too)."""

    def __init__(self) -> None:
        self.acked: list[tuple[bytes, str, int, int]] = []  # value, topic id, partition, offset
        self.gone: list[bytes] = []  # failed: the topic they were meant for was deleted
        self.unexpected: list[str] = []  # any other failure
        self.read: dict[str, set[bytes]] = {}  # reader -> values

    def outcome(self, value: bytes, batch, error: BaseException | None, metadata=None) -> None:
        if error is None:
            self.acked.append((value, batch.topic_id, metadata.partition, metadata.offset))
        elif isinstance(error, GONE):
            self.gone.append(value)
        else:
            self.unexpected.append(f"{value!r}: {error!r}")


async def trio_producer(stop: trio.Event, bootstrap: str, name: str, ledger: Ledger) -> None:
    async with Producer(bootstrap, acks="all", linger_ms=2, client_id=name) as producer:
        pending = []

        async def settle(keep: int) -> None:
            while len(pending) > keep:
                value, handle = pending.pop(0)
                try:
                    ledger.outcome(value, handle.batch, None, await handle)
                except Exception as exc:
                    ledger.outcome(value, handle.batch, exc)

        seq = 0
        while not stop.is_set():
            value = b"%s-%07d" % (name.encode(), seq)
            seq += 1
            try:
                pending.append((value, await producer.send(TOPIC, value)))
            except GONE:  # the lookup found no such topic: it is deleted right now
                ledger.gone.append(value)
                await trio.sleep(0.01)  # pace the retries while it is away
            if len(pending) >= 200:
                await settle(100)
        await settle(0)


def sync_producer(stop: threading.Event, bootstrap: str, ledger: Ledger) -> None:
    with SyncProducer(bootstrap, acks="all", linger_ms=2, client_id="sync") as producer:
        pending = []
        seq = 0

        def settle() -> None:
            for value, handle in pending:
                try:
                    ledger.outcome(value, handle.batch, None, handle.result())
                except Exception as exc:
                    ledger.outcome(value, handle.batch, exc)
            pending.clear()

        while not stop.is_set():
            value = b"sync-%07d" % seq
            seq += 1
            try:
                pending.append((value, producer.send(TOPIC, value)))
            except GONE:
                ledger.gone.append(value)
                time.sleep(0.01)
            if len(pending) >= 100:
                settle()
        settle()


async def trio_reader(stop: trio.Event, bootstrap: str, name: str, ledger: Ledger, **options) -> None:
    seen = ledger.read.setdefault(name, set())

    async def consume(consumer) -> None:
        async for batch in consumer.batches():
            seen.update(r.value for r in batch)

    try:
        async with Consumer(bootstrap, topics=[TOPIC], auto_offset_reset="earliest",
                            auto_commit_interval_ms=200, client_id=name, **options) as consumer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume, consumer)
                await stop.wait()
                nursery.cancel_scope.cancel()
    except Exception as exc:
        ledger.unexpected.append(f"reader {name}: {exc!r}")


def sync_reader(stop: threading.Event, bootstrap: str, ledger: Ledger) -> None:
    seen = ledger.read.setdefault("sync", set())
    try:
        with SyncConsumer(bootstrap, topics=[TOPIC], auto_offset_reset="earliest",
                          fetch_max_wait_ms=100, client_id="sync-reader") as consumer:
            while not stop.is_set():
                seen.update(r.value for r in consumer.poll(timeout=0.2))
    except Exception as exc:
        ledger.unexpected.append(f"reader sync: {exc!r}")


async def final_contents(port: int) -> tuple[str, dict[int, list[tuple[int, bytes]]], list]:
    async with await RawClient.connect(port) as client:
        meta = (await client.request(m.MetadataRequest(topics=[TOPIC]))).topics[0]
        logs = {p.partition: await read_records(client, TOPIC, p.partition) for p in meta.partitions}
        committed = (await client.request(m.FetchOffsetsRequest(group_id=GROUP))).partitions
    return meta.topic_id, logs, committed


async def churn(bootstrap: str, broker: Broker, ledger: Ledger, ids: list, scale: dict,
                rng: random.Random, reader_thread_stop: threading.Event,
                producer_thread_stop: threading.Event) -> None:
    """The clients run while the topic is deleted and recreated ``scale["recreates"]`` times;
    returns once every reader has read the last incarnation whole."""
    with trio.fail_after(scale["seconds"] + 120):
        stop_readers = trio.Event()
        async with trio.open_nursery() as readers:
            readers.start_soon(trio_reader, stop_readers, bootstrap, "reader", ledger)
            for name in ("member-1", "member-2"):
                readers.start_soon(partial(trio_reader, stop_readers, bootstrap, name, ledger,
                                           group_id=GROUP))
            readers.start_soon(partial(trio.to_thread.run_sync, sync_reader, reader_thread_stop,
                                       bootstrap, ledger, abandon_on_cancel=True))
            stop_producers = trio.Event()
            async with trio.open_nursery() as producers:
                for name in ("a", "b"):
                    producers.start_soon(trio_producer, stop_producers, bootstrap, name, ledger)
                producers.start_soon(partial(trio.to_thread.run_sync, sync_producer,
                                             producer_thread_stop, bootstrap, ledger,
                                             abandon_on_cancel=True))
                async with Admin(bootstrap) as admin:
                    for _ in range(scale["recreates"]):
                        await trio.sleep(rng.uniform(*scale["gap"]))
                        await admin.delete_topic(TOPIC)
                        await trio.sleep(rng.uniform(*scale["absent"]))  # deleted a while
                        await admin.create_topic(TOPIC, rng.randint(1, 4))
                        ids.append((await admin.describe_topic(TOPIC)).topic_id)
                await trio.sleep(1.0)  # the last incarnation gets written for a while
                stop_producers.set()
                producer_thread_stop.set()
            _, logs, _ = await final_contents(broker.port)
            final = {v for records in logs.values() for _, v in records}
            while not (final <= ledger.read["reader"] and final <= ledger.read["sync"]
                       and final <= ledger.read["member-1"] | ledger.read["member-2"]):
                await trio.sleep(0.1)  # the readers catch up (or the deadline fails the test)
            stop_readers.set()
            reader_thread_stop.set()


@pytest.mark.parametrize("mode", MODES)
async def test_delete_and_recreate_under_live_clients(tmp_path, mode):
    scale = SCALE[mode]
    rng = random.Random(77)
    broker = Broker(tmp_path)
    broker.start()
    bootstrap = broker.bootstrap
    ledger = Ledger()
    started = time.monotonic()
    ids = []
    try:
        async with Admin(bootstrap) as admin:
            await admin.create_topic(TOPIC, 3)
            ids.append((await admin.describe_topic(TOPIC)).topic_id)
        # The blocking clients' threads stop when these are set; a failure (the deadline
        # included) sets them too, or the nurseries would wait for the threads forever.
        reader_thread_stop, producer_thread_stop = threading.Event(), threading.Event()
        try:
            await churn(bootstrap, broker, ledger, ids, scale, rng,
                        reader_thread_stop, producer_thread_stop)
        finally:
            reader_thread_stop.set()
            producer_thread_stop.set()
        final_id, logs, committed = await final_contents(broker.port)
        assert final_id == ids[-1] and len(set(ids)) == len(ids)
        stored = {(p, o): v for p, records in logs.items() for o, v in records}
        values = list(stored.values())
        acked_here = [(v, p, o) for v, tid, p, o in ledger.acked if tid == final_id]
        acked_before = {v for v, tid, _, _ in ledger.acked if tid != final_id}
        lost = [(v, p, o) for v, p, o in acked_here if stored.get((p, o)) != v]
        duplicated = len(values) - len(set(values))
        strays = set(values) - {v for v, _, _ in acked_here}
        leaked = set(values) & acked_before
        ends = {p: len(records) for p, records in logs.items()}
        by_producer = {name: sum(v.startswith(name.encode() + b"-") for v, _, _ in acked_here)
                       for name in ("a", "b", "sync")}
        record(f"7-topic-recreate-{mode}", recreates=len(ids) - 1, acked=len(ledger.acked),
               acked_to_last=len(acked_here), failed_topic_gone=len(ledger.gone),
               lost=len(lost), duplicated=duplicated, strays=len(strays), leaked=len(leaked),
               last_partitions=len(logs), seconds=round(time.monotonic() - started, 1))
        assert not ledger.unexpected, ledger.unexpected[:5]
        assert (len(lost), duplicated, len(strays), len(leaked)) == (0, 0, 0, 0), (lost[:5], strays)
        for records in logs.values():
            assert [o for o, _ in records] == list(range(len(records)))
        assert all(by_producer.values()), by_producer
        final = set(values)
        assert final <= ledger.read["reader"] and final <= ledger.read["sync"]
        assert final <= ledger.read["member-1"] | ledger.read["member-2"]
        for result in committed:
            assert result.topic == TOPIC and result.partition in ends
            assert 0 <= result.offset <= ends[result.partition], (result, ends)
    finally:
        code = broker.stop()
    assert code == 0
