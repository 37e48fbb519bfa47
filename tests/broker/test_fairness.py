"""Fairness: one connection's large requests don't hold the event loop from everyone else.

A large append is written by a worker thread; these tests hold that write half way
(``GatedWrite`` patched into the storage) and check what the rest of the broker does
meanwhile. Order is observed through ``events``, never through timing.
"""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio
from sluice.broker.adapters import session as session_module
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.session import Session
from sluice.broker.adapters.sluice.connection import SluiceAdapter, SluiceConnection
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.partition import OFF_LOOP_APPEND_BYTES
from sluice.broker.io.sockets import SocketChannel
from sluice.broker.server import open_broker, serve
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection
from sluice.protocol.errors import UnknownTopicOrPartitionError

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce, read_values
from tests.storage.storage_helpers import GatedWrite

LARGE_VALUES = [bytes([i]) * (OFF_LOOP_APPEND_BYTES // 4) for i in range(5)]  # > the threshold


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def gate(monkeypatch, events):
    gate = GatedWrite(OFF_LOOP_APPEND_BYTES, events)
    monkeypatch.setattr("sluice.broker.storage.log.write_all", gate)
    yield gate
    gate.release.set()


async def send_large_produce(client: RawClient, topic: str = "t", acks: int = 1) -> None:
    await client.send(m.ProduceRequest(acks=acks, timeout_ms=10_000, partitions=[
        m.ProducePartition(topic=topic, partition=0, records=make_batch(LARGE_VALUES))]))


async def wait_started(gate: GatedWrite) -> None:
    assert await trio.to_thread.run_sync(gate.started.wait, 10), "the large write never began"


async def test_other_connections_are_served_while_a_large_append_is_written(broker, gate, events):
    big, small = await RawClient.connect(broker.port), await RawClient.connect(broker.port)
    async with big, small:
        await create_topic(small, "t")
        await create_topic(small, "other")
        await send_large_produce(big)
        await wait_started(gate)
        metadata = await small.request(m.MetadataRequest(topics=["t"]))
        assert metadata.topics[0].error == 0
        assert (await produce(small, "other", make_batch([b"small"]))).partitions[0].error == 0
        events.append("others served")
        gate.release.set()
        response = await big.receive()
    assert response.partitions[0].error == 0 and response.partitions[0].base_offset == 0
    assert events == ["write started", "others served", "write done"]


async def test_appends_to_the_partition_wait_behind_a_large_one(broker, gate, events):
    big, small, reader = [await RawClient.connect(broker.port) for _ in range(3)]
    async with big, small, reader:
        await create_topic(small, "t")
        await send_large_produce(big)
        await wait_started(gate)
        await small.send(m.ProduceRequest(acks=1, timeout_ms=10_000, partitions=[
            m.ProducePartition(topic="t", partition=0, records=make_batch([b"after"]))]))
        # Readers see nothing of the large batch until all of it is written.
        part = (await fetch(reader, "t", 0)).partitions[0]
        assert part.error == 0 and part.high_watermark == 0 and not m.records_length(part.records)
        gate.release.set()
        first, second = await big.receive(), await small.receive()
        assert first.partitions[0].base_offset == 0
        assert second.partitions[0].error == 0
        assert second.partitions[0].base_offset == len(LARGE_VALUES)
        assert await read_values(reader, "t") == [*LARGE_VALUES, b"after"]


async def test_a_topic_deleted_during_a_large_append(broker, gate):
    big, admin = await RawClient.connect(broker.port), await RawClient.connect(broker.port)
    async with big, admin:
        await create_topic(admin, "t")
        await send_large_produce(big)
        await wait_started(gate)
        deleted = await admin.request(m.DeleteTopicsRequest(topics=["t"]))
        assert deleted.topics[0].error == 0
        gate.release.set()
        response = await big.receive()
        assert response.partitions[0].error == UnknownTopicOrPartitionError.code
        await create_topic(admin, "t")
        again = await produce(admin, "t", make_batch([b"fresh"]))
        assert again.partitions[0].error == 0 and again.partitions[0].base_offset == 0
        assert await read_values(admin, "t") == [b"fresh"]


async def test_shutdown_waits_for_a_large_append_in_progress(nursery, tmp_path, gate, events):
    config = BrokerConfig(port=0, data_dir=tmp_path / "data", shutdown_grace_s=10.0)
    handle = await nursery.start(partial(serve, config))
    big = await RawClient.connect(handle.port)
    async with big:
        await create_topic(big, "t")
        await send_large_produce(big, acks=-1)
        await wait_started(gate)
        handle.shutdown()
        events.append("shutdown asked")
        gate.release.set()
        response = await big.receive()
    assert response.partitions[0].error == 0, response  # answered, after its fsync
    assert events == ["write started", "shutdown asked", "write done"]


async def test_the_reader_lets_others_run_while_receiving_a_large_request(tmp_path):
    """A large request already buffered in the socket is received in pieces with other tasks
    running between them, not in one go (the reader's byte budget)."""
    config = BrokerConfig(in_memory=True)
    broker, _ = await trio.to_thread.run_sync(open_broker, config)
    broker.topics.create("t", 1, {})
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    size = session_module.RECEIVE_BYTES + session_module.FAIR_SHARE_BYTES // 2
    batch = make_batch([b"x" * size])
    _, pieces = ClientConnection().send_request(m.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=batch)]))
    frame = b"".join(bytes(p) for p in pieces)
    theirs.setblocking(False)
    assert theirs.send(frame) == len(frame), "the socket buffer must hold the whole request"
    steps: dict[object, int] = {}  # task -> how many times it ran (from one yield to the next)
    seen: list[tuple[str, int]] = []  # (what the reader did, its steps so far)
    adapter = SluiceAdapter(broker, config, InFlight(), ("127.0.0.1", 0))
    channel = SocketChannel(trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
                            send_timeout_s=30, peer="test")
    session = Session(channel, SluiceConnection(adapter, config.max_frame_bytes, "test"),
                      adapter.inflight, idle_timeout_s=30, max_in_flight=4)
    receive, handle = session._receive_into, session._serve

    def reader_steps() -> int:
        return steps.get(trio.lowlevel.current_task(), 0)

    async def receive_into(view, idle):
        n = await receive(view, idle)
        seen.append(("received", reader_steps()))
        return n

    def handled(request):
        seen.append(("handled", reader_steps()))
        return handle(request)

    session._receive_into, session._serve = receive_into, handled

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task) -> None:
            steps[task] = steps.get(task, 0) + 1

    counter = CountSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run)
                while not any(what == "handled" for what, _ in seen):
                    await trio.sleep(0)  # a bare checkpoint: run until the request is handled
                nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(counter)
        theirs.close()
    first_receive = next(n for what, n in seen if what == "received")
    handled_at = next(n for what, n in seen if what == "handled")
    assert handled_at > first_receive, seen  # it yielded (let others run) in between
