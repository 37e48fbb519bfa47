"""Helpers for the consumer-group end-to-end tests: produce, wait for a condition, run a group
member as a task that can be stopped between records (so its close is a clean one)."""

from __future__ import annotations

import trio
from sluice.client import Admin, Consumer, Producer


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic(topic, partitions)


async def produce(bootstrap: str, topic: str, partitions: int, per_partition: int,
                  start: int = 0) -> None:
    """``per_partition`` records to each partition, values ``b"P:I"`` (I from ``start``)."""
    async with Producer(bootstrap, acks="all", linger_ms=1) as producer:
        handles = []
        for i in range(start, start + per_partition):
            for p in range(partitions):
                handles.append(await producer.send(topic, b"%d:%d" % (p, i), partition=p))
        for handle in handles:
            await handle


async def wait_for(condition, timeout: float = 10.0) -> float:
    """Poll ``condition()`` until true (``TooSlowError`` after ``timeout``); seconds taken."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)
    return trio.current_time() - start


async def unless_stopped(stop: trio.Event, afn):
    """``await afn()``, or None as soon as ``stop`` is set (cancelled while it waits)."""
    result = None
    async with trio.open_nursery() as nursery:
        async def run():
            nonlocal result
            result = await afn()
            nursery.cancel_scope.cancel()

        async def watch():
            await stop.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        nursery.start_soon(watch)
    return result


class Member:
    """A group consumer running in a task; ``processed`` collects ``(partition, offset)``.

    ``mode="record"``: ``async for`` one record at a time, auto-commit. ``mode="batch"``:
    ``getmany()``, then ``commit()`` after processing each batch, auto-commit off.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, processed: list, *,
                 mode: str = "record", **options) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.processed = processed
        self.mode = mode
        self.options = options
        self.stop = trio.Event()
        self.closed = trio.Event()
        self.consumer: Consumer | None = None

    def assignment(self) -> set:
        if self.consumer is None or self.closed.is_set():
            return set()
        return set(self.consumer.assignment())

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        options = dict(auto_offset_reset="earliest", auto_commit=self.mode == "record")
        options.update(self.options)
        try:
            async with Consumer(self.bootstrap, group_id=self.group, topics=[self.topic],
                                **options) as consumer:
                self.consumer = consumer
                task_status.started(self)
                while not self.stop.is_set():
                    if self.mode == "record":
                        record = await unless_stopped(self.stop, consumer.__anext__)
                        if record is not None:
                            self.processed.append((record.partition, record.offset))
                    else:
                        batch = await unless_stopped(self.stop, consumer.getmany)
                        if batch:
                            self.processed.extend((r.partition, r.offset) for r in batch)
                            await consumer.commit()
        finally:
            self.closed.set()
