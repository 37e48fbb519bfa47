"""Scenario 5: resource scale against a real broker process -- many partitions, many segments
in one partition, many concurrent long-polling consumers. Reports startup time (clean and after
kill -9), RSS, descriptors and fetch latency; asserts only generous bounds (descriptors capped,
everything readable, every long poll woken)."""

from __future__ import annotations

import random
import statistics
import time

import pytest
import trio
from sluice.protocol import messages as m

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce
from tests.torture.harness import MODES, Broker, record

SCALE = {
    "quick": dict(topics=5, partitions=20, segments=600, pollers=100),
    "long": dict(topics=10, partitions=100, segments=10_000, pollers=500),
}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


async def restart_figures(broker: Broker, prefix: str) -> dict:
    """Stop cleanly and start; kill -9 and start: startup seconds, RSS and fds after each."""
    out = {}
    assert broker.stop() == 0
    broker.start()
    out[f"{prefix}clean_start_s"] = round(broker.start_seconds[-1], 2)
    broker.kill()
    broker.start()
    out[f"{prefix}unclean_start_s"] = round(broker.start_seconds[-1], 2)
    out[f"{prefix}rss_mib"] = round(broker.rss_mib(), 1)
    out[f"{prefix}fds"] = broker.open_fds()
    return out


@pytest.mark.parametrize("mode", MODES)
async def test_many_partitions(tmp_path, mode):
    scale = SCALE[mode]
    broker = Broker(tmp_path)
    broker.start()
    try:
        total = scale["topics"] * scale["partitions"]
        async with await RawClient.connect(broker.port) as client:
            for t in range(scale["topics"]):
                await create_topic(client, f"many{t}", partitions=scale["partitions"])
            for t in range(scale["topics"]):
                for p in range(scale["partitions"]):
                    part = (await produce(client, f"many{t}", make_batch([b"x%d" % p]), partition=p)).partitions[0]
                    assert part.error == 0
        figures = {"partitions": total, "running_rss_mib": round(broker.rss_mib(), 1),
                   "running_fds": broker.open_fds()}
        figures.update(await restart_figures(broker, ""))
        async with await RawClient.connect(broker.port) as client:
            latencies = []
            for _ in range(200):
                t, p = random.randrange(scale["topics"]), random.randrange(scale["partitions"])
                began = time.perf_counter()
                part = (await fetch(client, f"many{t}", 0, partition=p)).partitions[0]
                latencies.append(time.perf_counter() - began)
                assert part.error == 0 and len(part.records) > 0
        figures.update(fetch_p50_ms=pct(latencies, 0.5), fetch_p99_ms=pct(latencies, 0.99))
        record(f"5-scale-partitions-{mode}", **figures)
        # one active segment (.log) descriptor per partition, plus sockets and the like
        assert figures["fds"] < total + 100
    finally:
        assert broker.stop() == 0


@pytest.mark.parametrize("mode", MODES)
async def test_many_segments_in_one_partition(tmp_path, mode):
    scale = SCALE[mode]
    broker = Broker(tmp_path)
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "deep", segment_bytes=1, index_interval_bytes=1)
            began = time.monotonic()
            for i in range(scale["segments"]):  # every batch rolls a new segment
                cid = await client.send(m.ProduceRequest(acks=1, timeout_ms=10_000, partitions=[
                    m.ProducePartition(topic="deep", partition=0, records=make_batch([b"%d" % i]))]))
                if i % 50 == 49 or i == scale["segments"] - 1:
                    for _ in range(50 if i % 50 == 49 else (i % 50) + 1):
                        assert (await client.receive()).partitions[0].error == 0
            fill_s = time.monotonic() - began
            assert cid >= 0
            described = await client.request(m.DescribeTopicsRequest(topics=["deep"]))
            segments = described.topics[0].partitions[0].segments
        assert segments >= scale["segments"]
        figures = {"segments": segments, "fill_s": round(fill_s, 1)}
        figures.update(await restart_figures(broker, ""))
        async with await RawClient.connect(broker.port) as client:
            latencies = []
            for _ in range(300):  # random reads across all segments (the LRU caps descriptors)
                offset = random.randrange(scale["segments"])
                began = time.perf_counter()
                part = (await fetch(client, "deep", offset, max_bytes=1)).partitions[0]
                latencies.append(time.perf_counter() - began)
                assert part.error == 0 and len(part.records) > 0
            figures["fds_after_random_reads"] = broker.open_fds()
        figures.update(fetch_p50_ms=pct(latencies, 0.5), fetch_p99_ms=pct(latencies, 0.99))
        record(f"5-scale-segments-{mode}", **figures)
        assert figures["fds_after_random_reads"] < 100  # not one per segment
    finally:
        assert broker.stop() == 0


@pytest.mark.parametrize("mode", MODES)
async def test_many_long_polling_consumers(tmp_path, mode):
    scale = SCALE[mode]
    broker = Broker(tmp_path)
    broker.start()
    partitions = 10
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "poll", partitions=partitions)
        woke: list[float] = []
        sent_at: dict[int, float] = {}
        ready = trio.Semaphore(0)

        async def poller(index: int) -> None:
            p = index % partitions
            async with await RawClient.connect(broker.port) as c:
                ready.release()
                response = await fetch(c, "poll", 0, partition=p, max_wait_ms=20_000)
                assert response.partitions[0].error == 0 and len(response.partitions[0].records) > 0
                woke.append(time.perf_counter() - sent_at[p])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(scale["pollers"]):
                    nursery.start_soon(poller, i)
                for _ in range(scale["pollers"]):
                    await ready.acquire()
                await trio.sleep(0.5)  # every fetch is parked in its long poll
                fds, rss = broker.open_fds(), broker.rss_mib()
                async with await RawClient.connect(broker.port) as client:
                    for p in range(partitions):
                        sent_at[p] = time.perf_counter()
                        await produce(client, "poll", make_batch([b"wake"]), partition=p)
        assert len(woke) == scale["pollers"]
        record(f"5-scale-pollers-{mode}", pollers=scale["pollers"], fds_while_polling=fds,
               rss_while_polling_mib=round(rss, 1), wake_p50_ms=pct(woke, 0.5),
               wake_p99_ms=pct(woke, 0.99), wake_max_ms=pct(woke, 1.0))
    finally:
        assert broker.stop() == 0


def test_median_helper():
    assert pct([0.001, 0.002, 0.003], 0.5) == 2.0
    assert statistics.median([1, 2, 3]) == 2
