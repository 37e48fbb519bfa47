"""The trio driver: moves a client engine's bytes over trio sockets and its time over trio's
clock. Every rule is the engine's (``client.network`` and the producer, consumer and group
state); this module only connects, reads, writes, sleeps and wakes tasks.

One task runs the engine whenever it is kicked or its next time comes (``step``, then sleep
until ``wake_time``). Each connection has a reader task that reads with ``os.readv`` on the
non-blocking socket (waiting only on ``EAGAIN``), hands the bytes to the engine and runs a
step at once, so an answer's consequences -- the next batch, the next fetch -- go out without
another trip through the scheduler. Writes are ``os.writev`` calls from whichever task ran
the step; a write that finds the socket full leaves the rest to a writer task that waits
until the socket is writable. trio's own stream wrappers would cost one or two scheduler
trips per read and per write (see docs/DESIGN-NOTES.md).
"""

from __future__ import annotations

import math
import os
from functools import partial, wraps

import trio
from sluice.client.driver import Driver
from sluice.client.group import call_back
from sluice.client.network import Call, Channel, Link, Network
from sluice.client.procedure import Callback, Connect, Steps

RECEIVE_BYTES = 1 << 20


class TrioDriver(Driver):
    """Runs ``network`` and the engine ``parts`` (see ``Driver``) in ``nursery``; ``start``
    starts its task."""

    def __init__(self, network: Network, nursery: trio.Nursery, parts: list) -> None:
        super().__init__(network, parts)
        self._nursery = nursery
        self._wake = trio.Event()
        self._sleep_until = -math.inf  # when the driver's task wakes next (-inf: it is awake)
        self._progress = trio.Event()
        self._seen = network.progress
        self._sockets: dict[Link, trio.socket.SocketType] = {}
        self._writing: set[Link] = set()

    def start(self) -> None:
        self._nursery.start_soon(self._run)

    # -- for the clients ----------------------------------------------------------------------

    def kick(self) -> None:
        """The engine has new work (a batch to send, a position changed): run it soon."""
        self._wake.set()

    async def call(self, call: Call, channel: Channel | None = None):
        """Send ``call`` and wait for its answer (``Call.result``)."""
        return await self._answer(self.network.submit(call, channel))

    async def _answer(self, call: Call):
        if call.done:
            await trio.lowlevel.checkpoint()
        else:
            call.waiter = trio.Event()
            self.step()
            await call.waiter.wait()
        return call.result()

    async def run(self, procedure):
        """Run a procedure (``client.procedure``) to its end; its result."""
        steps = Steps(procedure)
        while not steps.done:
            action = steps.action
            try:
                if isinstance(action, Callback):
                    reply = await call_back(action.fn, action.partitions)
                elif isinstance(action, Connect):
                    channel = self.network.any_channel(action.purpose)
                    reply = await self._answer(self.network.connect(channel))
                elif isinstance(action, Call):
                    reply = await self.call(action)
                else:
                    reply = await self.call(*action)
            except Exception as exc:
                steps.advance(error=exc)
            else:
                steps.advance(reply)
        return steps.value

    async def wait(self, ready) -> None:
        """Until ``ready()`` is true; it is checked whenever the engine made progress. A
        checkpoint even when ``ready()`` already is (trio's rule for an async call)."""
        if ready():
            await trio.lowlevel.checkpoint()
        while not ready():
            await self._progress.wait()

    def close(self) -> None:
        """Close every connection (the tasks end with the client's nursery)."""
        self.network.close()
        self.step()

    # -- the engine's turn ----------------------------------------------------------------------

    def _close(self, link: Link) -> None:
        sock = self._sockets.pop(link, None)
        if sock is not None:
            sock.close()  # wakes its reader (and writer) with ClosedResourceError

    def _open(self, link: Link) -> None:
        self._nursery.start_soon(self._connect, link)

    def _stepped(self) -> None:
        network = self.network
        completed = network.completed
        if completed:
            for done in completed:
                done.waiter.set()
            completed.clear()
        if network.progress != self._seen:
            self._seen = network.progress
            self._progress.set()
            self._progress = trio.Event()
        if self.wake_time() < self._sleep_until:  # (a step run by another task)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake = trio.Event()
            self.step()
            self._sleep_until = wake_at = self.wake_time()
            if wake_at == math.inf:
                await self._wake.wait()
            else:
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
            self._sleep_until = -math.inf

    # -- sockets --------------------------------------------------------------------------------

    async def _connect(self, link: Link) -> None:
        host, port = link.address
        stream = None
        try:
            with trio.move_on_at(link.deadline):
                stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            self.network.failed(link, exc)
        if stream is None or link.closed:  # (a connect past its deadline fails by ``tick``)
            if stream is not None:
                stream.socket.close()
            self.step()
            return
        sock = stream.socket
        sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        self._sockets[link] = sock
        self.network.connected(link)
        self._nursery.start_soon(self._read, link, sock)
        self.step()

    async def _read(self, link: Link, sock) -> None:
        network = self.network
        fd = sock.fileno()
        try:
            while not link.closed:
                # Straight into the frame being filled: a large fetch body is copied once.
                with link.receive_buffer(RECEIVE_BYTES) as view:
                    while True:
                        try:
                            n = os.readv(fd, [view])
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(sock)
                network.received(link, n)
                self.step()
                if not n:
                    return
                # What the answer woke runs before more bytes are read: the reader never
                # keeps the scheduler to itself, however fast the broker answers.
                await trio.lowlevel.checkpoint()
        except trio.ClosedResourceError:
            return  # closed by the engine
        except OSError as exc:
            network.failed(link, exc)
            self.step()

    def _flush(self, link: Link) -> None:
        sock = self._sockets.get(link)
        if sock is None or link in self._writing:
            return
        try:
            if not self.network.flush(link, partial(os.writev, sock.fileno())):
                self._writing.add(link)
                self._nursery.start_soon(self._write_rest, link, sock)
        except OSError as exc:
            self.network.failed(link, exc)

    async def _write_rest(self, link: Link, sock) -> None:
        """Write what the socket did not take at once, as room comes (the engine closes the
        link if that takes past its deadline)."""
        writev = partial(os.writev, sock.fileno())
        try:
            while not link.closed:
                await trio.lowlevel.wait_writable(sock)
                if link.closed or self.network.flush(link, writev):
                    break
        except trio.ClosedResourceError:
            return
        except OSError as exc:
            self.network.failed(link, exc)
        finally:
            self._writing.discard(link)
        self.step()


def awaited(procedure):
    """A procedure method as an async method that runs it on the client's trio driver."""
    @wraps(procedure)
    async def method(self, *args, **kwargs):
        return await self._driver.run(procedure(self, *args, **kwargs))

    return method
