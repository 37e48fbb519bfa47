"""Scenario 9: fairness under large batches -- a small producer/consumer pair beside a producer
of 8 MiB batches, on a real broker process.

Found by fault testing (issue 13.8): the broker read a connection's requests back to back and
wrote each 8 MiB batch on its event loop, so the small pair's end-to-end p99 went from 1.9 ms
to 252 ms and a metadata round trip stalled up to 200 ms. Promised and checked here
(behaviour only; the latency figures are reported, not asserted -- tests/perf/
fairness_bench.py measures them against the previous code): the small pair keeps making
progress and loses nothing (every record acknowledged, consumed once, in order); metadata
requests keep being answered; the large producer progresses too and every batch it was
acknowledged is in its log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import trio
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, iter_batches

from tests.broker.conftest import RawClient, create_topic, make_batch
from tests.torture.harness import MODES, ROOT, Broker, child_env, record

SCALE = {"quick": dict(records=1_000, rate=400), "long": dict(records=10_000, rate=500)}
HEAVY = ROOT / "tests" / "perf" / "fairness_bench.py"  # its "heavy" role: 8 MiB batches
RECORDS_PER_HEAVY_BATCH = 8


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


async def small_producer(port: int, records: int, rate: int, sent_at: dict[int, float]) -> None:
    """One record per produce request (acks=1), ``rate`` a second; each must be acknowledged."""
    async with await RawClient.connect(port) as client:
        began = time.monotonic()
        for seq in range(records):
            pause = began + seq / rate - time.monotonic()
            if pause > 0:
                await trio.sleep(pause)  # pacing the load, not synchronising
            sent_at[seq] = time.monotonic()
            response = await client.request(m.ProduceRequest(acks=1, timeout_ms=10_000, partitions=[
                m.ProducePartition(topic="small", partition=0, records=make_batch([b"%d" % seq]))]))
            assert response.partitions[0].error == 0, response


async def small_consumer(port: int, records: int, sent_at: dict[int, float],
                         latencies: list[float]) -> list[int]:
    """Long-poll fetches from offset 0 until ``records`` records arrived; their values."""
    seen: list[int] = []
    async with await RawClient.connect(port) as client:
        offset = 0
        while len(seen) < records:
            response = await client.request(m.FetchRequest(
                max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, partitions=[
                    m.FetchPartition(topic="small", partition=0, offset=offset, max_bytes=1 << 20)]))
            now = time.monotonic()
            part = response.partitions[0]
            assert part.error == 0, part
            for batch in iter_batches(part.records):
                for rec in decode_records(batch):
                    if rec.offset >= offset:
                        seq = int(rec.value)
                        seen.append(seq)
                        latencies.append(now - sent_at[seq])
                        offset = rec.offset + 1
    return seen


async def metadata_probe(port: int, answered: list[float], stop: trio.Event) -> None:
    async with await RawClient.connect(port) as client:
        while not stop.is_set():
            began = time.monotonic()
            assert (await client.request(m.MetadataRequest(topics=["small"]))).error == 0
            answered.append(time.monotonic() - began)
            with trio.move_on_after(0.02):
                await stop.wait()


@pytest.mark.parametrize("mode", MODES)
async def test_small_pair_beside_large_batches(tmp_path, mode):
    scale = SCALE[mode]
    broker = Broker(tmp_path)
    broker.start()
    heavy = None
    try:
        async with await RawClient.connect(broker.port) as admin:
            await create_topic(admin, "small")
            await create_topic(admin, "heavy", segment_bytes=64 << 20)
        heavy = subprocess.Popen(
            [sys.executable, str(HEAVY), "heavy", str(broker.port), "4"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
        )
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        metadata: list[float] = []
        stop = trio.Event()
        with trio.fail_after(60 + scale["records"] / scale["rate"] * 3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(metadata_probe, broker.port, metadata, stop)
                nursery.start_soon(small_producer, broker.port, scale["records"], scale["rate"],
                                   sent_at)
                seen = await small_consumer(broker.port, scale["records"], sent_at, latencies)
                stop.set()
        out, _ = heavy.communicate(timeout=120)  # closing its stdin stops it
        heavy_figures = json.loads(out)
        assert seen == list(range(scale["records"]))  # nothing lost, duplicated or reordered
        assert len(metadata) > 0
        assert heavy_figures["batches"] > 0
        async with await RawClient.connect(broker.port) as admin:
            end = (await admin.request(m.ListOffsetsRequest(partitions=[
                m.ListOffsetsPartition(topic="heavy", partition=0, timestamp=-1)]))).partitions[0]
        assert end.offset == heavy_figures["batches"] * RECORDS_PER_HEAVY_BATCH
        record(f"9-fairness-{mode}", small_records=scale["records"], small_rate=scale["rate"],
               e2e_p50_ms=pct(latencies, 0.5), e2e_p99_ms=pct(latencies, 0.99),
               e2e_max_ms=round(max(latencies) * 1000, 2),
               metadata_p99_ms=pct(metadata, 0.99), heavy_batches=heavy_figures["batches"],
               heavy_mib_s=round(heavy_figures["mib_per_s"], 1))
    finally:
        if heavy is not None and heavy.poll() is None:
            heavy.kill()
            heavy.communicate()
        assert broker.stop() == 0
