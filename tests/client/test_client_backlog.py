"""The acks=all, linger 0 load case: records keep joining a partition's open batch while its
request waits for the broker (Kafka's accumulator: a batch closes when the sender drains it),
so a slow round trip never turns each record into a batch of its own and a queue that only
grows. Against stub brokers whose answers the test holds back (no clock involved); both
drivers; order kept per partition."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from sluice.protocol import messages as m

from tests.drivers import DRIVERS, open_client
from tests.stub_broker import StubCluster

TOPIC = "load"
RECORDS = 3000
WAIT_S = 10


@pytest.fixture
async def cluster(nursery):
    stubs = StubCluster()
    await stubs.start(nursery, 1)
    stubs.create(TOPIC, [0, 0, 0])
    return stubs


def queued_batches(producer) -> int:
    """Batches sealed and waiting to be sent (not in flight, not open)."""
    return sum(len(queue) for queue in producer._acc.ready.values())


@pytest.mark.parametrize("driver", DRIVERS)
async def test_records_join_the_open_batch_while_the_broker_is_slow(cluster, driver):
    with trio.fail_after(WAIT_S):
        async with open_client(driver, "producer", cluster.brokers[0].address,
                               acks="all", linger_ms=0) as producer:
            cluster.hold(m.ProduceRequest)  # every round trip lasts until released
            handles = []
            try:
                for i in range(RECORDS):
                    handles.append(await producer.send(TOPIC, b"%d" % i, key=b"%d" % (i % 7)))
                    if i % 100 == 0:  # (trio) the driver's task runs between some sends
                        await trio.testing.wait_all_tasks_blocked()
                    # Nothing waits to be sent besides the open batches: the first records
                    # went at once, the rest joined their partition's open batch.
                    assert queued_batches(producer.client) == 0
                engine = producer.client
                in_flight = [batch for queue in engine._state.inflight.values() for batch in queue]
                assert len(in_flight) <= 3  # at most one batch per partition on the way
                waiting = sum(len(batch) for batch in engine._acc.open.values())
                assert waiting + sum(map(len, in_flight)) == RECORDS  # the rest: open batches
            finally:
                cluster.release(m.ProduceRequest)
            offsets = [await producer.outcome(h) for h in handles]
    assert all(isinstance(offset, int) for offset in offsets)
    requests = [r for r in cluster.brokers[0].requests if isinstance(r, m.ProduceRequest)]
    assert len(requests) <= 6  # the first records, then the rest: not one per record
    for partition in range(3):  # each partition in send order
        sent = [b"%d" % i for i in range(RECORDS) if handles[i].batch.partition == partition]
        assert cluster.values(TOPIC, partition) == sent
