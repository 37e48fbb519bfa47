"""The trio and the blocking clients behind one async interface, so that a test runs against
both drivers of the client engine: parametrize it with ``DRIVERS`` and open its clients with
``open_client(driver, ...)``.

Every method of a client is awaited the same way: a trio client's async methods as they are,
its plain ones as if they were async; a blocking client's in a worker thread (one call at a
time), abandoned if the test is cancelled, so a test's ``fail_after`` still bounds a call
that hangs. The few calls that differ by name are given one name here:

* ``await consumer.getmany()``: the trio ``getmany``; the blocking client polls until records
  come (``poll``), so both wait for the next chunk; ``async for record in consumer`` and
  ``async for records in consumer.batches()`` iterate both;
* ``await producer.result(handle)``: ``await handle`` / ``handle.result()``;
* ``await producer.outcome(handle)``: the offset, or the ``SluiceError`` the record failed with.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import asynccontextmanager

import trio
from sluice import client
from sluice.client import sync
from sluice.client.errors import SluiceError

DRIVERS = ["trio", "blocking"]
KINDS = {"producer": "Producer", "consumer": "Consumer", "admin": "Admin"}
POLL_S = 0.05  # how long one blocking poll of ``getmany`` waits before looking again


async def in_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                         abandon_on_cancel=True)


class TrioClient:
    """A trio client whose every method is awaited."""

    blocking = False

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if not callable(attr) or inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args, **kwargs):
            return attr(*args, **kwargs)

        return call

    async def result(self, handle):
        return await handle

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.client.__anext__()

    def batches(self):
        return self.client.batches()

    async def outcome(self, handle):
        try:
            return (await self.result(handle)).offset
        except SluiceError as exc:
            return exc


class BlockingClient(TrioClient):
    """A blocking client whose every method runs in a worker thread."""

    blocking = True

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr
        return functools.partial(in_thread, attr)

    async def getmany(self):
        while True:
            records = await in_thread(self.client.poll, POLL_S)
            if records:
                return records

    async def __anext__(self):
        return await in_thread(next, self.client)

    def batches(self):
        return _Batches(self)

    async def result(self, handle):
        return await in_thread(handle.result)


@asynccontextmanager
async def open_client(driver: str, kind: str, bootstrap: str, **options):
    """A ``kind`` client ("producer", "consumer", "admin") of ``driver`` ("trio" or
    "blocking"), opened with ``options`` and closed on leaving."""
    if driver == "trio":
        async with getattr(client, KINDS[kind])(bootstrap, **options) as opened:
            yield TrioClient(opened)
        return
    opened = getattr(sync, KINDS[kind])(bootstrap, **options)
    await in_thread(opened.__enter__)
    failed = True
    try:
        yield BlockingClient(opened)
        failed = False
    finally:
        await in_thread(opened.__exit__, *((Exception, None, None) if failed else (None, None, None)))


class _Batches:
    """``async for records in consumer.batches()`` for a blocking consumer."""

    def __init__(self, consumer: BlockingClient) -> None:
        self._consumer = consumer

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._consumer.getmany()
