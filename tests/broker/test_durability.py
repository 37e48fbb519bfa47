"""Crash and shutdown behaviour of real broker processes."""

from __future__ import annotations

import signal

import trio
from sluice.protocol import messages as m
from sluice.protocol.errors import OutOfOrderSequenceError

from tests.broker.conftest import RawClient, create_topic, make_batch, produce, read_values
from tests.processes import BrokerProcess


def start_broker(tmp_path) -> BrokerProcess:
    """A broker process on the data dir ``tmp_path/data`` (restartable on the same dir)."""
    process = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    process.start()
    return process


async def test_sigkill_during_acks_all_loses_nothing_acknowledged(tmp_path):
    broker = start_broker(tmp_path)
    async with await RawClient.connect(broker.port) as setup:
        await create_topic(setup, "t", partitions=2)
    acked: dict[int, list[bytes]] = {0: [], 1: []}
    enough = trio.Event()

    async def producer(partition: int) -> None:
        seq = 0
        try:
            client = await RawClient.connect(broker.port)
        except OSError:
            return
        async with client:
            try:
                while True:
                    values = [f"p{partition}-{seq}-{i}".encode() for i in range(10)]
                    # Pipeline a few requests so some are in flight when the kill lands.
                    response = await produce(
                        client, "t", make_batch(values), partition=partition, acks=-1
                    )
                    assert response.partitions[0].error == 0
                    acked[partition].extend(values)
                    seq += 1
                    if seq >= 30:
                        enough.set()
            except (trio.BrokenResourceError, trio.ClosedResourceError, Exception):
                return  # the broker died under us: whatever was not acked may or may not be there

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer, 0)
            nursery.start_soon(producer, 1)
            await enough.wait()
            broker.kill()
        restarted = start_broker(tmp_path)
        reader = await RawClient.connect(restarted.port)
        for partition in (0, 1):
            stored = await read_values(reader, "t", partition)
            assert len(stored) == len(set(stored)), "duplicates after recovery"
            assert stored[: len(acked[partition])] == acked[partition], "acked records lost"
        await reader.aclose()
        assert restarted.stop() == 0


async def test_sigterm_shuts_down_cleanly_and_restart_needs_no_recovery(tmp_path):
    broker = start_broker(tmp_path)
    client = await RawClient.connect(broker.port)
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"kept"]), acks=1)
    await client.aclose()
    assert broker.stop(signal.SIGTERM) == 0
    assert (tmp_path / "data" / ".clean-shutdown").exists()
    assert "flushed and closed cleanly" in broker.log_text()
    again = start_broker(tmp_path)
    client = await RawClient.connect(again.port)
    assert await read_values(client, "t") == [b"kept"]
    await client.aclose()
    assert again.stop(signal.SIGINT) == 0


async def test_idempotent_producer_state_survives_crash(tmp_path):
    broker = start_broker(tmp_path)
    client = await RawClient.connect(broker.port)
    await create_topic(client, "t")
    init = await client.request(m.InitProducerIdRequest())
    pid = init.producer_id

    def batch(seq: int, value: bytes) -> bytes:
        return bytes(make_batch([value], producer_id=pid, producer_epoch=0, base_sequence=seq))

    for seq in range(3):
        response = await produce(client, "t", batch(seq, b"v%d" % seq), acks=-1)
        assert response.partitions[0].error == 0
    await client.aclose()
    broker.kill()
    restarted = start_broker(tmp_path)
    client = await RawClient.connect(restarted.port)
    retry = await produce(client, "t", batch(2, b"v2"), acks=-1)
    assert retry.partitions[0].error == 0 and retry.partitions[0].base_offset == 2
    assert (await produce(client, "t", batch(5, b"gap"))).partitions[
        0
    ].error == OutOfOrderSequenceError.code
    assert (await produce(client, "t", batch(3, b"v3"))).partitions[0].base_offset == 3
    # A new producer never gets the id of one issued before the crash.
    assert (await client.request(m.InitProducerIdRequest())).producer_id != pid
    assert await read_values(client, "t") == [b"v0", b"v1", b"v2", b"v3"]
    await client.aclose()
    assert restarted.stop() == 0
