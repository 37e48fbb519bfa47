"""Faults for end-to-end tests: a TCP proxy in front of a broker that can cut every connection
through it, or black-hole them, on 127.0.0.1; and both producers behind one interface
(``tests.drivers``), so a scenario runs against the trio and the blocking client alike.

``await nursery.start(proxy.serve)`` starts it; clients connect to ``proxy.bootstrap``.

* ``await proxy.sever()`` closes every connection through it, on both sides, with a FIN --
  what a client sees when its connection is cut mid-request (the broker still reads what
  reached it before the cut, as after ``ss -K`` on the client side);
* ``proxy.blackhole()`` stops forwarding: bytes sent either way are held (the kernel buffers
  fill up, then writes block), new connections are accepted and left unanswered;
  ``proxy.heal()`` forwards again, held bytes first;
* ``await proxy.wait_upstream(n)`` waits until ``n`` bytes in all went from clients to the
  broker: "the request has reached the broker", without sleeping.
"""

from __future__ import annotations

import trio
from sluice.client.consumer import Consumer

from tests.drivers import open_client


class _Link:
    """One client connection and its broker connection; cancelled as a whole."""

    __slots__ = ("client", "upstream", "scope")

    def __init__(self, client: trio.SocketStream, scope: trio.CancelScope) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.scope = scope


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``; see the module docstring."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.upstream_bytes = 0  # client -> broker bytes forwarded so far
        self.accepted = 0  # connections accepted so far
        self._links: set[_Link] = set()
        self._flowing = trio.Event()
        self._flowing.set()
        self._moved = trio.Event()  # set whenever bytes go upstream or the link set changes

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)
        finally:
            for listener in listeners:
                await listener.aclose()

    def blackhole(self) -> None:
        """Forward nothing more (either way) until ``heal``."""
        self._flowing = trio.Event()

    def heal(self) -> None:
        self._flowing.set()

    async def sever(self) -> None:
        """Close every connection through the proxy (both sides) and wait until they are."""
        links = list(self._links)
        for link in links:
            link.scope.cancel()
        while any(link in self._links for link in links):
            await self._moved.wait()

    async def wait_upstream(self, total: int) -> None:
        """Until at least ``total`` bytes went from clients to the broker."""
        while self.upstream_bytes < total:
            await self._moved.wait()

    async def wait_connections(self, count: int) -> None:
        """Until ``count`` connections in all have been accepted."""
        while self.accepted < count:
            await self._moved.wait()

    def _note_move(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        with trio.CancelScope() as scope:
            link = _Link(client, scope)
            self._links.add(link)
            self._note_move()
            try:
                await self._flowing.wait()  # black-holed: accepted, never answered
                try:
                    link.upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                except OSError:
                    return  # the broker is down: so is the client's connection
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._forward, client, link.upstream, True, scope)
                    nursery.start_soon(self._forward, link.upstream, client, False, scope)
            finally:
                for stream in (client, link.upstream):
                    if stream is not None:
                        stream.socket.close()  # a FIN: bytes already sent are still read
                self._links.discard(link)
                self._note_move()

    async def _forward(self, source, sink, upstream: bool, scope: trio.CancelScope) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.receive_some(65536)
                if not data:
                    break
                await self._flowing.wait()  # black-holed meanwhile: hold it
                await sink.send_all(data)
                if upstream:
                    self.upstream_bytes += len(data)
                    self._note_move()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side ended: the link ends


# -- clients under faults ---------------------------------------------------------------------


def open_producer(driver: str, bootstrap: str, **options):
    """A producer of ``driver`` ("trio" or "blocking", see ``tests.drivers``) with
    ``options``, closed (flushed) on leaving."""
    return open_client(driver, "producer", bootstrap, **options)


async def read_log(bootstrap: str, topic: str, partition: int = 0) -> dict[int, bytes]:
    """Every record of one partition: ``{offset: value}``."""
    tp = (topic, partition)
    log: dict[int, bytes] = {}
    async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end:
            async for records in consumer.batches():
                log.update((r.offset, r.value) for r in records)
                if records[-1].offset + 1 >= end:
                    break
    return log


def check_outcomes(log: dict[int, bytes], outcomes: dict[bytes, object]) -> None:
    """Acknowledged means kept: every record reported at an offset is there, and no record
    is in the log twice. (A failed record may or may not be there: its outcome is unknown.)"""
    stored = list(log.values())
    for value, outcome in outcomes.items():
        assert stored.count(value) <= 1, f"{value!r} is in the log {stored.count(value)} times"
        if isinstance(outcome, int):
            assert log.get(outcome) == value, (
                f"{value!r} acknowledged at offset {outcome}, which holds {log.get(outcome)!r}"
            )
