"""Connection limits, idle clients and clients that stop reading."""

from __future__ import annotations

import socket

import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.protocol import messages as m
from sluice.protocol.errors import RemoteProtocolError, TooManyConnectionsError

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(
        port=0,
        data_dir=tmp_path / "data",
        max_connections=3,
        idle_timeout_s=0.5,
        send_timeout_s=1.0,
        max_in_flight=4,
        shutdown_grace_s=1.0,
    )


async def test_connections_over_the_limit_are_refused(broker):
    with trio.fail_after(10):
        clients = [await RawClient.connect(broker.port) for _ in range(3)]
        for c in clients:
            assert (await c.request(m.MetadataRequest())).error == 0
        extra = await RawClient.connect(broker.port)
        with pytest.raises(RemoteProtocolError, match="refused the connection") as refused:
            await extra.request(m.MetadataRequest())  # told why, then closed
        assert isinstance(refused.value.__cause__, TooManyConnectionsError)
        assert "max_connections (3)" in refused.value.__cause__.message
        assert await extra.stream.receive_some(1) == b""
        await extra.aclose()
        await clients[0].aclose()
        # A slot frees up once a client leaves.
        while True:
            again = await RawClient.connect(broker.port)
            try:
                assert (await again.request(m.MetadataRequest())).error == 0
                break
            except (trio.BrokenResourceError, Exception):
                await again.aclose()
                await trio.sleep(0.01)
        await again.aclose()
        for c in clients[1:]:
            await c.aclose()


async def test_idle_connection_is_closed(broker):
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        assert await stream.receive_some(1) == b""
        await stream.aclose()


async def test_client_that_stops_reading_does_not_block_others(broker):
    with trio.fail_after(20):
        setup = await RawClient.connect(broker.port)
        await create_topic(setup, "t")
        await produce(setup, "t", make_batch([b"x" * 100_000] * 20))
        # A client that pipelines big fetches and never reads a byte of the answers.
        hog = await RawClient.connect(broker.port)
        hog.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(50):
            cid, pieces = hog.conn.send_request(
                m.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=4 << 20,
                               partitions=[m.FetchPartition(topic="t", partition=0, offset=0, max_bytes=4 << 20)])
            )
            with trio.move_on_after(0.2):
                await hog.stream.send_all(b"".join(bytes(p) for p in pieces))
        # Everyone else is served meanwhile.
        for _ in range(5):
            assert (await fetch(setup, "t", 0, max_bytes=1000)).partitions[0].error == 0
        # And the hog is disconnected once its responses stall past send_timeout_s, which
        # frees whatever the broker held for it.
        with trio.fail_after(10):
            while broker.open_connections > 1:
                await trio.sleep(0.01)
        await hog.aclose()
        await setup.aclose()
