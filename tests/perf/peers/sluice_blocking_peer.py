"""Sluice through its blocking client (``sluice.client.sync``), driven as a plain script
drives it: one ``send`` per record (or ``send_batch``), ``for record in consumer`` (or
``poll``), and in the paced producer ``poll(timeout)`` where a script would sleep until its
next record is due."""

from __future__ import annotations

import math
import os
import time

from sluice.client import sync

from peers.common import (
    Acked,
    Timer,
    check_sequence,
    emit_ready,
    latency_summary,
    make_key,
    make_values,
    seq_of,
    stamp_of,
    stamped_value,
    throughput,
)

CHECK_EVERY = 4096  # records consumed between two looks at the clock
CHUNK = 10_000  # records sent between two counts of the acknowledged


def _create(address: str, topic: str) -> None:
    with sync.Admin(address) as admin:
        admin.create_topic(topic, 1)


def _delete(address: str, topic: str) -> None:
    with sync.Admin(address) as admin:
        admin.delete_topic(topic)


def produce(p: dict) -> dict:
    """``api="record"`` (the default): one ``send`` per record; ``api="batch"``: ``send_batch``
    of ``CHUNK`` records at a time. Then ``flush``."""
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    _create(address, topic)
    values = make_values(n, size)
    keys = [make_key(i) for i in range(n)]
    acked = Acked()
    with sync.Producer(address, acks=p["acks"], linger_ms=p.get("linger_ms", 5)) as prod:
        prod.partitions_for(topic)
        if p.get("api", "record") == "batch":
            items = list(zip(keys, values, strict=True))
            results = []
            with Timer(p.get("server_pid")) as timer:
                for i in range(0, n, CHUNK):
                    results.append(prod.send_batch(topic, items[i : i + CHUNK]))
                prod.flush()
            return throughput(timer, n, size, acked=sum(map(_delivered, results)))
        send = prod.send
        with Timer(p.get("server_pid")) as timer:
            for i, (key, value) in enumerate(zip(keys, values, strict=True)):
                acked.add(send(topic, value, key=key))
                if not i % CHUNK:
                    acked.settle()
            prod.flush()
    return throughput(timer, n, size, acked=acked.settle())


def _delivered(result) -> int:
    """How many records of one ``send_batch`` result were acknowledged."""
    try:
        return len(result.result())
    except Exception:
        return 0


def consume(p: dict) -> dict:
    """``api="record"`` (the default): ``for record in consumer``; ``api="batch"``: ``poll``,
    a list of records at a time. From the beginning."""
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    deadline = time.monotonic() + p.get("timeout_s", 120)
    batches = []  # checked after the clock stops (the same for every system)
    with sync.Consumer(address, auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        with Timer(p.get("server_pid")) as timer:
            if p.get("api", "record") == "batch":
                got = 0
                while got < n and time.monotonic() < deadline:
                    records = cons.poll(1.0)
                    got += len(records)
                    batches.append(records)
            else:
                records = []
                batches.append(records)
                for record in cons:
                    records.append(record)
                    if len(records) >= n or (len(records) % CHECK_EVERY == 0
                                             and time.monotonic() > deadline):
                        break
    seqs = [seq_of(r.value) for records in batches for r in records]
    result = throughput(timer, len(seqs), size, **check_sequence(seqs, n))
    if p.get("delete"):
        _delete(address, topic)
    return result


def e2e_consume(p: dict) -> dict:
    address, topic, expected = p["address"], p["topic"], p["expected"]
    warmup = p.get("warmup_records", 0)
    _create(address, topic)
    seqs, latencies = [], []
    now_ns = time.monotonic_ns
    deadline = time.monotonic() + p["timeout_s"]
    with sync.Consumer(address, auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        emit_ready()
        with Timer(p.get("server_pid")) as timer:
            while len(seqs) < expected and time.monotonic() < deadline:
                records = cons.poll(max(0.0, min(1.0, deadline - time.monotonic())))
                now = now_ns()
                for r in records:
                    seq = seq_of(r.value)
                    seqs.append(seq)
                    if seq >= warmup:
                        latencies.append(now - stamp_of(r.value))
    result = {**timer.figures(), **latency_summary(latencies), **check_sequence(seqs, expected)}
    if p.get("delete"):
        _delete(address, topic)
    return result


def e2e_produce(p: dict) -> dict:
    """``rate`` records/s for warmup + duration seconds: each millisecond (or each record, if
    slower) the records that fell due are sent, stamped when created; until the next one
    the producer ``poll``s (its I/O goes on meanwhile, as a background task's would)."""
    address, topic, rate = p["address"], p["topic"], p["rate"]
    total = p["expected"]
    pad = os.urandom(max(0, p["value_size"] - 16))
    tick = max(1 / rate, 0.001)
    handles = []
    with sync.Producer(address, acks=p["acks"], linger_ms=p.get("e2e_linger_ms", 0)) as prod:
        prod.partitions_for(topic)
        with Timer(p.get("server_pid")) as timer:
            start = time.monotonic()
            sent = 0
            while sent < total:
                elapsed = time.monotonic() - start
                due = min(total, int(elapsed * rate) + 1)
                while sent < due:
                    handles.append(prod.send(topic, stamped_value(sent, pad), key=make_key(sent)))
                    sent += 1
                next_tick = start + (math.floor(elapsed / tick) + 1) * tick
                prod.poll(max(0.0, next_tick - time.monotonic()))
            prod.flush()
    acked = Acked()
    for handle in handles:
        acked.add(handle)
    return {**timer.figures(), "sent": total, "acked": acked.settle()}


ROLES = {
    "produce": produce,
    "consume": consume,
    "e2e-consume": e2e_consume,
    "e2e-produce": e2e_produce,
}


def run(role: str, params: dict) -> dict:
    return ROLES[role](params)
