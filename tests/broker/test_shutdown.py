"""Ordered shutdown: stop accepting, drain in-flight requests, close the logs cleanly."""

from __future__ import annotations

from functools import partial

import trio
from sluice.broker.server import serve
from sluice.protocol.errors import BrokerShuttingDownError

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce, read_values
from tests.processes import BrokerProcess


async def test_shutdown_answers_long_polls_and_keeps_every_acked_record(broker_config):
    broker_config = type(broker_config)(
        port=0, data_dir=broker_config.data_dir, shutdown_grace_s=20.0
    )
    acked: list[bytes] = []
    with trio.fail_after(15):  # well under the 20 s grace: the drain must not wait it out
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve, broker_config))
            async with await RawClient.connect(handle.port) as setup:
                await create_topic(setup, "t")
            poller = await RawClient.connect(handle.port)
            producer = await RawClient.connect(handle.port)
            polled = []

            async def poll() -> None:
                polled.append(await fetch(poller, "t", 0, max_wait_ms=60_000, min_bytes=1 << 30))

            async def produce_until_refused() -> None:
                for seq in range(10_000):
                    value = b"r%d" % seq
                    try:
                        response = await produce(producer, "t", make_batch([value]), acks=-1)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, Exception):
                        return
                    if response.error == BrokerShuttingDownError.code:
                        return
                    assert response.partitions[0].error == 0
                    acked.append(value)
                    if seq == 20:
                        handle.shutdown()

            nursery.start_soon(poll)
            await produce_until_refused()
        assert polled and polled[0].partitions[0].error == 0
        await poller.aclose()
        await producer.aclose()
    assert (broker_config.data_dir / ".clean-shutdown").exists()
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve, broker_config))
        async with await RawClient.connect(handle.port) as reader:
            assert (await read_values(reader, "t"))[: len(acked)] == acked
        handle.shutdown()


def test_sigterm_right_after_listening_is_a_clean_shutdown(tmp_path):
    """The SIGTERM handler used to be installed by a task that had not run yet when the broker
    said it was listening: a SIGTERM in that window killed it uncleanly (exit -15, no
    clean-shutdown marker). Several tries, since the window is short."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    for _ in range(5):
        broker.start()
        assert broker.stop() == 0, broker.log_text()
        assert (tmp_path / "data" / ".clean-shutdown").exists()
