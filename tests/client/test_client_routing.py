"""Leader routing against stub brokers written in the test (``tests.stub_broker``): clients of
both drivers learn the brokers from metadata, open one connection per broker they need, send
each partition's produce and fetch to its leader, and follow a leader that moves (the old one
answers ``NotLeaderError``, the client looks the leaders up again and retries)."""

from __future__ import annotations

import pytest
import trio
from sluice.client.bootstrap import parse_bootstrap
from sluice.protocol import messages as m

from tests.drivers import DRIVERS, open_client
from tests.stub_broker import StubCluster

TOPIC = "routed"
WAIT_S = 10  # bound on anything that could hang; never reached when the clients work


@pytest.fixture
async def cluster(nursery):
    """Three stub brokers; ``TOPIC`` has three partitions, partition p led by broker p."""
    stubs = StubCluster()
    await stubs.start(nursery, 3)
    stubs.create(TOPIC, [0, 1, 2])
    return stubs


def produced(broker) -> list[tuple[str, int]]:
    """The partitions of every produce request a broker received."""
    return [(p.topic, p.partition) for r in broker.requests if isinstance(r, m.ProduceRequest)
            for p in r.partitions]


def batches(broker) -> list[bytes]:
    """The record batches of every produce request a broker received."""
    return [bytes(p.records) for r in broker.requests if isinstance(r, m.ProduceRequest)
            for p in r.partitions]


def fetched(broker) -> set[tuple[str, int]]:
    return {(p.topic, p.partition) for r in broker.requests if isinstance(r, m.FetchRequest)
            for p in r.partitions}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_produce_goes_to_each_partitions_leader(cluster, driver):
    bootstrap = cluster.brokers[0].address  # one address: the others are learned
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", bootstrap, linger_ms=0) as producer:
            handles = [await producer.send(TOPIC, b"%d" % p, partition=p)
                       for p in range(3) for _ in range(5)]
            offsets = [await producer.outcome(h) for h in handles]
    assert offsets == [0, 1, 2, 3, 4] * 3
    for node, broker in cluster.brokers.items():
        assert set(produced(broker)) == {(TOPIC, node)}
        assert broker.connections == 1  # one connection per broker (the first: its bootstrap)
        assert cluster.values(TOPIC, node) == [b"%d" % node] * 5


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_moved_leader_is_looked_up_and_the_batch_retried_there(cluster, driver):
    bootstrap = cluster.brokers[0].address
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", bootstrap, linger_ms=0, acks="all") as producer:
            assert await producer.outcome(await producer.send(TOPIC, b"before", partition=1)) == 0
            cluster.move(TOPIC, 1, 2)  # broker 1 now answers NotLeaderError for partition 1
            metadata_before = sum(isinstance(r, m.MetadataRequest)
                                  for b in cluster.brokers.values() for r in b.requests)
            handle = await producer.send(TOPIC, b"after", partition=1)
            assert await producer.outcome(handle) == 1  # the stub's offsets are per partition
    assert produced(cluster.brokers[1]) == [(TOPIC, 1), (TOPIC, 1)]  # the refused attempt
    assert produced(cluster.brokers[2]) == [(TOPIC, 1)]  # the retry, at the new leader
    # Retried idempotently: the same bytes, so the same producer id, epoch and sequence.
    assert batches(cluster.brokers[2])[0] == batches(cluster.brokers[1])[1]
    metadata_after = sum(isinstance(r, m.MetadataRequest)
                         for b in cluster.brokers.values() for r in b.requests)
    assert metadata_after > metadata_before  # the refusal made it look the leaders up
    assert cluster.values(TOPIC, 1) == [b"before", b"after"]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_lost_connection_makes_the_producer_look_the_leader_up_again(cluster, driver):
    """The leader's connection is cut while a batch waits for its answer (the broker had not
    written it); meanwhile another broker took the partition over. The batch is retried (its
    outcome was unknown: same sequence numbers), and goes to the new leader once."""
    bootstrap = cluster.brokers[0].address
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", bootstrap, linger_ms=0) as producer:
            assert await producer.outcome(await producer.send(TOPIC, b"before", partition=1)) == 0
            cluster.hold(m.ProduceRequest)
            handle = await producer.send(TOPIC, b"cut", partition=1)
            if producer.blocking:
                await producer.poll(0)  # (it does its I/O inside calls: send it now)
            await cluster.wait_held(1)
            cluster.move(TOPIC, 1, 2)
            cluster.brokers[1].cut()
            cluster.release(m.ProduceRequest)
            assert await producer.outcome(handle) == 1
    assert cluster.values(TOPIC, 1) == [b"before", b"cut"]
    assert produced(cluster.brokers[2]) == [(TOPIC, 1)]
    # Not tried at the old leader again: the loss itself made it look the leaders up.
    assert produced(cluster.brokers[1]) == [(TOPIC, 1), (TOPIC, 1)]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_fetch_goes_to_each_leader_and_follows_a_move(cluster, driver):
    for partition in range(3):
        cluster.append((TOPIC, partition), _batch([b"p%d-%d" % (partition, i) for i in range(3)]))
    bootstrap = cluster.brokers[2].address
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "consumer", bootstrap, topics=[TOPIC],
                               auto_offset_reset="earliest", fetch_max_wait_ms=50) as consumer:
            got = set()
            while len(got) < 9:
                got |= {(r.partition, r.value) for r in await consumer.getmany()}
            for node, broker in cluster.brokers.items():
                assert fetched(broker) == {(TOPIC, node)}
            cluster.move(TOPIC, 0, 1)
            cluster.append((TOPIC, 0), _batch([b"moved"]))
            while (0, b"moved") not in got:
                got |= {(r.partition, r.value) for r in await consumer.getmany()}
    assert (TOPIC, 0) in fetched(cluster.brokers[1])


@pytest.mark.parametrize("driver", DRIVERS)
async def test_offsets_are_asked_of_each_partitions_leader(cluster, driver):
    for partition in range(3):
        cluster.append((TOPIC, partition), _batch([b"x"] * (partition + 1)))
    tps = [(TOPIC, p) for p in range(3)]
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "admin", cluster.brokers[1].address) as admin:
            found = await admin.list_offsets({tp: "latest" for tp in tps})
    assert {tp: v[0] for tp, v in found.items()} == {(TOPIC, p): p + 1 for p in range(3)}
    for node, broker in cluster.brokers.items():
        asked = {(p.topic, p.partition) for r in broker.requests
                 if isinstance(r, m.ListOffsetsRequest) for p in r.partitions}
        assert asked == {(TOPIC, node)}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_bootstrap_list_is_tried_in_turn(cluster, driver, nursery):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    dead = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()  # nothing listens there now
    bootstrap = f"127.0.0.1:{dead}, {cluster.brokers[1].address}"
    assert parse_bootstrap(bootstrap)[1] == ("127.0.0.1", cluster.brokers[1].port)
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "admin", bootstrap) as admin:
            assert await admin.list_topics() == [TOPIC]


def _batch(values: list[bytes]) -> bytes:
    from sluice.protocol.batch import build_batch

    return bytes(build_batch([(None, v, [], 1_700_000_000_000) for v in values]))
