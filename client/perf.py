"""``sluice perf``: throughput and latency of the trio client against a broker (the modes are
described in ``client.cli_parser``'s help text).

It runs on trio, as the client it measures; SIGINT and SIGTERM cancel the run, which closes
the clients on its way out, and the command exits 130/143.
"""

from __future__ import annotations

import struct
import sys
import time

import trio
from sluice.client.admin import Admin
from sluice.client.cli_parser import client_options
from sluice.client.cli_signals import SIGNALS
from sluice.client.consumer import Consumer
from sluice.client.producer import Producer
from sluice.protocol.errors import TopicAlreadyExistsError

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


def run(args) -> int:
    """Run the ``args.mode`` measurement; a stop signal cancels it (exit 128 + signal)."""
    return trio.run(stoppable, MODES[args.mode], args)


async def stoppable(measure, args) -> int:
    signum = None
    code = 0
    async with trio.open_nursery() as nursery:

        async def watch_signals(task_status=trio.TASK_STATUS_IGNORED) -> None:
            nonlocal signum
            with trio.open_signal_receiver(*SIGNALS) as signals:
                task_status.started()
                async for received in signals:
                    signum = received
                    nursery.cancel_scope.cancel()
                    return

        await nursery.start(watch_signals)
        code = await measure(args)
        nursery.cancel_scope.cancel()
    return code if signum is None else 128 + signum


async def ensure_topic(args) -> None:
    async with Admin(args.bootstrap, **client_options(args)) as admin:
        try:
            await admin.create_topic(args.topic, args.partitions)
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
    await ensure_topic(args)
    value = b"x" * args.record_size
    progress = Progress("produce")
    latencies: list[float] = []
    batches: list = []
    sent_all = trio.Event()
    async with Producer(args.bootstrap, acks=args.acks, linger_ms=args.linger_ms,
                        compression=args.compression, **client_options(args)) as producer:
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
    """Read ``--records`` from the beginning, or all the topic holds when it starts if that is
    fewer (said on stderr): it never waits for records that may not come."""
    progress = Progress("consume")
    seen = 0
    async with Consumer(args.bootstrap, auto_offset_reset="earliest",
                        **client_options(args)) as consumer:
        count = await consumer.partitions_for(args.topic)
        partitions = [(args.topic, p) for p in range(count)]
        begins = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        held = sum(ends[tp] - begins[tp] for tp in partitions)
        wanted = min(args.records, held)
        if wanted < args.records:
            print(f"sluice perf consume: {args.topic} holds {held:,} records, fewer than "
                  f"--records {args.records:,}: reading those", file=sys.stderr)
        if not wanted:
            raise ValueError(f"{args.topic} holds no records: produce some first "
                             "(sluice perf produce)")
        consumer.assign(partitions)
        start = time.perf_counter()
        if args.api == "batch":
            async for records in consumer.batches():
                seen += len(records)
                progress.update(seen)
                if seen >= wanted:
                    break
        else:
            async for _record in consumer:
                seen += 1
                if seen >= wanted:
                    break
        elapsed = time.perf_counter() - start
    progress.clear()
    report("consume", seen, args.record_size, elapsed, extra=f"api={args.api}")
    return 0


async def perf_e2e(args) -> int:
    await ensure_topic(args)
    pad = b"x" * max(0, args.record_size - STAMP.size)
    latencies: list[float] = []
    async with (
        Consumer(args.bootstrap, fetch_max_wait_ms=100, **client_options(args)) as consumer,
        Producer(args.bootstrap, acks=args.acks, linger_ms=args.linger_ms,
                 compression=args.compression, **client_options(args)) as producer,
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


MODES = {"produce": perf_produce, "consume": perf_consume, "e2e": perf_e2e}
