"""Clients across a topic delete and recreate (issue 13.7): producers and consumers of both
drivers learn the new topic's id, partition count and positions and carry on."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.errors import NoOffsetError, UnknownTopicIdError, UnknownTopicOrPartitionError
from sluice.client.fetcher import FetchState
from sluice.client.producer import Producer
from sluice.protocol import messages as m

from tests.drivers import DRIVERS, open_client

TOPIC = "events"
WAIT_S = 15  # bound on anything that could hang; never reached when the clients work


@pytest.fixture
async def bootstrap(nursery, tmp_path):
    config = BrokerConfig(port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)
    handle = await nursery.start(partial(serve, config))
    yield f"127.0.0.1:{handle.port}"
    handle.shutdown()


async def recreate(bootstrap: str, partitions: int, first: bool = False) -> None:
    """(Delete and) create ``TOPIC``."""
    async with Admin(bootstrap) as admin:
        if not first:
            await admin.delete_topic(TOPIC)
        await admin.create_topic(TOPIC, partitions)


async def stored(bootstrap: str) -> list[bytes]:
    """Every value in ``TOPIC``, partition by partition."""
    async with Admin(bootstrap) as admin:
        info = await admin.describe_topic(TOPIC)
    expected = sum(p.end_offset for p in info.partitions)
    values: list[bytes] = []
    if expected:
        async with Consumer(bootstrap, topics=[TOPIC], auto_offset_reset="earliest") as consumer:
            async for record in consumer:
                values.append(record.value)
                if len(values) == expected:
                    break
    return sorted(values)


# -- producers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("after", [2, 1, 3], ids=["same", "fewer", "more"])
async def test_a_long_lived_producer_recovers_after_its_topic_is_recreated(bootstrap, after, driver):
    """Before: every record after the recreate failed (OutOfOrderSequenceError: the producer
    kept numbering from the old topic), or with fewer partitions UnknownTopicOrPartitionError
    (the partition count was cached for good)."""
    await recreate(bootstrap, 2, first=True)
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", bootstrap, acks="all", linger_ms=0) as producer:
            for i in range(10):
                await producer.result(await producer.send(TOPIC, b"old-%d" % i, key=b"%d" % i))
            await recreate(bootstrap, after)
            outcomes = []
            for i in range(16):
                handle = await producer.send(TOPIC, b"new-%d" % i, key=b"%d" % i)
                try:
                    outcomes.append(await producer.result(handle))
                except (UnknownTopicIdError, UnknownTopicOrPartitionError) as exc:
                    outcomes.append(exc)
    failed = [o for o in outcomes if isinstance(o, Exception)]
    # Only the record sent before the producer learned of the new topic fails: it went to the
    # deleted one, and says so.
    assert len(failed) == 1 and outcomes[0] is failed[0], outcomes
    assert await stored(bootstrap) == sorted(b"new-%d" % i for i in range(1, 16))
    for partition in range(after):  # sequences started over: dense offsets from 0
        offsets = sorted(md.offset for md in outcomes[1:] if md.partition == partition)
        assert offsets == list(range(len(offsets)))


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_producer_sending_to_a_deleted_topic_gets_a_clear_error_until_it_is_back(
    bootstrap, driver
):
    await recreate(bootstrap, 1, first=True)
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", bootstrap, acks=1, linger_ms=0) as producer:
            await producer.result(await producer.send(TOPIC, b"a"))
            async with Admin(bootstrap) as admin:
                await admin.delete_topic(TOPIC)
            with pytest.raises(UnknownTopicOrPartitionError):
                await producer.result(await producer.send(TOPIC, b"lost"))
            with pytest.raises(UnknownTopicOrPartitionError):  # the lookup says so at once
                await producer.send(TOPIC, b"refused")
            async with Admin(bootstrap) as admin:
                await admin.create_topic(TOPIC, 1)
            assert (await producer.result(await producer.send(TOPIC, b"b"))).offset == 0
    assert await stored(bootstrap) == [b"b"]


# -- consumers ---------------------------------------------------------------------------------


async def produce(bootstrap: str, values: list[bytes]) -> None:
    async with Producer(bootstrap, linger_ms=0) as producer:
        for value in values:
            await producer.send(TOPIC, value)
        await producer.flush()


async def take(consumer, count: int) -> list[bytes]:
    got = []
    async for record in consumer:
        got.append(record.value)
        if len(got) == count:
            return got
    return got


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("after", "group"), [(1, None), (3, None), (1, "g")],
                         ids=["same", "more", "same-in-a-group"])
async def test_a_consumer_follows_its_topic_across_a_recreate(bootstrap, after, group, driver):
    """Before: UnknownTopicOrPartitionError on every read once the topic was deleted, and a
    consumer that did not notice would have read the new topic from the old positions."""
    await recreate(bootstrap, 1, first=True)
    await produce(bootstrap, [b"old-%d" % i for i in range(30)])
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "consumer", bootstrap, topics=[TOPIC], group_id=group,
                               auto_offset_reset="earliest") as consumer:
            assert len(await take(consumer, 30)) == 30
            await recreate(bootstrap, after)
            await produce(bootstrap, [b"new-%d" % i for i in range(12)])
            assert sorted(await take(consumer, 12)) == sorted(b"new-%d" % i for i in range(12))
            if group is None:
                assert sorted(await consumer.assignment()) == [(TOPIC, p) for p in range(after)]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_an_assigned_consumer_is_told_its_partition_is_gone(bootstrap, driver):
    await recreate(bootstrap, 2, first=True)
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "consumer", bootstrap, auto_offset_reset="earliest") as consumer:
            await consumer.assign([(TOPIC, 1)])
            await recreate(bootstrap, 1)
            with pytest.raises(UnknownTopicOrPartitionError, match=r"events\[1\] does not exist"):
                await consumer.getmany()


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_group_consumer_starts_a_recreated_topic_from_the_beginning(bootstrap, driver):
    """Issue 13.2 seen from the client: the group must not resume the new topic at the old
    topic's committed offset (100 of 300 records were skipped)."""
    await recreate(bootstrap, 1, first=True)
    await produce(bootstrap, [b"old-%d" % i for i in range(100)])
    options = dict(group_id="g", topics=[TOPIC], auto_offset_reset="earliest", auto_commit=False)
    with trio.fail_after(WAIT_S * 2):
        async with open_client(driver, "consumer", bootstrap, **options) as consumer:
            assert len(await take(consumer, 100)) == 100
            await consumer.commit()
            assert await consumer.committed() == {(TOPIC, 0): 100}
            await recreate(bootstrap, 1)  # while the member is live
            await produce(bootstrap, [b"new-%d" % i for i in range(150)])
            got = await take(consumer, 150)
            assert got == [b"new-%d" % i for i in range(150)]
            await consumer.commit()
            assert await consumer.committed() == {(TOPIC, 0): 150}
        await recreate(bootstrap, 1)  # and with no member at all
        await produce(bootstrap, [b"third-%d" % i for i in range(300)])
        async with open_client(driver, "consumer", bootstrap, **options) as consumer:
            assert await take(consumer, 300) == [b"third-%d" % i for i in range(300)]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_partition_counts_are_asked_afresh_and_never_read_from_a_fetch_answer(
    bootstrap, driver
):
    """The blocking consumer sends its next fetch before ``poll`` returns: ``partitions_for``
    once read that fetch's answer as its metadata answer. And the count is not cached: it
    follows a recreate."""
    await recreate(bootstrap, 2, first=True)
    await produce(bootstrap, [b"x"] * 3)
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "consumer", bootstrap, topics=[TOPIC],
                               auto_offset_reset="earliest") as consumer:
            await consumer.getmany()  # the next fetch is on its way
            assert await consumer.partitions_for(TOPIC) == 2
            await recreate(bootstrap, 3)
            assert await consumer.partitions_for(TOPIC) == 3


# -- the sans-IO bookkeeping -----------------------------------------------------------------------

OLD_ID, NEW_ID = "a" * 32, "b" * 32


def fetch_state(policy: str) -> FetchState:
    return FetchState(auto_offset_reset=policy, fetch_max_bytes=1000, partition_max_bytes=100,
                      fetch_max_wait_ms=0, fetch_min_bytes=1)


def test_positions_belong_to_one_incarnation_and_fetches_name_it():
    state = fetch_state("earliest")
    state.assign([(TOPIC, 0), (TOPIC, 1), ("other", 0)])
    assert state.metadata_request().topics == ["events", "other"]
    assert state.list_offsets_request() is None and state.fetch_request() is None  # not yet
    state.bind(TOPIC, OLD_ID, 2)
    state.bind("other", NEW_ID, 1)
    state.seek((TOPIC, 0), 40)
    state.seek((TOPIC, 1), 7)
    state.seek(("other", 0), 3)
    assert {(p.topic, p.partition, p.topic_id) for p in state.fetch_request().partitions} == {
        (TOPIC, 0, OLD_ID), (TOPIC, 1, OLD_ID), ("other", 0, NEW_ID)}
    lost = m.FetchResponse(partitions=[m.FetchPartitionData(
        topic=TOPIC, partition=0, error=UnknownTopicIdError.code, message="deleted")])
    assert state.on_fetch(lost, state.generation) == []  # not raised: looked up instead
    assert state.unresolved == {TOPIC}
    assert [p.topic for p in state.fetch_request().partitions] == ["other"]
    assert state.bind(TOPIC, NEW_ID, 1)  # recreated with one partition
    assert state.positions == {("other", 0): 3}  # the old positions mean nothing now
    assert state.resets == {(TOPIC, 0): -2}  # earliest; partition 1 no longer exists
    assert state.absent == {(TOPIC, 1)}
    assert not state.bind(TOPIC, NEW_ID, 1)  # the same incarnation again: nothing changes


def test_with_reset_policy_error_a_recreated_topic_needs_a_seek():
    state = fetch_state("error")
    state.assign([(TOPIC, 0)])
    state.bind(TOPIC, OLD_ID, 1)
    state.seek((TOPIC, 0), 5)
    state.bind(TOPIC, NEW_ID, 1)
    with pytest.raises(NoOffsetError):
        state.check_positions()
