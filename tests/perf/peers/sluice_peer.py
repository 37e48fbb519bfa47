"""Sluice through its own client library (``client.Producer``, ``Consumer``, ``Admin``)."""

from __future__ import annotations

import inspect
import os
import time

import trio

import client
from peers.common import (
    Timer, check_sequence, emit_ready, latency_summary, make_key, make_values, seq_of,
    stamp_of, stamped_value, throughput,
)

CHUNK = 10_000  # records handed to send_batch per call


async def _create(address: str, topic: str) -> None:
    async with client.Admin(address) as admin:
        await admin.create_topic(topic, 1)


async def _delete(address: str, topic: str) -> None:
    async with client.Admin(address) as admin:
        await admin.delete_topic(topic)


async def _delivered(result) -> int:
    """How many records of one ``send_batch`` result were acknowledged."""
    if inspect.isawaitable(result):
        try:
            return len(await result)
        except Exception:
            return 0
    ok = 0
    for handle in result:
        try:
            handle.result()
            ok += 1
        except Exception:
            pass
    return ok


async def produce(p: dict) -> dict:
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    await _create(address, topic)
    values = make_values(n, size)
    items = [(make_key(i), v) for i, v in enumerate(values)] if p.get("keys", True) else values
    chunks = [items[i : i + CHUNK] for i in range(0, n, CHUNK)]
    results = []
    async with client.Producer(address, acks=p["acks"], linger_ms=p.get("linger_ms", 5)) as prod:
        await prod.partitions_for(topic)
        with Timer(p.get("server_pid")) as timer:
            for chunk in chunks:
                results.append(await prod.send_batch(topic, chunk))
            await prod.flush()
    acked = 0
    for result in results:
        acked += await _delivered(result)
    return throughput(timer, n, size, acked=acked)


async def consume(p: dict) -> dict:
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    seqs = []
    deadline = trio.current_time() + p.get("timeout_s", 120)
    async with client.Consumer(address, auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        with Timer(p.get("server_pid")) as timer:
            with trio.move_on_at(deadline):
                got = 0
                while got < n:
                    records = await cons.getmany()
                    got += len(records)
                    seqs += [seq_of(r.value) for r in records]
    result = throughput(timer, len(seqs), size, **check_sequence(seqs, n))
    if p.get("delete"):
        await _delete(address, topic)
    return result


async def e2e_consume(p: dict) -> dict:
    address, topic, expected = p["address"], p["topic"], p["expected"]
    warmup = p.get("warmup_records", 0)
    await _create(address, topic)
    seqs, latencies = [], []
    now_ns = time.monotonic_ns
    async with client.Consumer(address, auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        emit_ready()
        with Timer(p.get("server_pid")) as timer:
            with trio.move_on_after(p["timeout_s"]):
                while len(seqs) < expected:
                    records = await cons.getmany()
                    now = now_ns()
                    for r in records:
                        seq = seq_of(r.value)
                        seqs.append(seq)
                        if seq >= warmup:
                            latencies.append(now - stamp_of(r.value))
    result = {**timer.figures(), **latency_summary(latencies), **check_sequence(seqs, expected)}
    if p.get("delete"):
        await _delete(address, topic)
    return result


async def e2e_produce(p: dict) -> dict:
    """Send ``rate`` records/s for warmup + duration seconds, one record at a time as its
    time comes (records falling due in the same scheduler tick go out together)."""
    address, topic, rate = p["address"], p["topic"], p["rate"]
    total = p["expected"]
    pad = os.urandom(max(0, p["value_size"] - 16))
    handles = []
    async with client.Producer(address, acks=p["acks"], linger_ms=0) as prod:
        await prod.partitions_for(topic)
        with Timer(p.get("server_pid")) as timer:
            start = trio.current_time()
            sent = 0
            while sent < total:
                due = min(total, int((trio.current_time() - start) * rate) + 1)
                while sent < due:
                    handles.append(prod.send_nowait(
                        topic, stamped_value(sent, pad), key=make_key(sent)
                    ))
                    sent += 1
                await trio.sleep_until(start + sent / rate)
            await prod.flush()
    acked = sum(1 for h in handles if _ok(h))
    return {**timer.figures(), "sent": total, "acked": acked}


def _ok(handle) -> bool:
    try:
        handle.result()
        return True
    except Exception:
        return False


async def raw_fetch(p: dict) -> dict:
    """Fetch a partition from the beginning through the client's connection layer, without
    decoding records: what the broker's zero-copy fetch path delivers to a socket reader."""
    from client.connection import Cluster
    from client.fetcher import FetchState

    address, topic = p["address"], p["topic"]
    total = 0
    requests = 0
    async with trio.open_nursery() as nursery:
        cluster = Cluster(address, nursery)
        state = FetchState(
            auto_offset_reset="earliest", partition_max_bytes=p.get("max_bytes", 8 << 20),
            fetch_max_bytes=p.get("max_bytes", 8 << 20), fetch_max_wait_ms=0,
        )
        state.assign([(topic, 0)])
        lookup = state.list_offsets_request()
        if lookup is not None:
            state.on_list_offsets(await cluster.request(lookup), state.generation)
        with Timer(p.get("server_pid")) as timer:
            while True:
                response = await cluster.request(state.fetch_request())
                requests += 1
                chunks = state.on_fetch(response, state.generation)
                if not chunks:
                    break
                for chunk in chunks:
                    total += len(chunk.data)
        await cluster.aclose()
        nursery.cancel_scope.cancel()
    out = timer.figures()
    out.update(bytes=total, requests=requests, mb_per_s=total / timer.elapsed / 1e6)
    return out


ROLES = {
    "produce": produce,
    "consume": consume,
    "e2e-consume": e2e_consume,
    "e2e-produce": e2e_produce,
    "raw-fetch": raw_fetch,
}


def run(role: str, params: dict) -> dict:
    return trio.run(ROLES[role], params)
