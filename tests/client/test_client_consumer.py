"""The ``Consumer`` of both drivers against an in-process broker: fetching, long polls, seeks,
errors, closing. (A few races between trio tasks are the trio driver's alone.)"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.client.admin import Admin
from sluice.client.consumer import PREFETCH_CHUNKS, Consumer
from sluice.client.errors import ClientClosedError, NoOffsetError
from sluice.client.producer import Producer
from sluice.protocol import messages as m
from sluice.protocol.errors import BrokerShuttingDownError, InvalidRequestError

from tests.drivers import DRIVERS, open_client
from tests.stub_broker import StubCluster

TOPIC = "events"
TP = (TOPIC, 0)
WAIT_S = 10  # bound on anything that could hang; never reached when the consumer works


@pytest.fixture
async def bootstrap(nursery, tmp_path):
    """A broker on 127.0.0.1:<ephemeral port> with an empty one-partition topic ``TOPIC``."""
    config = BrokerConfig(port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)
    handle = await nursery.start(partial(serve, config))
    address = f"127.0.0.1:{handle.port}"
    async with Admin(address) as admin:
        await admin.create_topic(TOPIC, 1)
    yield address
    handle.shutdown()


@asynccontextmanager
async def assigned(bootstrap: str, reset: str, driver: str = "trio", **options):
    """A consumer of ``TP`` with the given ``auto_offset_reset`` (closed on leaving)."""
    async with open_client(driver, "consumer", bootstrap, auto_offset_reset=reset,
                           **options) as consumer:
        await consumer.assign([TP])
        yield consumer


async def produce(bootstrap: str, *batches: list[bytes], timestamps=None) -> list[int]:
    """Write each list of values as its own flush (one batch each: the linger outlasts the
    test, so only ``flush`` seals a batch); their offsets."""
    offsets = []
    async with Producer(bootstrap, linger_ms=60_000) as producer:
        for batch in batches:
            handles = []
            for value in batch:
                ts = None if timestamps is None else timestamps[len(offsets) + len(handles)]
                handles.append(await producer.send(TOPIC, value, partition=0, timestamp=ts))
            await producer.flush()
            offsets += [(await h).offset for h in handles]
    return offsets


def values(start: int, stop: int) -> list[bytes]:
    return [b"v%d" % i for i in range(start, stop)]


async def take(consumer, count: int) -> list[tuple[int, bytes]]:
    """The next ``count`` records as ``(offset, value)``, via ``getmany``."""
    out: list[tuple[int, bytes]] = []
    with trio.fail_after(WAIT_S):
        while len(out) < count:
            out += [(r.offset, r.value) for r in await consumer.getmany()]
    assert len(out) == count, out
    return out


async def known_position(consumer) -> int:
    """``position()`` once the consumer has looked it up: the trio one's fetch task does it
    (wait for tasks, never sleep), the blocking one inside a poll (none comes here)."""
    with trio.fail_after(WAIT_S):
        while await consumer.position(*TP) is None:
            if consumer.blocking:
                assert await consumer.poll(0.05) == []
            else:
                await trio.testing.wait_all_tasks_blocked()
    return await consumer.position(*TP)


def expected(start: int, stop: int) -> list[tuple[int, bytes]]:
    return [(i, b"v%d" % i) for i in range(start, stop)]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_reads_everything_from_earliest(bootstrap, driver):
    offsets = await produce(bootstrap, values(0, 10), values(10, 20), values(20, 30))
    assert offsets == list(range(30))
    async with assigned(bootstrap, "earliest", driver) as consumer:
        got = []
        with trio.fail_after(WAIT_S):
            async for record in consumer:
                assert (record.topic, record.partition) == TP
                got.append((record.offset, record.value))
                if len(got) == 30:
                    break
        assert got == expected(0, 30)
        assert await consumer.position(*TP) == 30


@pytest.mark.parametrize("driver", DRIVERS)
async def test_topics_option_assigns_every_partition(bootstrap, driver):
    await produce(bootstrap, values(0, 3))
    async with open_client(driver, "consumer", bootstrap, topics=TOPIC,
                           auto_offset_reset="earliest") as consumer:
        assert await consumer.assignment() == [TP]
        assert await take(consumer, 3) == expected(0, 3)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_long_poll_is_woken_by_a_new_record(bootstrap, driver):
    # A long poll far longer than WAIT_S: only the broker's wake-up can return the record.
    async with assigned(bootstrap, "earliest", driver, fetch_max_wait_ms=60_000) as consumer:
        got = []

        async def poll():
            got.extend(await take(consumer, 1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()  # getmany waits on a long poll
            assert not got
            assert await produce(bootstrap, [b"late"]) == [0]
        assert got == [(0, b"late")]
        assert await consumer.position(*TP) == 1

        # Again, with the partition read to its end.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert await produce(bootstrap, [b"later"]) == [1]
        assert got == [(0, b"late"), (1, b"later")]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_seek_back_rereads_from_that_offset(bootstrap, driver):
    await produce(bootstrap, values(0, 10))
    async with assigned(bootstrap, "earliest", driver) as consumer:
        assert await take(consumer, 10) == expected(0, 10)
        await consumer.seek(TOPIC, 0, 4)
        assert await consumer.position(*TP) == 4
        assert await take(consumer, 6) == expected(4, 10)
        assert await consumer.position(*TP) == 10


@pytest.mark.parametrize("driver", DRIVERS)
async def test_seek_mid_chunk_drops_the_unread_and_prefetched(bootstrap, driver):
    await produce(bootstrap, values(0, 5), values(5, 10), values(10, 15))
    async with assigned(bootstrap, "earliest", driver, partition_max_bytes=1) as consumer:
        got = []
        with trio.fail_after(WAIT_S):
            async for record in consumer:
                got.append((record.offset, record.value))
                if len(got) == 2:
                    break
        assert got == expected(0, 2)
        assert await consumer.position(*TP) == 2  # inside the first chunk (offsets 0..4)
        await trio.testing.wait_all_tasks_blocked()  # (trio) the next chunks are fetched ahead
        await consumer.seek(TOPIC, 0, 12)
        assert await take(consumer, 3) == expected(12, 15)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_seek_to_end_returns_only_newer_records(bootstrap, driver):
    await produce(bootstrap, values(0, 10))
    async with assigned(bootstrap, "earliest", driver) as consumer:
        await consumer.seek_to_end()
        assert await known_position(consumer) == 10
        await produce(bootstrap, values(10, 13))
        assert await take(consumer, 3) == expected(10, 13)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_seek_to_beginning_restarts_at_zero(bootstrap, driver):
    await produce(bootstrap, values(0, 8))
    async with assigned(bootstrap, "latest", driver) as consumer:
        assert await known_position(consumer) == 8
        await consumer.seek_to_beginning(TP)
        assert await take(consumer, 8) == expected(0, 8)
        assert await consumer.position(*TP) == 8


@pytest.mark.parametrize("driver", DRIVERS)
async def test_seek_to_time_and_offsets_for_times(bootstrap, driver):
    stamps = [1_000 + 10 * i for i in range(10)]  # batches: 1000..1040, 1050..1090
    await produce(bootstrap, values(0, 5), values(5, 10), timestamps=stamps)
    async with assigned(bootstrap, "earliest", driver) as consumer:
        # Batch granularity (docs/STORAGE.md): (base offset, max timestamp) of the first
        # batch whose max timestamp is >= the one asked for.
        assert await consumer.offsets_for_times({TP: 1_045}) == {TP: (5, 1_090)}
        assert await consumer.offsets_for_times({TP: 1_000}) == {TP: (0, 1_040)}
        assert await consumer.offsets_for_times({TP: 5_000}) == {TP: None}
        await consumer.seek_to_time(1_045)
        assert await take(consumer, 5) == expected(5, 10)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_out_of_range_offset_resets_to_earliest(bootstrap, driver):
    await produce(bootstrap, values(0, 6))
    async with assigned(bootstrap, "earliest", driver) as consumer:
        await consumer.seek(TOPIC, 0, 100)  # past the log end (6): the broker says out of range
        assert await take(consumer, 6) == expected(0, 6)
        assert await consumer.position(*TP) == 6


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("start", [None, 100], ids=["no-position", "out-of-range"])
async def test_reset_error_raises_until_a_seek(bootstrap, start, driver):
    await produce(bootstrap, values(0, 6))
    async with assigned(bootstrap, "error", driver) as consumer:
        if start is not None:
            await consumer.seek(TOPIC, 0, start)  # past the log end (6): out of range
        for _ in range(2):  # raised again until a position changes, not a hang the 2nd time
            with trio.fail_after(WAIT_S), pytest.raises(NoOffsetError):
                await consumer.getmany()
        assert await consumer.position(*TP) is None
        await consumer.seek(TOPIC, 0, 3)
        assert await take(consumer, 3) == expected(3, 6)


async def test_an_error_for_positions_changed_since_is_not_raised(bootstrap):
    """(trio: the fetch task queues the error while the application is elsewhere.)"""
    await produce(bootstrap, values(0, 4))
    async with assigned(bootstrap, "error") as consumer:
        await trio.testing.wait_all_tasks_blocked()  # NoOffsetError is queued for getmany...
        await consumer.seek(TOPIC, 0, 1)  # ...but the position it was about exists now
        assert await take(consumer, 3) == expected(1, 4)


async def test_an_error_answered_just_before_a_seek_is_not_raised(bootstrap):
    """(trio) The fetch answer carrying the error and the application's seek come in the
    same turn of the scheduler, before anything else runs: the error belongs to the old
    positions."""
    await produce(bootstrap, values(0, 6))
    async with Consumer(bootstrap, auto_offset_reset="error") as consumer:
        answered = consumer._fetched
        errors = []

        def answered_then_seek(node, generation, response, error):
            answered(node, generation, response, error)
            queued = [item for _, item in consumer._ready if isinstance(item, Exception)]
            if queued and not errors:
                errors.append(queued[0])
                consumer.seek(TOPIC, 0, 1)  # the application, before its task runs

        consumer._fetched = answered_then_seek
        consumer.assign([TP])
        consumer.seek(TOPIC, 0, 100)  # past the end: NoOffsetError (reset policy "error")
        assert await take(consumer, 5) == expected(1, 6)
        assert len(errors) == 1 and isinstance(errors[0], NoOffsetError)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_seek_while_prefetched_chunks_wait_is_not_lost(bootstrap, driver):
    await produce(bootstrap, *[values(i, i + 1) for i in range(6)])
    async with assigned(bootstrap, "earliest", driver, partition_max_bytes=1) as consumer:
        if not consumer.blocking:
            await trio.testing.wait_all_tasks_blocked()
            assert len(consumer.client._ready) == PREFETCH_CHUNKS  # fetched ahead; room waits
        else:
            assert await take(consumer, 1) == expected(0, 1)  # (the next fetch went with it)
        await consumer.seek_to_beginning()  # needs a lookup, not a fetch: it used to be lost
        assert await take(consumer, 6) == expected(0, 6)


@pytest.fixture
async def stub(nursery):
    """A stub broker (``tests.stub_broker``) with ``TOPIC``, holding ``values(0, 3)``."""
    cluster = StubCluster()
    await cluster.start(nursery, 1)
    cluster.create(TOPIC, [0])
    from sluice.protocol.batch import build_batch

    cluster.append(TP, build_batch([(None, v, [], 1_700_000_000_000) for v in values(0, 3)]))
    return cluster


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("error", [BrokerShuttingDownError, InvalidRequestError])
async def test_a_fetch_error_is_retried_if_retriable_and_raised_if_not(stub, driver, error):
    """Top-level fetch errors were once ignored by the blocking consumer: it fetched again,
    forever, for an error that cannot go away."""
    stub.inject(m.FetchRequest, error("injected"))
    async with assigned(stub.brokers[0].address, "earliest", driver) as consumer:
        with trio.fail_after(WAIT_S):
            if error.retriable:
                assert await take(consumer, 3) == expected(0, 3)
            else:
                with pytest.raises(error, match="injected"):
                    await take(consumer, 3)
    assert not stub.faults[m.FetchRequest]  # it was answered with the error


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_retriable_offset_lookup_error_is_retried(stub, driver):
    stub.inject(m.ListOffsetsRequest, BrokerShuttingDownError("injected"))
    async with assigned(stub.brokers[0].address, "earliest", driver) as consumer:
        assert await take(consumer, 3) == expected(0, 3)
    assert not stub.faults[m.ListOffsetsRequest]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_consuming_goes_on_across_a_broker_restart(nursery, tmp_path, driver):
    """An orderly restart on the same port: fetches in flight meet a lost connection or
    ``BrokerShuttingDownError``; both are retried, and no record is lost or repeated."""
    def config(port: int) -> BrokerConfig:
        # No Kafka listener: its port would be port + 1 on the restart, which another
        # process's ephemeral socket may hold (a CI run failed on that once).
        return BrokerConfig(port=port, data_dir=tmp_path / "data", shutdown_grace_s=2.0,
                            kafka=False)

    stopped = trio.Event()

    async def broker(cfg, task_status=trio.TASK_STATUS_IGNORED):
        try:
            await serve(cfg, task_status=task_status)
        finally:
            stopped.set()

    handle = await nursery.start(broker, config(0))
    address = f"127.0.0.1:{handle.port}"
    async with Admin(address) as admin:
        await admin.create_topic(TOPIC, 1)
    await produce(address, values(0, 3))
    async with assigned(address, "earliest", driver, fetch_max_wait_ms=100) as consumer:
        got = await take(consumer, 3)
        handle.shutdown()
        with trio.fail_after(WAIT_S):
            await stopped.wait()
        stopped = trio.Event()
        handle = await nursery.start(broker, config(handle.port))
        await produce(address, values(3, 6))
        got += await take(consumer, 3)
    handle.shutdown()
    assert got == expected(0, 6)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("chunk_bytes", "read"), [(8 << 20, 6), (1, 1)],
                         ids=["all-read", "chunks-prefetched"])
async def test_reading_after_close_raises(bootstrap, driver, chunk_bytes, read):
    """Records fetched but not handed out (chunks prefetched) are not handed out after
    closing: in a group their partitions may be another member's already."""
    await produce(bootstrap, *[values(i, i + 1) for i in range(6)])
    async with assigned(bootstrap, "earliest", driver, partition_max_bytes=chunk_bytes) as consumer:
        assert await take(consumer, read) == expected(0, read)
        await trio.testing.wait_all_tasks_blocked()  # (trio) the next chunks are fetched ahead
    with trio.fail_after(WAIT_S), pytest.raises(ClientClosedError):
        await consumer.getmany()
    with trio.fail_after(WAIT_S), pytest.raises(ClientClosedError):
        await consumer.__anext__()


async def test_close_wakes_a_waiting_getmany(bootstrap):
    """(trio: another task closes the consumer while one waits in ``getmany``.)"""
    raised = []

    async def poll(consumer):
        with pytest.raises(ClientClosedError) as info:
            await consumer.getmany()
        raised.append(info.value)

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            async with assigned(bootstrap, "earliest") as consumer:
                nursery.start_soon(poll, consumer)
                await trio.testing.wait_all_tasks_blocked()
                assert not raised
    assert len(raised) == 1


async def test_no_records_after_a_close_that_comes_with_them(bootstrap):
    """(trio) Another task closes the consumer in the same turn of the scheduler as the answer
    that wakes a waiting ``getmany``: it must raise, not hand out the records."""
    async with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=60_000) as consumer:
        consumer.assign([TP])
        answered = consumer._fetched

        def answered_then_closed(node, generation, response, error):
            answered(node, generation, response, error)
            if consumer._ready:
                consumer._stop_fetching()  # what closing does first

        consumer._fetched = answered_then_closed
        await trio.testing.wait_all_tasks_blocked()  # position looked up, long poll in flight
        outcome = []

        async def poll():
            try:
                outcome.append(await consumer.getmany())
            except ClientClosedError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()  # getmany waits
            with trio.fail_after(WAIT_S):
                await produce(bootstrap, values(0, 1))
    assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError), outcome


@pytest.mark.parametrize("driver", DRIVERS)
async def test_beginning_and_end_offsets(bootstrap, driver):
    async with open_client(driver, "consumer", bootstrap) as consumer:
        assert await consumer.beginning_offsets([TP]) == {TP: 0}
        assert await consumer.end_offsets([TP]) == {TP: 0}
        await produce(bootstrap, values(0, 7), values(7, 12))
        assert await consumer.beginning_offsets([TP]) == {TP: 0}
        assert await consumer.end_offsets([TP]) == {TP: 12}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_many_fetches_deliver_each_record_once_in_order(bootstrap, driver):
    batches = [values(5 * i, 5 * i + 5) for i in range(8)]
    await produce(bootstrap, *batches)
    async with assigned(bootstrap, "earliest", driver, partition_max_bytes=1) as consumer:
        chunks = []
        with trio.fail_after(WAIT_S):
            async for records in consumer.batches():
                chunks.append([(r.offset, r.value) for r in records])
                if chunks[-1][-1][0] == 39:
                    break
        assert [len(chunk) for chunk in chunks] == [5] * 8  # one whole batch per fetch
        assert [pair for chunk in chunks for pair in chunk] == expected(0, 40)
        assert await consumer.position(*TP) == 40
