"""Redis Streams through redis-py (hiredis parser): XADD pipelined, XRANGE / XREAD to read.

Each record is one stream entry whose single field is the 16-byte key and whose value is the
record's value.
"""

from __future__ import annotations

import os
import time

import redis

from peers.common import (
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

PIPELINE = 1000
READ_COUNT = 1000


def _connect(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    conn = redis.Redis(host=host, port=int(port), decode_responses=False)
    conn.ping()
    return conn


def _value(fields: dict) -> bytes:
    for value in fields.values():
        return value
    return b""


def produce(p: dict) -> dict:
    conn = _connect(p["address"])
    stream, n, size = p["topic"], p["records"], p["value_size"]
    conn.delete(stream)
    values = make_values(n, size)
    keys = [make_key(i) for i in range(n)]
    acked = 0
    with Timer(p.get("server_pid")) as timer:
        pipe = conn.pipeline(transaction=False)
        for start in range(0, n, PIPELINE):
            for i in range(start, min(n, start + PIPELINE)):
                pipe.xadd(stream, {keys[i]: values[i]})
            replies = pipe.execute(raise_on_error=False)
            acked += sum(1 for r in replies if not isinstance(r, Exception))
    conn.close()
    return throughput(timer, n, size, acked=acked)


def consume(p: dict) -> dict:
    conn = _connect(p["address"])
    stream, n, size = p["topic"], p["records"], p["value_size"]
    batches = []  # checked after the clock stops (the same for every system)
    got = 0
    deadline = time.monotonic() + p.get("timeout_s", 120)
    with Timer(p.get("server_pid")) as timer:
        start = "-"
        while got < n and time.monotonic() < deadline:
            entries = conn.xrange(stream, start, "+", count=READ_COUNT)
            if not entries:
                break
            got += len(entries)
            batches.append(entries)
            start = b"(" + entries[-1][0]
    seqs = [seq_of(_value(fields)) for entries in batches for _, fields in entries]
    result = throughput(timer, len(seqs), size, **check_sequence(seqs, n))
    if p.get("delete"):
        conn.delete(stream)
    conn.close()
    return result


def e2e_consume(p: dict) -> dict:
    conn = _connect(p["address"])
    stream, expected = p["topic"], p["expected"]
    warmup = p.get("warmup_records", 0)
    conn.delete(stream)
    seqs, latencies = [], []
    now_ns = time.monotonic_ns
    emit_ready()
    deadline = time.monotonic() + p["timeout_s"]
    with Timer(p.get("server_pid")) as timer:
        last = b"0-0"
        while len(seqs) < expected and time.monotonic() < deadline:
            reply = conn.xread({stream: last}, count=READ_COUNT, block=100)
            now = now_ns()
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    value = _value(fields)
                    seq = seq_of(value)
                    seqs.append(seq)
                    if seq >= warmup:
                        latencies.append(now - stamp_of(value))
                    last = entry_id
    result = {**timer.figures(), **latency_summary(latencies), **check_sequence(seqs, expected)}
    if p.get("delete"):
        conn.delete(stream)
    conn.close()
    return result


def e2e_produce(p: dict) -> dict:
    conn = _connect(p["address"])
    stream, rate, total = p["topic"], p["rate"], p["expected"]
    pad = os.urandom(max(0, p["value_size"] - 16))
    acked = 0
    pipe = conn.pipeline(transaction=False)
    with Timer(p.get("server_pid")) as timer:
        start = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                pipe.xadd(stream, {make_key(sent): stamped_value(sent, pad)})
                sent += 1
            replies = pipe.execute(raise_on_error=False)
            acked += sum(1 for r in replies if not isinstance(r, Exception))
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    conn.close()
    return {**timer.figures(), "sent": total, "acked": acked}


ROLES = {
    "produce": produce,
    "consume": consume,
    "e2e-consume": e2e_consume,
    "e2e-produce": e2e_produce,
}


def run(role: str, params: dict) -> dict:
    return ROLES[role](params)
