"""Scenario 6: SIGTERM while producing (acks=all, pipelined) and long-polling.

Promised: every acks=all request is either answered (after its fdatasync: the records are there
after a restart) or not answered at all -- never answered and then lost; the broker exits 0,
writes the clean-shutdown marker, and the next start does no recovery (its log says so).
"""

from __future__ import annotations

import signal
import time

import pytest
import trio
from sluice.protocol import messages as m
from sluice.protocol.errors import BrokerShuttingDownError, ProtocolError

from tests.broker.conftest import RawClient, create_topic, make_batch, read_values
from tests.torture.harness import MODES, Broker, record

SCALE = {"quick": dict(rounds=1, producers=4, fetchers=4), "long": dict(rounds=5, producers=8, fetchers=20)}
NET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError)


async def pipelined_producer(port: int, index: int, outcome: dict, running: trio.Event, rnd: int) -> None:
    """Keep up to 8 acks=all produce requests in flight; note what each one was told."""
    try:
        client = await RawClient.connect(port)
    except OSError:
        return
    sent: dict[int, list[bytes]] = {}
    seq = 0

    async def reader() -> None:
        while sent:
            response = await client.receive()
            cid = min(sent)
            values = sent.pop(cid)
            error = response.partitions[0].error if response.partitions else response.error
            if error == 0:
                outcome["acked"] += values
            elif error == BrokerShuttingDownError.code or response.error == BrokerShuttingDownError.code:
                outcome["refused"] += len(values)
            else:
                outcome["errors"] += len(values)
            if len(sent) < 4:
                return

    async with client:
        try:
            while True:
                while len(sent) < 8:
                    values = [b"r%d-p%d-%07d-%d" % (rnd, index, seq, i) for i in range(20)]
                    cid = await client.send(m.ProduceRequest(acks=-1, timeout_ms=30_000, partitions=[
                        m.ProducePartition(topic="s", partition=index % 2, records=make_batch(values))]))
                    sent[cid] = values
                    seq += 1
                running.set()
                await reader()
        except NET_ERRORS:
            outcome["unanswered"] += sum(len(v) for v in sent.values())


async def long_poller(port: int, outcome: dict) -> None:
    try:
        async with await RawClient.connect(port) as client:
            while True:
                response = await client.request(m.FetchRequest(
                    max_wait_ms=5000, min_bytes=10**9, max_bytes=1 << 16,
                    partitions=[m.FetchPartition(topic="s", partition=0, offset=0, max_bytes=1 << 16)]))
                outcome["fetches"] += 1
                assert response.error in (0, BrokerShuttingDownError.code)
    except NET_ERRORS:
        pass


@pytest.mark.parametrize("mode", MODES)
async def test_sigterm_under_load_loses_no_answered_record(tmp_path, mode):
    scale = SCALE[mode]
    broker = Broker(tmp_path, settings={"shutdown_grace_s": 5.0})
    broker.start()
    async with await RawClient.connect(broker.port) as client:
        await create_topic(client, "s", partitions=2)
    total = {"acked": 0, "refused": 0, "unanswered": 0, "errors": 0, "fetches": 0}
    acked: list[bytes] = []
    stop_seconds = []
    for rnd in range(scale["rounds"]):
        outcome = {"acked": [], "refused": 0, "unanswered": 0, "errors": 0, "fetches": 0}
        running = trio.Event()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(scale["producers"]):
                    nursery.start_soon(pipelined_producer, broker.port, i, outcome, running, rnd)
                for _ in range(scale["fetchers"]):
                    nursery.start_soon(long_poller, broker.port, outcome)
                await running.wait()
                await trio.sleep(0.7)
                mark = broker.log_size()
                began = time.monotonic()
                code = await trio.to_thread.run_sync(broker.stop, signal.SIGTERM)
                stop_seconds.append(time.monotonic() - began)
        assert code == 0, broker.log_text()
        assert (broker.data_dir / ".clean-shutdown").exists()
        assert "logs flushed and closed cleanly" in broker.log_since(mark)
        acked += outcome.pop("acked")
        for key, value in outcome.items():
            total[key] += value
        mark = broker.log_size()
        broker.start()
        assert "clean shutdown marker found: no recovery needed" in broker.log_since(mark)
        assert "recovered every partition" not in broker.log_since(mark)
    try:
        async with await RawClient.connect(broker.port) as client:
            stored = await read_values(client, "s", 0) + await read_values(client, "s", 1)
        lost = len(set(acked) - set(stored))
        record(f"6-shutdown-{mode}", rounds=scale["rounds"], acked_records=len(acked), lost=lost,
               duplicated=len(stored) - len(set(stored)), refused_records=total["refused"],
               unanswered_records=total["unanswered"], error_records=total["errors"],
               long_polls_answered=total["fetches"],
               slowest_stop_s=round(max(stop_seconds), 2))
        assert acked and lost == 0
        assert len(stored) == len(set(stored))
        assert total["errors"] == 0
    finally:
        assert broker.stop() == 0
