"""Producer and client timeouts under real faults (issue 13): a broker process frozen with
SIGSTOP, connections cut or black-holed by a proxy (``tests.faults``), an outage longer than
the reconnect window, bad timestamps. Every scenario runs against both producers."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest
import trio
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.errors import (
    BrokerUnreachableError,
    DeliveryTimeoutError,
    RequestTimedOutError,
)
from sluice.client.sync import Admin as SyncAdmin
from sluice.client.sync import Consumer as SyncConsumer

from tests.drivers import DRIVERS
from tests.faults import TcpProxy, check_outcomes, open_producer, read_log

TOPIC = "t"
BOUND_S = 20  # bound on anything that could hang; far above every timeout used here
APIS = DRIVERS


@pytest.fixture
async def topic(broker):
    async with Admin(broker.bootstrap) as admin:
        await admin.create_topic(TOPIC, 1)
    return TOPIC


@contextmanager
def frozen(broker):
    """The broker process stopped (SIGSTOP) inside the block, resumed after it."""
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)


async def in_thread(fn, *args):
    return await trio.to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=True)


@pytest.mark.parametrize("api", APIS)
async def test_a_record_lost_with_its_connection_never_lends_its_sequence(
    broker, topic, nursery, api
):
    """Item 1: X is sent to a frozen broker, its delivery time runs out, its connection is cut,
    the broker resumes (and writes X, which it read before the cut). Y, sent next, used to get
    X's sequence number: the broker took it for a retry of X and "acknowledged" Y at X's
    offset, and Y was lost."""
    proxy = TcpProxy(broker.port)
    await nursery.start(proxy.serve)
    outcomes = {}
    with trio.fail_after(BOUND_S):
        async with open_producer(api, proxy.bootstrap, acks=1, linger_ms=0,
                                 delivery_timeout_ms=1500) as producer:
            outcomes[b"W"] = await producer.outcome(await producer.send(topic, b"W"))
            assert outcomes[b"W"] == 0
            with frozen(broker):
                before = proxy.upstream_bytes
                x = await producer.send(topic, b"X")
                if producer.blocking:  # it does its I/O inside calls: let it send X now
                    await producer.poll(0)
                await proxy.wait_upstream(before + 1)  # X's request is in the broker's socket
                # The scenario needs X's delivery time to be over when the cut comes (a rule
                # of time, not a wait for another task): the producer then gives X up.
                await trio.sleep(1.6)
                await proxy.sever()
            outcomes[b"X"] = await producer.outcome(x)
            outcomes[b"Y"] = await producer.outcome(await producer.send(topic, b"Y"))
    assert not isinstance(outcomes[b"X"], int)
    assert isinstance(outcomes[b"Y"], int), outcomes[b"Y"]
    log = await read_log(broker.bootstrap, topic)
    check_outcomes(log, outcomes)
    assert b"Y" in log.values()


@pytest.mark.parametrize("api", APIS)
async def test_a_frozen_broker_cannot_hold_a_delivery_or_a_flush_past_the_delivery_timeout(
    broker, topic, api
):
    """Item 4: the trio producer waited for a frozen broker forever; the blocking one for its
    socket timeout. Handles and ``flush`` now resolve by ``delivery_timeout_ms``."""
    with trio.fail_after(BOUND_S):
        async with open_producer(api, broker.bootstrap, linger_ms=0,
                                 delivery_timeout_ms=1000) as producer:
            warm = await producer.outcome(await producer.send(topic, b"warm"))  # metadata known
            with frozen(broker):
                handle = await producer.send(topic, b"into the freeze")
                await producer.flush()
                outcome = await producer.outcome(handle)
                assert isinstance(outcome, DeliveryTimeoutError), outcome
                assert "may have been written" in str(outcome)
            later = await producer.outcome(await producer.send(topic, b"after"))
    assert isinstance(later, int)
    check_outcomes(await read_log(broker.bootstrap, topic), {b"warm": warm, b"after": later})


@pytest.mark.parametrize("api", APIS)
async def test_requests_time_out_on_a_black_holed_broker(broker, topic, nursery, api):
    """Item 4 (and issue 14's CLI hang): a listener that accepts and never answers. Each
    request fails with a typed, retriable timeout after ``request_timeout_ms``; connecting
    fails clearly instead of hanging."""
    proxy = TcpProxy(broker.port)
    await nursery.start(proxy.serve)
    options = {"request_timeout_ms": 300}
    with trio.fail_after(BOUND_S):
        if api == "trio":
            async with Admin(proxy.bootstrap, **options) as admin, \
                    Consumer(proxy.bootstrap, **options) as consumer:
                proxy.blackhole()
                with pytest.raises(RequestTimedOutError) as failed:
                    await admin.list_topics()
                assert failed.value.retriable
                with pytest.raises(RequestTimedOutError):
                    await consumer.end_offsets([(topic, 0)])
            with pytest.raises(BrokerUnreachableError, match="request timeout"):
                async with Admin(proxy.bootstrap, **options):
                    pass
        else:
            admin = SyncAdmin(proxy.bootstrap, **options)
            await in_thread(admin.__enter__)
            proxy.blackhole()
            with pytest.raises(RequestTimedOutError):
                await in_thread(admin.list_topics)
            admin.__exit__(None, None, None)
            with pytest.raises(BrokerUnreachableError, match="request timeout"):
                await in_thread(SyncAdmin(proxy.bootstrap, **options).__enter__)
    proxy.heal()


async def test_blocking_poll_returns_within_its_timeout_while_the_broker_is_frozen(broker, topic):
    """Item 4: ``poll(1.0)`` blocked for as long as the broker was frozen (11.7 s for a 12 s
    freeze). Now a late fetch stays on the wire for the next poll."""
    consumer = SyncConsumer(broker.bootstrap, auto_offset_reset="earliest")
    await in_thread(consumer.__enter__)
    try:
        consumer.assign([(topic, 0)])
        with trio.fail_after(BOUND_S):
            assert await in_thread(consumer.poll, 0.2) == []  # the fetch is parked
            with frozen(broker):
                for _ in range(3):
                    assert await in_thread(consumer.poll, 0.3) == []
            async with open_producer("trio", broker.bootstrap) as producer:
                assert await producer.outcome(await producer.send(topic, b"r")) == 0
            records = []
            while not records:
                records = await in_thread(consumer.poll, 1.0)
        assert [r.value for r in records] == [b"r"]
    finally:
        await in_thread(consumer.close)


@pytest.mark.parametrize("api", APIS)
async def test_an_outage_longer_than_the_reconnect_window_does_not_break_later_sends(
    broker, topic, api
):
    """Item 5: after an outage longer than the reconnect window, pending batches fail -- but
    their sequences were kept, so every later record failed with ``OutOfOrderSequenceError:
    sent 108, expected 107``, forever."""
    outcomes = {}
    with trio.fail_after(BOUND_S):
        async with open_producer(api, broker.bootstrap, linger_ms=0,
                                 reconnect_timeout_ms=300) as producer:
            outcomes[b"A"] = await producer.outcome(await producer.send(topic, b"A"))
            broker.kill()
            lost = await producer.outcome(await producer.send(topic, b"B"))
            assert isinstance(lost, BrokerUnreachableError), lost
            broker.start()
            for value in (b"C", b"D"):
                outcomes[value] = await producer.outcome(await producer.send(topic, value))
                assert isinstance(outcomes[value], int), outcomes[value]
    check_outcomes(await read_log(broker.bootstrap, topic), outcomes)


class Unpackable:
    """A value with a length (so it is accepted into a batch) that msgpack cannot encode."""

    def __len__(self) -> int:
        return 3


@pytest.mark.parametrize("api", APIS)
async def test_a_bad_timestamp_is_refused_at_the_call_and_wedges_nothing(broker, topic, api):
    """Item 6: a float (``time.time() * 1000``) or ``2**63`` raised a bare ``struct.error``
    from ``result()``, failed every later record of the partition, and ``close()`` spun at
    100% CPU; -5 failed its whole batch at the broker."""
    outcomes = {}
    with trio.fail_after(BOUND_S):
        async with open_producer(api, broker.bootstrap, linger_ms=50) as producer:
            before = await producer.send(topic, b"before")
            for bad, error in ((time.time() * 1000, TypeError), (True, TypeError),
                               ("1700000000000", TypeError), (2**63, ValueError),
                               (-5, ValueError), (-1, ValueError)):
                with pytest.raises(error, match="timestamp"):
                    await producer.send(topic, b"bad", timestamp=bad)
            after = await producer.send(topic, b"after", timestamp=2**63 - 1)
            for value, handle in ((b"before", before), (b"after", after)):
                outcomes[value] = await producer.outcome(handle)
                assert isinstance(outcomes[value], int), outcomes[value]
    check_outcomes(await read_log(broker.bootstrap, topic), outcomes)


@pytest.mark.parametrize("api", APIS)
async def test_a_record_that_cannot_be_encoded_fails_alone(broker, topic, api):
    """Item 6: an encode failure left its batch dequeued and numbered: the trio sender task
    died with the error (the record sent just before was never answered) and ``close()``
    spun. Now only that batch fails, at once, and its sequence number is not used."""
    with trio.fail_after(BOUND_S):
        async with open_producer(api, broker.bootstrap, linger_ms=0) as producer:
            first = await producer.outcome(await producer.send(topic, b"first"))
            bad = await producer.send(topic, Unpackable())
            with pytest.raises(TypeError, match="Unpackable"):
                await producer.outcome(bad)
            later = await producer.outcome(await producer.send(topic, b"later"))
    assert (first, later) == (0, 1)
    check_outcomes(await read_log(broker.bootstrap, topic), {b"first": first, b"later": later})
