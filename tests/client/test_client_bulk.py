"""``send_batch``'s bulk path: partition choice, grouping, ordering, byte accounting, and the
bulk delivery result (one wait per batch, metadata in input order).

The bulk planning is the engine's (no I/O): checked on a producer that was never opened, its
batches completed by hand. Deliveries and backpressure are checked with both drivers against
stub brokers (``tests.stub_broker``), whose offsets count from 0 in each partition."""

import pytest
import trio
import trio.testing
from sluice.client import producer_base
from sluice.client.accumulator import Accumulator
from sluice.client.partitioner import partition_for_key
from sluice.client.producer import Producer
from sluice.client.records import RecordMetadata, decode_batches
from sluice.protocol import messages as m
from sluice.protocol.errors import UnknownTopicOrPartitionError

from tests.drivers import DRIVERS, open_client
from tests.stub_broker import StubCluster


def keyed(n, prefix=b"key-"):
    return [(prefix + b"%d" % i, b"value-%d" % i) for i in range(n)]


def producer(partitions=4, **options):
    p = Producer(**options)
    p._partitions["t"] = partitions
    return p


def complete_all(p, error=None):
    """Seal and finish every batch, offsets from 1000 * partition, and wake what waits for
    them as the driver would."""
    p._acc.seal_all()
    next_offset = {}
    for (_, part), queue in p._acc.ready.items():
        while queue:
            batch = queue.popleft()
            base = next_offset.get(part, 1000 * part)
            next_offset[part] = base + len(batch)
            p._state._finish(batch, base, error if part == 1 else None)
    p._completed()
    for done in p.net.completed:
        done.waiter.set()
    p.net.completed.clear()


def contents(p):
    """``{partition: [(key, value, headers), ...]}`` of every batch queued or open, in order."""
    p._acc.seal_all()
    out = {}
    for (topic, part), queue in p._acc.ready.items():
        for batch in queue:
            out.setdefault(part, []).extend(
                (r.key, r.value, r.headers) for r in decode_batches(topic, part, batch.encode(), 0)
            )
    return out


def per_record_partitions(items, partitions):
    """Where ``send`` puts each keyed record (the engine's ``_append``, which both use)."""
    p = producer(partitions)
    return [p._append("t", v, k, None, 0, None)[0].partition for k, v in items]


async def test_keyed_records_go_where_send_puts_them_in_input_order():
    items = keyed(500)
    p = producer(4)
    delivery = await p.send_batch("t", items)
    expected = per_record_partitions(items, 4)
    got = contents(p)
    assert sorted(got) == [0, 1, 2, 3]
    for part in range(4):
        mine = [(k, v, []) for (k, v), q in zip(items, expected, strict=True) if q == part]
        assert got[part] == mine
    assert len(delivery) == 500
    assert len(delivery.segments) == 4  # one per batch
    complete_all(p)
    metadata = await delivery
    assert [md.partition for md in metadata] == expected
    seen = {}
    for md in metadata:  # offsets in input order within each partition
        assert md.offset == seen.get(md.partition, 1000 * md.partition)
        seen[md.partition] = md.offset + 1
    assert all(type(md) is RecordMetadata and md.topic == "t" for md in metadata)


async def test_a_custom_partitioner_is_used_per_key():
    items = keyed(50)
    p = producer(3, partitioner=lambda key, count: len(key) % count)
    delivery = await p.send_batch("t", items)
    complete_all(p)
    assert [md.partition for md in await delivery] == [len(k) % 3 for k, _ in items]


async def test_one_partition_or_an_explicit_partition_keeps_everything_together():
    items = keyed(100)
    single = producer(1)
    delivery = await single.send_batch("t", items)
    assert delivery.order is None and len(delivery.segments) == 1
    assert contents(single) == {0: [(k, v, []) for k, v in items]}
    chosen = producer(4)
    await chosen.send_batch("t", items, partition=2)
    assert contents(chosen) == {2: [(k, v, []) for k, v in items]}
    with pytest.raises(ValueError, match="partitions 0..3"):
        await chosen.send_batch("t", items, partition=4)


async def test_mixed_items_headers_none_keys_and_tombstones():
    items = [
        (b"a", b"1"),
        b"plain",
        (b"b", None, [("h", b"x")]),
        (None, b"keyless"),
        (b"a", b"2", None),
    ]
    p = producer(1)
    delivery = await p.send_batch("t", items, timestamp=77)
    assert contents(p) == {0: [
        (b"a", b"1", []),
        (None, b"plain", []),
        (b"b", None, [("h", b"x")]),
        (None, b"keyless", []),
        (b"a", b"2", []),
    ]}
    # Buffer bytes are accounted exactly as the per-record path does.
    one_by_one = producer(1)
    for item in items:
        key, value, headers = item if type(item) is tuple and len(item) == 3 else (
            (*item, None) if type(item) is tuple else (None, item, None))
        one_by_one.send_nowait("t", value, key=key, headers=headers, timestamp=77)
    assert p._acc.pending_bytes == one_by_one._acc.pending_bytes
    complete_all(p)
    assert [(md.offset, md.timestamp) for md in await delivery] == [(i, 77) for i in range(5)]
    with pytest.raises(ValueError, match="key, value"):
        await p.send_batch("t", [(b"k", b"v", None, b"extra")])


async def test_keyless_tuples_in_a_keyed_batch_take_the_sticky_partition():
    p = producer(4)
    sticky = p._sticky.partition("t", 4)
    items = [(b"k1", b"a"), (None, b"b"), (b"k2", b"c"), (None, b"d")]
    delivery = await p.send_batch("t", items)
    complete_all(p)
    assert [md.partition for md in await delivery] == [
        partition_for_key(b"k1", 4), sticky, partition_for_key(b"k2", 4), sticky,
    ]


def test_bulk_append_makes_the_same_batches_as_one_by_one():
    records = [(b"k%d" % i if i % 5 else None, b"v" * (i % 70) if i % 7 else None,
                [("h", b"%d" % i)] if i % 11 == 0 else None) for i in range(400)]
    records[50] = (b"huge", b"x" * 3000, None)  # bigger than a batch: a batch of its own
    one, bulk = (Accumulator(1000, lambda: 0.0, lambda b: None) for _ in range(2))
    for key, value, headers in records:
        one.append("t", 0, key, value, headers, 5)
    keys, values, headers = (list(column) for column in zip(*records, strict=True))
    segments = bulk.append_values("t", 0, values, 5, keys, headers)
    assert sum(count for _, _, count in segments) == 400
    one.seal_all()
    bulk.seal_all()
    assert [b.encode() for b in one.ready[("t", 0)]] == [b.encode() for b in bulk.ready[("t", 0)]]
    assert one.pending_bytes == bulk.pending_bytes and one.incomplete == bulk.incomplete


async def test_segments_coalesce_per_batch_across_steps(monkeypatch):
    monkeypatch.setattr(producer_base, "BULK_STEP", 7)
    p = producer(1)
    delivery = await p.send_batch("t", [b"v%d" % i for i in range(100)])
    assert [(start, count) for _, start, count in delivery.segments] == [(0, 100)]
    p._acc.seal_all()
    more = await p.send_batch("t", keyed(30))
    assert [(start, count) for _, start, count in more.segments] == [(0, 30)]
    assert more.segments[0][0] is not delivery.segments[0][0]


async def test_bulk_delivery_waits_once_per_pending_batch_and_not_at_all_when_done():
    p = producer(4)
    delivery = await p.send_batch("t", keyed(200))
    results = []

    async def wait():
        results.append(await delivery)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not results and not delivery.done()
        # waiting on the first batch's event (one per batch, not per record)
        assert [batch.waiter is not None for batch, _, _ in delivery.segments] == [
            True, False, False, False]
        complete_all(p)
    assert len(results[0]) == 200 and delivery.done()
    assert await delivery == results[0]
    with trio.CancelScope() as scope:
        scope.cancel()
        await delivery  # already done, but still a checkpoint (trio's rule): cancelled here
    assert scope.cancelled_caught


async def test_a_failed_batch_fails_the_bulk_result():
    p = producer(4)
    items = keyed(200)
    delivery = await p.send_batch("t", items)
    complete_all(p, error=UnknownTopicOrPartitionError("gone"))
    with pytest.raises(UnknownTopicOrPartitionError):
        await delivery


@pytest.fixture
async def stubs(nursery):
    """One stub broker; topic ``t`` has four partitions."""
    cluster = StubCluster()
    await cluster.start(nursery, 1)
    cluster.create("t", [0, 0, 0, 0])
    return cluster


@pytest.mark.parametrize("driver", DRIVERS)
async def test_keyed_bulk_metadata_comes_in_input_order(stubs, driver):
    items = keyed(1000)
    with trio.fail_after(10):
        async with open_client(driver, "producer", stubs.brokers[0].address,
                               batch_bytes=2000) as producer:
            delivery = await producer.send_batch("t", items)
            assert len(delivery) == 1000
            metadata = await producer.result(delivery)
            if producer.blocking:  # also a sequence of per-record handles, in input order
                handles = list(delivery)
                assert [h.result() for h in handles] == metadata
                assert delivery[7].result() == metadata[7]
    assert [md.partition for md in metadata] == per_record_partitions(items, 4)
    seen = {}
    for md in metadata:  # offsets in input order within each partition
        assert md.offset == seen.get(md.partition, 0)
        seen[md.partition] = md.offset + 1
    for part in range(4):
        assert stubs.values("t", part) == [v for (k, v), md in zip(items, metadata, strict=True)
                                           if md.partition == part]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_bulk_respects_the_buffer_budget(stubs, driver, monkeypatch, nursery):
    """Backpressure between steps: with the broker's answers held back, ``send_batch`` stops
    appending at most one step over ``buffer_bytes``, and goes on as answers come."""
    monkeypatch.setattr(producer_base, "BULK_STEP", 10)
    peak = 0
    full, done = trio.Event(), trio.Event()
    sent = []
    with trio.fail_after(10):
        async with open_client(driver, "producer", stubs.brokers[0].address, batch_bytes=500,
                               buffer_bytes=1500) as producer:
            acc = producer.client._acc
            append = acc.append_values

            def watch(*args, **kwargs):
                nonlocal peak
                segments = append(*args, **kwargs)
                peak = max(peak, acc.pending_bytes)
                if peak >= 1500 and not full.is_set():
                    if producer.blocking:  # (in the producer's worker thread)
                        trio.from_thread.run_sync(full.set)
                    else:
                        full.set()
                return segments

            acc.append_values = watch
            stubs.hold(m.ProduceRequest)

            async def send():
                sent.append(await producer.send_batch("t", keyed(300)))
                done.set()

            nursery.start_soon(send)
            await full.wait()
            assert not sent  # it cannot have appended everything: no answer has come
            stubs.release(m.ProduceRequest)
            await done.wait()
            metadata = await producer.result(sent[0])
    assert 1500 <= peak < 1500 + 10 * 40
    assert [md.partition for md in metadata] == per_record_partitions(keyed(300), 4)


async def test_a_loop_of_trio_sends_lets_the_driver_send_and_a_cancelled_send_sends_nothing(
    stubs,
):
    """``await send`` checkpoints once per batch it opens, before queueing the next record: a
    loop that awaits nothing but ``send`` still lets the driver send as it goes (it waited
    for the 32 MiB buffer to fill), and the send that sees the cancellation queued nothing:
    the records delivered are exactly those whose ``send`` returned."""
    sent = []
    with trio.fail_after(10):
        async with Producer(stubs.brokers[0].address, linger_ms=0, batch_bytes=2000) as p:
            await p.partitions_for("t")
            with trio.CancelScope() as scope:
                for i in range(1000):
                    value = b"value-%d" % i
                    await p.send("t", value, partition=0)
                    sent.append(value)
                    if stubs.values("t", 0):  # the broker has some: stop the loop
                        scope.cancel()
            assert scope.cancelled_caught
            await p.flush()
    assert len(sent) < 1000
    assert stubs.values("t", 0) == sent


async def test_the_trio_producer_s_calls_checkpoint_even_when_nothing_waits(stubs):
    """trio's rule for an async call: ``flush``, ``partitions_for`` and ``send_batch`` are
    checkpoints with nothing to wait for, and a cancelled ``send_batch`` queues nothing."""
    with trio.fail_after(10):
        async with Producer(stubs.brokers[0].address) as p:
            await p.partitions_for("t")
            for call in (p.flush, lambda: p.partitions_for("t"),
                         lambda: p.send_batch("t", [b"x"])):
                with trio.testing.assert_checkpoints():
                    await call()
            await p.flush()
            with trio.CancelScope() as scope:
                scope.cancel()
                await p.send_batch("t", [b"y"])
            assert scope.cancelled_caught
            await p.flush()
    assert sorted(v for part in range(4) for v in stubs.values("t", part)) == [b"x"]


async def test_a_send_checks_the_topic_after_its_checkpoint(stubs, monkeypatch):
    """The send after one that opened a batch checkpoints; an answer handled meanwhile may
    make the topic's partition count stale (it was recreated). The send must look it up
    again, not append by a count that is gone (it raised ``KeyError`` in scenario 7's long
    run: a trio producer died in the middle of topic churn)."""
    real_checkpoint = trio.lowlevel.checkpoint
    with trio.fail_after(10):
        async with Producer(stubs.brokers[0].address, linger_ms=60_000) as p:
            await p.partitions_for("t")
            await p.send("t", b"first", partition=0)  # opens a batch

            async def checkpoint_as_the_topic_goes_stale():
                monkeypatch.setattr(trio.lowlevel, "checkpoint", real_checkpoint)
                p._partitions.pop("t")  # as _forget_stale_counts does
                await real_checkpoint()

            monkeypatch.setattr(trio.lowlevel, "checkpoint", checkpoint_as_the_topic_goes_stale)
            await p.send("t", b"second", partition=0)
            assert "t" in p._partitions
            await p.flush()
    assert stubs.values("t", 0) == [b"first", b"second"]
