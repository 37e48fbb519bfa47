"""Fixtures for broker tests: an in-process broker on port 0 and a raw protocol client.

The raw client speaks the sans-IO protocol directly (no client library), so these tests pin
the broker's behaviour on the wire, including for requests no well-behaved client would send.
"""

from __future__ import annotations

import time
from functools import partial

import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.protocol import messages as m
from sluice.protocol.batch import build_batch, decode_records, iter_batches
from sluice.protocol.connection import ClientConnection, ResponseReceived
from sluice.protocol.framing import NEED_DATA
from sluice.protocol.slices import FileSlice


class StreamClient:
    """One TCP connection driven by a sans-IO client connection (``conn``, whose responses
    are ``response_event``s), for tests."""

    response_event: type

    def __init__(self, stream: trio.SocketStream, conn) -> None:
        self.stream = stream
        self.conn = conn

    async def send_pieces(self, pieces) -> None:
        assert not any(isinstance(p, FileSlice) for p in pieces)
        await self.stream.send_all(b"".join(bytes(p) for p in pieces))

    async def receive(self):
        while True:
            event = self.conn.next_event()
            if isinstance(event, self.response_event):
                return event.response
            assert event is NEED_DATA, event
            self.conn.receive_data(await self.stream.receive_some(1 << 20))

    async def read_until_closed(self) -> bytes:
        """Everything the broker sends until it closes the connection."""
        chunks = []
        while chunk := await self.stream.receive_some(1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


class RawClient(StreamClient):
    """A minimal Sluice-protocol client over one TCP connection, for tests."""

    response_event = ResponseReceived

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream, ClientConnection())

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, request) -> int:
        cid, pieces = self.conn.send_request(request)
        await self.send_pieces(pieces)
        return cid

    async def request(self, request):
        await self.send(request)
        return await self.receive()


def make_batch(values: list[bytes], *, key: bytes | None = None, **fields: int) -> bytearray:
    now = time.time_ns() // 1_000_000
    return build_batch([(key, v, [], now) for v in values], **fields)


async def create_topic(client: RawClient, name: str, partitions: int = 1, **configs: int):
    response = await client.request(
        m.CreateTopicsRequest(
            topics=[m.TopicSpec(name=name, partitions=partitions, configs=configs)]
        )
    )
    assert response.topics[0].error == 0, response
    return response


async def produce(client: RawClient, topic: str, batch: bytes, *, partition: int = 0, acks: int = 1):
    return await client.request(
        m.ProduceRequest(
            acks=acks,
            timeout_ms=10_000,
            partitions=[m.ProducePartition(topic=topic, partition=partition, records=batch)],
        )
    )


async def fetch(client: RawClient, topic: str, offset: int, *, partition: int = 0,
                max_wait_ms: int = 0, min_bytes: int = 1, max_bytes: int = 1 << 20):
    return await client.request(
        m.FetchRequest(
            max_wait_ms=max_wait_ms,
            min_bytes=min_bytes,
            max_bytes=max_bytes,
            partitions=[
                m.FetchPartition(topic=topic, partition=partition, offset=offset, max_bytes=max_bytes)
            ],
        )
    )


async def read_records(client: RawClient, topic: str, partition: int = 0) -> list[tuple[int, bytes]]:
    """Every ``(offset, value)`` of a partition, from its start to its end."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        part = (await fetch(client, topic, offset, partition=partition, max_bytes=4 << 20)).partitions[0]
        assert part.error == 0, part
        got = [(r.offset, r.value) for b in iter_batches(part.records) for r in decode_records(b)
               if r.offset >= offset]
        if not got:
            return out
        out += got
        offset = got[-1][0] + 1


async def read_values(client: RawClient, topic: str, partition: int = 0) -> list[bytes]:
    return [value for _, value in await read_records(client, topic, partition)]


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)


@pytest.fixture
async def broker(nursery, broker_config):
    """A broker served in-process on 127.0.0.1 and an ephemeral port."""
    handle = await nursery.start(partial(serve, broker_config))
    yield handle
    handle.shutdown()


@pytest.fixture
async def client(broker):
    c = await RawClient.connect(broker.port)
    yield c
    await c.aclose()
