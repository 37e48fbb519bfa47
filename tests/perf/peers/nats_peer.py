"""NATS JetStream through nats-py: a file-storage stream, acknowledged publishes in flight
1,000 at a time (futures gathered), an ordered consumer to read back. NATS messages have no
key (the subject routes them), so records carry only the value."""

from __future__ import annotations

import asyncio
import os
import time

import nats
from nats.js.api import StorageType

from peers.common import (
    Timer,
    check_sequence,
    emit_ready,
    latency_summary,
    make_values,
    seq_of,
    stamp_of,
    stamped_value,
    throughput,
)

IN_FLIGHT = 1000


def _names(topic: str) -> tuple[str, str]:
    name = topic.replace("-", "_").replace(".", "_").upper()
    return name, topic.replace("-", ".")


async def _connect(address: str):
    nc = await nats.connect(f"nats://{address}", max_reconnect_attempts=0)
    return nc, nc.jetstream()


async def _fresh_stream(js, topic: str) -> str:
    name, subject = _names(topic)
    try:
        await js.delete_stream(name)
    except Exception:
        pass
    await js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE)
    return subject


async def _delete_stream(js, topic: str) -> None:
    try:
        await js.delete_stream(_names(topic)[0])
    except Exception:
        pass


async def produce(p: dict) -> dict:
    nc, js = await _connect(p["address"])
    n, size = p["records"], p["value_size"]
    subject = await _fresh_stream(js, p["topic"])
    values = make_values(n, size)
    acked = 0
    with Timer(p.get("server_pid")) as timer:
        for start in range(0, n, IN_FLIGHT):
            futures = [await js.publish_async(subject, v) for v in values[start : start + IN_FLIGHT]]
            for ack in await asyncio.gather(*futures, return_exceptions=True):
                if not isinstance(ack, BaseException):
                    acked += 1
    await nc.close()
    return throughput(timer, n, size, acked=acked)


async def _read(js, subject: str, expected: int, timeout_s: float, on_batch) -> None:
    """Ordered push consumer from the first message; ``on_batch(values, now_ns)`` per
    message delivered (the callback runs once per message in nats-py)."""
    done = asyncio.Event()
    count = 0

    async def handler(msg) -> None:
        nonlocal count
        on_batch(msg.data, time.monotonic_ns())
        count += 1
        if count >= expected:
            done.set()

    sub = await js.subscribe(subject, cb=handler, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        pass
    await sub.unsubscribe()


async def consume(p: dict) -> dict:
    nc, js = await _connect(p["address"])
    n, size = p["records"], p["value_size"]
    subject = _names(p["topic"])[1]
    values = []  # checked after the clock stops (the same for every system)
    with Timer(p.get("server_pid")) as timer:
        await _read(js, subject, n, p.get("timeout_s", 120), lambda v, _: values.append(v))
    seqs = [seq_of(v) for v in values]
    result = throughput(timer, len(seqs), size, **check_sequence(seqs, n))
    if p.get("delete"):
        await _delete_stream(js, p["topic"])
    await nc.close()
    return result


async def e2e_consume(p: dict) -> dict:
    nc, js = await _connect(p["address"])
    expected, warmup = p["expected"], p.get("warmup_records", 0)
    subject = await _fresh_stream(js, p["topic"])
    seqs, latencies = [], []

    def on_value(value: bytes, now: int) -> None:
        seq = seq_of(value)
        seqs.append(seq)
        if seq >= warmup:
            latencies.append(now - stamp_of(value))

    emit_ready()
    with Timer(p.get("server_pid")) as timer:
        await _read(js, subject, expected, p["timeout_s"], on_value)
    result = {**timer.figures(), **latency_summary(latencies), **check_sequence(seqs, expected)}
    if p.get("delete"):
        await _delete_stream(js, p["topic"])
    await nc.close()
    return result


async def e2e_produce(p: dict) -> dict:
    nc, js = await _connect(p["address"])
    subject = _names(p["topic"])[1]
    rate, total = p["rate"], p["expected"]
    pad = os.urandom(max(0, p["value_size"] - 16))
    futures = []
    loop = asyncio.get_running_loop()
    with Timer(p.get("server_pid")) as timer:
        start = loop.time()
        sent = 0
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while sent < due:
                futures.append(await js.publish_async(subject, stamped_value(sent, pad)))
                sent += 1
            pause = start + sent / rate - loop.time()
            await asyncio.sleep(max(0.0, pause))
        acks = await asyncio.gather(*futures, return_exceptions=True)
    acked = sum(1 for a in acks if not isinstance(a, BaseException))
    await nc.close()
    return {**timer.figures(), "sent": total, "acked": acked}


ROLES = {
    "produce": produce,
    "consume": consume,
    "e2e-consume": e2e_consume,
    "e2e-produce": e2e_produce,
}


def run(role: str, params: dict) -> dict:
    return asyncio.run(ROLES[role](params))
