"""``sluice perf``: throughput and latency of this client against a broker.

* ``produce``: records/s and MB/s until every record is acknowledged, and the ack latency
  of each batch (its first record's enqueue -> its acknowledgement);
* ``consume``: records/s reading a topic from the beginning (``--api record`` for
  ``async for``, ``--api batch`` for ``consumer.batches()``);
* ``e2e``: producer and consumer in one process at a fixed rate; latency from ``send`` to the
  consumer seeing the record (same clock, carried in the value).

The live progress line is only drawn when stdout is a terminal.
"""

from __future__ import annotations

import struct
import sys
import time

import trio
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.producer import Producer
from sluice.protocol.errors import TopicAlreadyExistsError

EXAMPLES = """examples:
  sluice perf produce --records 1000000 --record-size 100 --api batch
  sluice perf produce --records 500000 --api record --acks all
  sluice perf produce --records 1000000 --compression lz4
  sluice perf consume --records 1000000 --api batch
  sluice perf e2e --rate 5000 --records 20000
"""
STAMP = struct.Struct(">q")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Progress:
    """A ``\\r`` progress line, redrawn at most every half second, only on a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stdout.isatty()
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last >= 0.5:
            self.last = now
            rate = done / (now - self.start)
            sys.stdout.write(f"\r{self.label}: {done:,} records, {rate:,.0f} records/s   ")
            sys.stdout.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stdout.write("\r" + " " * 70 + "\r")


def report(kind: str, records: int, size: int, seconds: float, latencies=None, extra="") -> None:
    line = (
        f"{kind}: {records:,} records in {seconds:.2f} s: {records / seconds:,.0f} records/s, "
        f"{records * size / seconds / 1e6:,.1f} MB/s"
    )
    if latencies:
        latencies.sort()
        line += (
            f"; latency p50 {percentile(latencies, 0.5) * 1e3:.2f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms"
        )
    print(line + (f" ({extra})" if extra else ""), flush=True)


async def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    async with Admin(bootstrap) as admin:
        try:
            await admin.create_topic(topic, partitions)
        except TopicAlreadyExistsError:
            pass


async def watch_batches(batches: list, latencies: list[float], done: trio.Event) -> None:
    """Ack latency per batch, awaited in send order."""
    i = 0
    while True:
        while i < len(batches):
            batch = batches[i]
            i += 1
            if not batch.done:
                if batch.waiter is None:
                    batch.waiter = trio.Event()
                await batch.waiter.wait()
            latencies.append(trio.current_time() - batch.created)
        if done.is_set():
            return
        await trio.sleep(0.01)


async def perf_produce(args) -> int:
    await ensure_topic(args.bootstrap, args.topic, args.partitions)
    value = b"x" * args.record_size
    progress = Progress("produce")
    latencies: list[float] = []
    batches: list = []
    sent_all = trio.Event()
    async with Producer(
        args.bootstrap, acks=args.acks, linger_ms=args.linger_ms, compression=args.compression
    ) as producer:
        await producer.partitions_for(args.topic)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_batches, batches, latencies, sent_all)
            start = time.perf_counter()
            if args.api == "batch":
                chunk = [value] * 10_000
                for done in range(0, args.records, len(chunk)):
                    n = min(len(chunk), args.records - done)
                    delivery = await producer.send_batch(args.topic, chunk[:n])
                    batches.extend(b for b, first, _ in delivery.segments if first == 0)
                    progress.update(done + n)
            else:
                send, topic = producer.send, args.topic
                for i in range(args.records):
                    handle = await send(topic, value)
                    if handle.index == 0:
                        batches.append(handle.batch)
                        progress.update(i)
            await producer.flush()
            elapsed = time.perf_counter() - start
            sent_all.set()
    progress.clear()
    report("produce", args.records, args.record_size, elapsed, latencies,
           f"api={args.api}, acks={args.acks}, partitions={args.partitions}, "
           f"compression={args.compression or 'none'}")
    return 0


async def perf_consume(args) -> int:
    progress = Progress("consume")
    seen = 0
    async with Consumer(args.bootstrap, auto_offset_reset="earliest") as consumer:
        count = await consumer.partitions_for(args.topic)
        consumer.assign([(args.topic, p) for p in range(count)])
        start = time.perf_counter()
        if args.api == "batch":
            async for records in consumer.batches():
                seen += len(records)
                progress.update(seen)
                if seen >= args.records:
                    break
        else:
            async for _record in consumer:
                seen += 1
                if seen >= args.records:
                    break
        elapsed = time.perf_counter() - start
    progress.clear()
    report("consume", seen, args.record_size, elapsed, extra=f"api={args.api}")
    return 0


async def perf_e2e(args) -> int:
    await ensure_topic(args.bootstrap, args.topic, args.partitions)
    pad = b"x" * max(0, args.record_size - STAMP.size)
    latencies: list[float] = []
    async with (
        Consumer(args.bootstrap, fetch_max_wait_ms=100) as consumer,
        Producer(args.bootstrap, acks=args.acks, linger_ms=args.linger_ms) as producer,
    ):
        count = await consumer.partitions_for(args.topic)
        consumer.assign([(args.topic, p) for p in range(count)])
        for tp, end in (await consumer.end_offsets(consumer.assignment())).items():
            consumer.seek(*tp, end)
        await producer.partitions_for(args.topic)

        async def produce_at_rate() -> None:
            # Wake at most once a millisecond and send every record due by then: a trio sleep
            # costs ~150 us of CPU on a small VM (its wake-up is a Cancelled exception), so a
            # sleep per record at 5,000/s would spend most of a core on pacing alone.
            tick = max(1 / args.rate, 0.001)
            begin = time.perf_counter()
            sent = 0
            while sent < args.records:
                due = min(args.records, int((time.perf_counter() - begin) * args.rate) + 1)
                while sent < due:
                    await producer.send(args.topic, STAMP.pack(time.perf_counter_ns()) + pad)
                    sent += 1
                await trio.sleep(tick - (time.perf_counter() - begin) % tick)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce_at_rate)
            async for records in consumer.batches():
                now = time.perf_counter_ns()
                latencies += [(now - STAMP.unpack_from(r.value)[0]) / 1e9 for r in records]
                if len(latencies) >= args.records:
                    break
        elapsed = time.perf_counter() - start
    report("e2e", len(latencies), args.record_size, elapsed, latencies,
           f"rate={args.rate}/s, acks={args.acks}")
    return 0


def add_parser(commands, add_bootstrap, acks_value, add_compression) -> None:
    perf = commands.add_parser("perf", help="measure throughput and latency", epilog=EXAMPLES,
                               description=__doc__.split("\n\n")[0])
    modes = perf.add_subparsers(dest="mode", metavar="MODE", required=True)
    for name, run, helptext in (
        ("produce", perf_produce, "produce records as fast as possible"),
        ("consume", perf_consume, "consume a topic from the beginning"),
        ("e2e", perf_e2e, "end-to-end latency at a fixed rate"),
    ):
        mode = modes.add_parser(name, help=helptext, epilog=EXAMPLES)
        mode.add_argument("--topic", default="perf", help="topic (default perf)")
        mode.add_argument("--records", type=int, default=1_000_000 if name != "e2e" else 20_000)
        mode.add_argument("--record-size", type=int, default=100, help="value bytes (default 100)")
        mode.add_argument("--partitions", type=int, default=1,
                          help="partitions if the topic is created (default 1)")
        mode.add_argument("--acks", type=acks_value, default=1, help="0, 1 or all (default 1)")
        mode.add_argument("--linger-ms", type=float, default=0 if name == "e2e" else 5,
                          help="producer linger (default 5; 0 for e2e)")
        mode.add_argument("--api", choices=["batch", "record"], default="batch",
                          help="batch: send_batch()/batches(); record: send()/async for")
        mode.add_argument("--rate", type=int, default=5000, help="e2e: records/s (default 5000)")
        if name == "produce":
            add_compression(mode)
        mode.set_defaults(run=run)
        add_bootstrap(mode)
