"""Sluice through its own client library (``sluice.client.Producer``, ``Consumer``, ``Admin``)."""

from __future__ import annotations

import inspect
import os
import time
from contextlib import nullcontext

import trio
from sluice import client

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
from peers.ticker import Ticker

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
    """``api="batch"``: ``send_batch`` of ``CHUNK`` records at a time; ``api="record"``: one
    ``send`` per record. Then ``flush``."""
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    await _create(address, topic)
    values = make_values(n, size)
    keys = [make_key(i) for i in range(n)]
    async with client.Producer(address, acks=p["acks"], linger_ms=p.get("linger_ms", 5)) as prod:
        await prod.partitions_for(topic)
        if p.get("api", "batch") == "record":
            send = prod.send
            acked = Acked()
            with Timer(p.get("server_pid")) as timer:
                for i, (key, value) in enumerate(zip(keys, values, strict=True)):
                    acked.add(await send(topic, value, key=key))
                    if not i % CHUNK:
                        acked.settle()
                await prod.flush()
            return throughput(timer, n, size, acked=acked.settle())
        items = list(zip(keys, values, strict=True)) if p.get("keys", True) else values
        chunks = [items[i : i + CHUNK] for i in range(0, n, CHUNK)]
        results = []
        with Timer(p.get("server_pid")) as timer:
            if p.get("api", "batch") == "batch":
                for chunk in chunks:
                    results.append(await prod.send_batch(topic, chunk))
            else:  # "record": one ``send`` per record, as most applications do
                send = prod.send
                results.append([await send(topic, value, key=key) for key, value in items])
            await prod.flush()
    acked = 0
    for result in results:
        acked += await _delivered(result)
    return throughput(timer, n, size, acked=acked)


async def consume(p: dict) -> dict:
    """``api="batch"``: ``getmany``; ``api="record"``: ``async for record``."""
    address, topic, n, size = p["address"], p["topic"], p["records"], p["value_size"]
    batches = []  # checked after the clock stops (the same for every system)
    got = 0
    deadline = trio.current_time() + p.get("timeout_s", 120)
    async with client.Consumer(address, auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        with Timer(p.get("server_pid")) as timer:
            with trio.move_on_at(deadline):
                if p.get("api", "batch") == "record":
                    records = []
                    batches.append(records)
                    async for record in cons:
                        records.append(record)
                        if len(records) >= n:
                            break
                else:
                    while got < n:
                        records = await cons.getmany()
                        got += len(records)
                        batches.append(records)
    seqs = [seq_of(r.value) for records in batches for r in records]
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
    time comes; the clock ticks every millisecond (or every record, if slower), and the
    records that fell due since the last tick go out together, each stamped when it is
    created. Paced by a timerfd rather than ``trio.sleep``: see ``peers.ticker``."""
    address, topic, rate = p["address"], p["topic"], p["rate"]
    total = p["expected"]
    pad = os.urandom(max(0, p["value_size"] - 16))
    handles = []
    async with client.Producer(address, acks=p["acks"], linger_ms=p.get("e2e_linger_ms", 0)) as prod:
        await prod.partitions_for(topic)
        with Timer(p.get("server_pid")) as timer, Ticker(max(1 / rate, 0.001)) as ticker:
            start = time.monotonic()
            sent = 0
            while sent < total:
                due = min(total, int((time.monotonic() - start) * rate) + 1)
                while sent < due:
                    handles.append(prod.send_nowait(
                        topic, stamped_value(sent, pad), key=make_key(sent)
                    ))
                    sent += 1
                await ticker.tick()
            await prod.flush()
    acked = Acked()
    for handle in handles:
        acked.add(handle)
    return {**timer.figures(), "sent": total, "acked": acked.settle()}


async def raw_fetch(p: dict) -> dict:
    """Fetch a partition from the beginning, again and again until ``min_bytes`` were read,
    without decoding records: what the broker's zero-copy fetch delivers to a reader.

    ``reader="socket"``: a blocking socket reading each response with ``recv_into`` into one
    reused buffer, like the loopback sendfile baseline (requests encoded by the sans-IO
    ``protocol.ClientConnection``): the broker's fetch path alone. ``reader="client"``: the
    client library's connection layer (``Network`` on the trio driver + ``FetchState``), one
    fetch at a time.
    """
    if p.get("reader", "client") == "socket":
        return _raw_fetch_socket(p)
    from sluice.client.fetcher import FetchState
    from sluice.client.network import Call, Network
    from sluice.client.trio_driver import TrioDriver

    address, topic, max_bytes = p["address"], p["topic"], p.get("max_bytes", 8 << 20)
    min_total = p.get("min_bytes", 0)
    total = requests = 0
    async with trio.open_nursery() as nursery:
        net = Network(address, client_id="perf-raw-fetch", clock=trio.current_time)
        driver = TrioDriver(net, nursery, [])
        driver.start()
        meta = await driver.run(net.look_up(topic))
        end = None
        for timed in (False, True):  # the untimed pass learns the end offset
            timer = Timer(p.get("server_pid"))
            with timer if timed else nullcontext():
                for _ in range(p.get("max_passes", 20) if timed else 1):
                    state = FetchState(
                        auto_offset_reset="earliest", partition_max_bytes=max_bytes,
                        fetch_max_bytes=max_bytes, fetch_max_wait_ms=0, fetch_min_bytes=1,
                    )
                    state.assign([(topic, 0)])
                    state.bind(topic, meta.topic_id, meta.partitions)
                    state.seek((topic, 0), 0)
                    while end is None or state.fetch_positions[(topic, 0)] < end:
                        response = await driver.call(Call(state.fetch_request()))
                        chunks = state.on_fetch(response, state.generation)
                        if timed:
                            requests += 1
                            total += sum(len(chunk.data) for chunk in chunks)
                        if not chunks:
                            break
                    if not timed:
                        end = state.fetch_positions[(topic, 0)]
                    elif total >= min_total:
                        break
        driver.close()
        nursery.cancel_scope.cancel()
    out = timer.figures()
    out.update(bytes=total, requests=requests, mb_per_s=total / timer.elapsed / 1e6)
    return out


def _raw_fetch_socket(p: dict) -> dict:
    import socket
    import struct

    from sluice.client.records import next_offset_after
    from sluice.protocol import messages as m
    from sluice.protocol.connection import ClientConnection

    host, port = p["address"].rsplit(":", 1)
    topic, max_bytes = p["topic"], p.get("max_bytes", 8 << 20)
    min_total = p.get("min_bytes", 0)
    buf = bytearray(max_bytes + (1 << 20))
    prefix = bytearray(8)
    proto = ClientConnection()

    def recv_exact(sock, view) -> None:
        got = 0
        while got < len(view):
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("broker closed the connection")
            got += n

    def round_trip(sock, request) -> memoryview:
        """The response frame's body (its header is skipped, not decoded)."""
        _, pieces = proto.send_request(request)
        sock.sendall(b"".join(pieces))
        recv_exact(sock, memoryview(prefix))
        frame_length, header_length = struct.unpack(">II", prefix)
        size = frame_length - 4
        view = memoryview(buf)[:size] if size <= len(buf) else memoryview(bytearray(size))
        recv_exact(sock, view)
        return view[header_length:]

    def one_pass(sock, end: int | None) -> tuple[int, int, int]:
        """Read the partition from offset 0 to ``end`` (None: until an empty fetch)."""
        offset = got = count = 0
        while end is None or offset < end:
            body = round_trip(sock, m.FetchRequest(
                max_wait_ms=0, min_bytes=1, max_bytes=max_bytes,
                partitions=[m.FetchPartition(
                    topic=topic, partition=0, offset=offset, max_bytes=max_bytes)],
            ))
            count += 1
            following = next_offset_after(body) if len(body) else None
            if following is None:
                break
            got += len(body)
            offset = following
        return offset, got, count

    total = requests = 0
    with socket.create_connection((host, int(port))) as sock:
        round_trip(sock, m.HandshakeRequest(client_id="perf-raw-fetch"))
        end, _, _ = one_pass(sock, None)  # untimed: learns the end offset, warms the cache
        with Timer(p.get("server_pid")) as timer:
            for _ in range(p.get("max_passes", 20)):
                _, got, count = one_pass(sock, end)
                total += got
                requests += count
                if total >= min_total:
                    break
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
