"""A session served over a trio memory stream (the stream channel), driven by the sans-IO
client protocol: no sockets. The logs are files, so fetch answers carry file slices, which
the stream channel sends by copying."""

from __future__ import annotations

import os
from functools import partial

import msgpack
import pytest
import trio
import trio.testing
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.sluice.connection import SluiceAdapter
from sluice.broker.config import BrokerConfig
from sluice.broker.io.streams import COALESCE_BYTES, StreamChannel
from sluice.broker.server import open_broker, serve
from sluice.broker.storage import release_slices
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, iter_batches
from sluice.protocol.errors import FrameTooLargeError, UnknownTopicOrPartitionError
from sluice.protocol.framing import CLOSED, FrameDecoder
from sluice.protocol.slices import FileSlice

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce


@pytest.fixture
async def served(tmp_path):
    """``(client, broker)``: one connection to a broker over a memory stream pair."""
    config = BrokerConfig(port=0, data_dir=tmp_path / "data", max_frame_bytes=8 << 20)
    broker, _ = await trio.to_thread.run_sync(open_broker, config)
    ours, theirs = trio.testing.memory_stream_pair()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            adapter = SluiceAdapter(broker, config, InFlight(), ("127.0.0.1", 9092))
            nursery.start_soon(adapter.serve, StreamChannel(theirs, send_timeout_s=30, peer="memory"))
            yield RawClient(ours), broker
            nursery.cancel_scope.cancel()
    finally:
        broker.close()


def values(data) -> list[bytes]:
    return [r.value for batch in iter_batches(data) for r in decode_records(batch)]


async def test_produce_and_fetch_through_a_memory_stream(served):
    client, broker = served
    await create_topic(client, "t")
    first = await produce(client, "t", make_batch([b"a", b"b"]), acks=-1)
    assert (first.partitions[0].error, first.partitions[0].base_offset) == (0, 0)
    big = [bytes([i % 256]) * 1000 for i in range(3 * COALESCE_BYTES // 1000)]  # several sends
    second = await produce(client, "t", make_batch(big))
    assert (second.partitions[0].error, second.partitions[0].base_offset) == (0, 2)
    read = broker.topics.partition("t", 0).read(0, 1 << 20)
    assert isinstance(read.slices[0], FileSlice)  # what the fetch below sends: copied here
    release_slices(read.slices)
    answer = (await fetch(client, "t", 0, max_bytes=4 << 20)).partitions[0]
    assert answer.error == 0 and answer.high_watermark == 2 + len(big)
    assert values(answer.records) == [b"a", b"b", *big]


async def test_a_long_poll_is_woken_by_a_produce_pipelined_behind_it(served):
    """The reader takes the produce while the fetch waits in the writer; answers keep order."""
    client, _ = served
    await create_topic(client, "t")
    await client.send(m.FetchRequest(max_wait_ms=60_000, min_bytes=1, max_bytes=1 << 20, partitions=[
        m.FetchPartition(topic="t", partition=0, offset=0, max_bytes=1 << 20)]))
    await client.send(m.ProduceRequest(acks=1, timeout_ms=10_000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=make_batch([b"late"]))]))
    with trio.fail_after(10):
        fetched, produced = await client.receive(), await client.receive()
    assert values(fetched.partitions[0].records) == [b"late"]
    assert produced.partitions[0].error == 0


async def test_errors_answer_and_the_connection_carries_on(served):
    client, _ = served
    missing = (await fetch(client, "nope", 0)).partitions[0]
    assert missing.error == UnknownTopicOrPartitionError.code
    assert (await client.request(m.MetadataRequest())).error == 0


async def test_broken_framing_gets_one_error_frame_then_the_end(served):
    client, _ = served
    await client.stream.send_all((64 << 20).to_bytes(4, "big") + b"\0" * 8)  # over the limit
    decoder = FrameDecoder()
    decoder.receive_data(await client.read_until_closed())
    decoder.receive_data(b"")
    header = msgpack.unpackb(decoder.next_frame().header, raw=False)
    assert (header["cid"], header["error"]) == (-1, FrameTooLargeError.code)
    assert decoder.next_frame() is CLOSED


async def test_without_sendfile_connections_take_the_stream_path(nursery, tmp_path, monkeypatch):
    """``use_sendfile = false``: a real connection served by the stream channel (copies)."""

    def no_sendfile(*args):
        raise AssertionError("sendfile used although use_sendfile is false")

    monkeypatch.setattr(os, "sendfile", no_sendfile)
    config = BrokerConfig(port=0, data_dir=tmp_path / "data", use_sendfile=False)
    handle = await nursery.start(partial(serve, config))
    async with await RawClient.connect(handle.port) as client:
        await create_topic(client, "t")
        big = [bytes([i]) * 100_000 for i in range(4)]  # well over the copy-below size
        assert (await produce(client, "t", make_batch(big))).partitions[0].error == 0
        assert values((await fetch(client, "t", 0, max_bytes=4 << 20)).partitions[0].records) == big
    handle.shutdown()
