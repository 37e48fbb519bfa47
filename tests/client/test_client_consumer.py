"""The trio ``Consumer`` against an in-process broker: fetching, long polls, seeks, errors."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.client import consumer as consumer_module
from sluice.client import sync as sync_module
from sluice.client.admin import Admin
from sluice.client.consumer import PREFETCH_CHUNKS, Consumer
from sluice.client.errors import ClientClosedError, NoOffsetError
from sluice.client.producer import Producer
from sluice.client.sync import Consumer as SyncConsumer
from sluice.protocol import messages as m
from sluice.protocol.errors import BrokerShuttingDownError, InvalidRequestError, code_for_error

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
async def assigned(bootstrap: str, reset: str, **options):
    """A consumer of ``TP`` with the given ``auto_offset_reset`` (closed on leaving)."""
    async with Consumer(bootstrap, auto_offset_reset=reset, **options) as consumer:
        consumer.assign([TP])
        yield consumer


async def produce(bootstrap: str, *batches: list[bytes], timestamps=None) -> list[int]:
    """Write each list of values as its own flush (one batch each); their offsets."""
    offsets = []
    async with Producer(bootstrap, linger_ms=0) as producer:
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


async def take(consumer: Consumer, count: int) -> list[tuple[int, bytes]]:
    """The next ``count`` records as ``(offset, value)``, via ``getmany``."""
    out: list[tuple[int, bytes]] = []
    with trio.fail_after(WAIT_S):
        while len(out) < count:
            out += [(r.offset, r.value) for r in await consumer.getmany()]
    assert len(out) == count, out
    return out


async def known_position(consumer: Consumer) -> int:
    """``position()`` once the consumer has looked it up (waits for tasks, never sleeps)."""
    with trio.fail_after(WAIT_S):
        while consumer.position(*TP) is None:
            await trio.testing.wait_all_tasks_blocked()
    return consumer.position(*TP)


def expected(start: int, stop: int) -> list[tuple[int, bytes]]:
    return [(i, b"v%d" % i) for i in range(start, stop)]


async def test_reads_everything_from_earliest(bootstrap):
    offsets = await produce(bootstrap, values(0, 10), values(10, 20), values(20, 30))
    assert offsets == list(range(30))
    async with assigned(bootstrap, "earliest") as consumer:
        got = []
        with trio.fail_after(WAIT_S):
            async for record in consumer:
                assert (record.topic, record.partition) == TP
                got.append((record.offset, record.value))
                if len(got) == 30:
                    break
        assert got == expected(0, 30)
        assert consumer.position(*TP) == 30


async def test_topics_option_assigns_every_partition(bootstrap):
    await produce(bootstrap, values(0, 3))
    async with Consumer(bootstrap, topics=TOPIC, auto_offset_reset="earliest") as consumer:
        assert consumer.assignment() == [TP]
        assert await take(consumer, 3) == expected(0, 3)


async def test_long_poll_is_woken_by_a_new_record(bootstrap):
    # A long poll far longer than WAIT_S: only the broker's wake-up can return the record.
    async with assigned(bootstrap, "earliest", fetch_max_wait_ms=60_000) as consumer:
        got = []

        async def poll():
            got.extend(await take(consumer, 1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()  # getmany waits on a long poll
            assert not got
            assert await produce(bootstrap, [b"late"]) == [0]
        assert got == [(0, b"late")]
        assert consumer.position(*TP) == 1

        # Again, with the partition read to its end.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert await produce(bootstrap, [b"later"]) == [1]
        assert got == [(0, b"late"), (1, b"later")]


async def test_seek_back_rereads_from_that_offset(bootstrap):
    await produce(bootstrap, values(0, 10))
    async with assigned(bootstrap, "earliest") as consumer:
        assert await take(consumer, 10) == expected(0, 10)
        consumer.seek(TOPIC, 0, 4)
        assert consumer.position(*TP) == 4
        assert await take(consumer, 6) == expected(4, 10)
        assert consumer.position(*TP) == 10


async def test_seek_mid_chunk_drops_the_unread_and_prefetched(bootstrap):
    await produce(bootstrap, values(0, 5), values(5, 10), values(10, 15))
    async with assigned(bootstrap, "earliest", partition_max_bytes=1) as consumer:
        got = []
        with trio.fail_after(WAIT_S):
            async for record in consumer:
                got.append((record.offset, record.value))
                if len(got) == 2:
                    break
        assert got == expected(0, 2)
        assert consumer.position(*TP) == 2  # inside the first chunk (offsets 0..4)
        await trio.testing.wait_all_tasks_blocked()  # the next chunks are fetched ahead
        consumer.seek(TOPIC, 0, 12)
        assert await take(consumer, 3) == expected(12, 15)


async def test_seek_to_end_returns_only_newer_records(bootstrap):
    await produce(bootstrap, values(0, 10))
    async with assigned(bootstrap, "earliest") as consumer:
        consumer.seek_to_end()
        assert await known_position(consumer) == 10
        await produce(bootstrap, values(10, 13))
        assert await take(consumer, 3) == expected(10, 13)


async def test_seek_to_beginning_restarts_at_zero(bootstrap):
    await produce(bootstrap, values(0, 8))
    async with assigned(bootstrap, "latest") as consumer:
        assert await known_position(consumer) == 8
        consumer.seek_to_beginning(TP)
        assert await take(consumer, 8) == expected(0, 8)
        assert consumer.position(*TP) == 8


async def test_seek_to_time_and_offsets_for_times(bootstrap):
    stamps = [1_000 + 10 * i for i in range(10)]  # batches: 1000..1040, 1050..1090
    await produce(bootstrap, values(0, 5), values(5, 10), timestamps=stamps)
    async with assigned(bootstrap, "earliest") as consumer:
        # Batch granularity (docs/STORAGE.md): (base offset, max timestamp) of the first
        # batch whose max timestamp is >= the one asked for.
        assert await consumer.offsets_for_times({TP: 1_045}) == {TP: (5, 1_090)}
        assert await consumer.offsets_for_times({TP: 1_000}) == {TP: (0, 1_040)}
        assert await consumer.offsets_for_times({TP: 5_000}) == {TP: None}
        consumer.seek_to_time(1_045)
        assert await take(consumer, 5) == expected(5, 10)


async def test_out_of_range_offset_resets_to_earliest(bootstrap):
    await produce(bootstrap, values(0, 6))
    async with assigned(bootstrap, "earliest") as consumer:
        consumer.seek(TOPIC, 0, 100)  # past the log end (6): the broker answers out of range
        assert await take(consumer, 6) == expected(0, 6)
        assert consumer.position(*TP) == 6


@pytest.mark.parametrize("start", [None, 100], ids=["no-position", "out-of-range"])
async def test_reset_error_raises_until_a_seek(bootstrap, start):
    await produce(bootstrap, values(0, 6))
    async with assigned(bootstrap, "error") as consumer:
        if start is not None:
            consumer.seek(TOPIC, 0, start)  # past the log end (6): the broker says out of range
        for _ in range(2):  # raised again until a position changes, not a hang the 2nd time
            with trio.fail_after(WAIT_S), pytest.raises(NoOffsetError):
                await consumer.getmany()
        assert consumer.position(*TP) is None
        consumer.seek(TOPIC, 0, 3)
        assert await take(consumer, 3) == expected(3, 6)


async def test_an_error_for_positions_changed_since_is_not_raised(bootstrap):
    await produce(bootstrap, values(0, 4))
    async with assigned(bootstrap, "error") as consumer:
        await trio.testing.wait_all_tasks_blocked()  # NoOffsetError is queued for getmany...
        consumer.seek(TOPIC, 0, 1)  # ...but the position it was about exists now
        assert await take(consumer, 3) == expected(1, 4)



async def test_an_error_answered_just_before_a_seek_is_not_raised(bootstrap):
    """The fetch answer carrying the error and the application's seek come in the same turn of
    the scheduler, before the fetch task resumes: the error belongs to the old positions."""
    await produce(bootstrap, values(0, 6))
    async with Consumer(bootstrap, auto_offset_reset="error") as consumer:
        answered = consumer._fetched
        errors = []

        def answered_then_seek(generation, answer, response, error):
            answered(generation, answer, response, error)
            if answer[0] is not None and not errors:
                errors.append(answer[0])
                consumer.seek(TOPIC, 0, 1)  # the application, before the fetch task runs

        consumer._fetched = answered_then_seek
        consumer.assign([TP])
        consumer.seek(TOPIC, 0, 100)  # past the end: NoOffsetError (reset policy "error")
        assert await take(consumer, 5) == expected(1, 6)
        assert len(errors) == 1 and isinstance(errors[0], NoOffsetError)


async def test_a_seek_while_the_fetch_task_waits_for_room_is_not_lost(bootstrap):
    await produce(bootstrap, *[values(i, i + 1) for i in range(6)])
    async with assigned(bootstrap, "earliest", partition_max_bytes=1) as consumer:
        await trio.testing.wait_all_tasks_blocked()
        assert len(consumer._ready) == PREFETCH_CHUNKS  # fetched ahead; the task waits for room
        consumer.seek_to_beginning()  # needs a lookup, not a fetch: it used to wait forever
        assert await take(consumer, 6) == expected(0, 6)


async def test_a_retriable_broker_error_is_retried_not_raised(bootstrap, monkeypatch):
    checked = []

    def shutting_down_once(response):
        checked.append(response)
        if len(checked) == 1:
            raise BrokerShuttingDownError("the broker is shutting down")
        raise_for_error(response)

    raise_for_error = consumer_module.raise_for_error
    monkeypatch.setattr(consumer_module, "raise_for_error", shutting_down_once)
    await produce(bootstrap, values(0, 3))
    async with assigned(bootstrap, "earliest") as consumer:
        assert await take(consumer, 3) == expected(0, 3)
    assert len(checked) >= 2


async def test_consuming_goes_on_across_a_broker_restart(nursery, tmp_path):
    """An orderly restart on the same port: fetches in flight meet a lost connection or
    ``BrokerShuttingDownError``; both are retried, and no record is lost or repeated."""
    def config(port: int) -> BrokerConfig:
        return BrokerConfig(port=port, data_dir=tmp_path / "data", shutdown_grace_s=2.0)

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
    async with assigned(address, "earliest", fetch_max_wait_ms=100) as consumer:
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


async def test_getmany_after_close_raises(bootstrap):
    await produce(bootstrap, values(0, 3))
    async with assigned(bootstrap, "earliest") as consumer:
        assert await take(consumer, 3) == expected(0, 3)
    with trio.fail_after(WAIT_S), pytest.raises(ClientClosedError):
        await consumer.getmany()


async def test_getmany_after_close_raises_with_chunks_prefetched(bootstrap):
    await produce(bootstrap, *[values(i, i + 1) for i in range(6)])
    async with assigned(bootstrap, "earliest", partition_max_bytes=1) as consumer:
        assert await take(consumer, 1) == expected(0, 1)
        await trio.testing.wait_all_tasks_blocked()  # the next chunks are fetched ahead
    with trio.fail_after(WAIT_S), pytest.raises(ClientClosedError):
        await consumer.getmany()


async def test_close_wakes_a_waiting_getmany(bootstrap):
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
    """Another task closes the consumer in the same turn of the scheduler as the answer that
    wakes a waiting ``getmany``: it must raise, not hand out the records."""
    async with assigned(bootstrap, "earliest", fetch_max_wait_ms=60_000) as consumer:
        answered = consumer._fetched

        def answered_then_closed(*args):
            answered(*args)
            if args[1][0] is None and consumer._ready:
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


async def test_beginning_and_end_offsets(bootstrap):
    async with Consumer(bootstrap) as consumer:
        assert await consumer.beginning_offsets([TP]) == {TP: 0}
        assert await consumer.end_offsets([TP]) == {TP: 0}
        await produce(bootstrap, values(0, 7), values(7, 12))
        assert await consumer.beginning_offsets([TP]) == {TP: 0}
        assert await consumer.end_offsets([TP]) == {TP: 12}


async def test_many_fetches_deliver_each_record_once_in_order(bootstrap):
    batches = [values(5 * i, 5 * i + 5) for i in range(8)]
    await produce(bootstrap, *batches)
    async with assigned(bootstrap, "earliest", partition_max_bytes=1) as consumer:
        chunks = []
        with trio.fail_after(WAIT_S):
            async for records in consumer.batches():
                chunks.append([(r.offset, r.value) for r in records])
                if chunks[-1][-1][0] == 39:
                    break
        assert [len(chunk) for chunk in chunks] == [5] * 8  # one whole batch per fetch
        assert [pair for chunk in chunks for pair in chunk] == expected(0, 40)
        assert consumer.position(*TP) == 40


async def test_blocking_consumer_poll_after_close_raises(bootstrap):
    await produce(bootstrap, values(0, 3), values(3, 6))

    def consume_then_close() -> list[tuple[int, bytes]]:
        consumer = SyncConsumer(bootstrap, auto_offset_reset="earliest", partition_max_bytes=1)
        with consumer:
            consumer.assign([TP])
            got = [(r.offset, r.value) for r in consumer.poll(timeout=WAIT_S)]
        with pytest.raises(ClientClosedError):  # the next chunk may be fetched: not handed out
            consumer.poll(timeout=WAIT_S)
        with pytest.raises(ClientClosedError):
            next(iter(consumer))
        return got

    with trio.fail_after(WAIT_S * 2):
        assert await trio.to_thread.run_sync(consume_then_close) == expected(0, 3)



@pytest.mark.parametrize("error", [BrokerShuttingDownError, InvalidRequestError])
async def test_blocking_consumer_retries_a_retriable_fetch_error_and_raises_the_rest(
    bootstrap, monkeypatch, error
):
    """Top-level fetch errors used to be ignored: the consumer silently fetched again,
    forever for an error that can't go away."""
    receive = sync_module.SyncConnection.receive
    replaced = []

    def first_fetch_fails(conn, until=None):
        response = receive(conn, until)
        if isinstance(response, m.FetchResponse) and not replaced:
            replaced.append(response)
            return m.FetchResponse(error=code_for_error(error("injected")), message="injected")
        return response

    monkeypatch.setattr(sync_module.SyncConnection, "receive", first_fetch_fails)
    await produce(bootstrap, values(0, 3))

    def consume() -> list[tuple[int, bytes]]:
        with SyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TP])
            got: list[tuple[int, bytes]] = []
            while len(got) < 3:
                got += [(r.offset, r.value) for r in consumer.poll(timeout=WAIT_S)]
            return got

    with trio.fail_after(WAIT_S * 2):
        if error.retriable:
            assert await trio.to_thread.run_sync(consume) == expected(0, 3)
        else:
            with pytest.raises(error, match="injected"):
                await trio.to_thread.run_sync(consume)
    assert replaced



async def test_blocking_consumer_retries_a_retriable_offset_lookup_error(bootstrap, monkeypatch):
    request = sync_module.SyncConnection.request
    failed = []

    def first_lookup_fails(conn, req):
        if isinstance(req, m.ListOffsetsRequest) and not failed:
            failed.append(req)
            raise BrokerShuttingDownError("injected")
        return request(conn, req)

    monkeypatch.setattr(sync_module.SyncConnection, "request", first_lookup_fails)
    await produce(bootstrap, values(0, 3))

    def consume() -> list[tuple[int, bytes]]:
        with SyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TP])
            got: list[tuple[int, bytes]] = []
            while len(got) < 3:
                got += [(r.offset, r.value) for r in consumer.poll(timeout=WAIT_S)]
            return got

    with trio.fail_after(WAIT_S * 2):
        assert await trio.to_thread.run_sync(consume) == expected(0, 3)
    assert failed
