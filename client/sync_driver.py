"""The blocking driver: moves a client engine's bytes over plain non-blocking sockets, with
``selectors``, inside the caller's own calls. Every rule is the engine's (``client.network``
and the producer, consumer and group state); this module only connects, reads, writes and
waits. It imports no trio, so the command line's short commands start fast.

``pump(until)`` is one round: the engine acts (``step``), then the driver waits for any
socket or for the engine's next time, but not past ``until`` (None: no wait at all), reads
and writes what is ready, and lets the engine act on it. Callers pump until what they wait
for is done; the blocking producer also pumps without waiting while the caller keeps
sending, so answers are read and the next batch goes out as they come.
"""

from __future__ import annotations

import errno
import math
import os
import selectors
import socket
import time
from functools import partial, wraps

from sluice.client.driver import Driver
from sluice.client.group import call_back_sync
from sluice.client.network import Call, Channel, Link, Network
from sluice.client.procedure import Callback, Connect, Steps

RECEIVE_BYTES = 1 << 20


class SyncDriver(Driver):
    """Runs ``network`` and the engine ``parts`` (see ``Driver``) in the calling thread."""

    def __init__(self, network: Network, parts: list) -> None:
        super().__init__(network, parts)
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[Link, socket.socket] = {}
        self._addresses: dict[Link, list] = {}  # connecting: the resolved addresses left

    # -- for the clients ----------------------------------------------------------------------

    def call(self, call: Call, channel: Channel | None = None):
        """Send ``call`` and wait for its answer (``Call.result``); the engine bounds the wait
        by the request timeout."""
        return self._answer(self.network.submit(call, channel))

    def _answer(self, call: Call):
        self.wait(lambda: call.done)
        return call.result()

    def run(self, procedure):
        """Run a procedure (``client.procedure``) to its end; its result."""
        steps = Steps(procedure)
        while not steps.done:
            action = steps.action
            try:
                if isinstance(action, Callback):
                    reply = call_back_sync(action.fn, action.partitions)
                elif isinstance(action, Connect):
                    channel = self.network.any_channel(action.purpose)
                    reply = self._answer(self.network.connect(channel))
                elif isinstance(action, Call):
                    reply = self.call(action)
                else:
                    reply = self.call(*action)
            except Exception as exc:
                steps.advance(error=exc)
            else:
                steps.advance(reply)
        return steps.value

    def wait(self, ready, until: float | None = None) -> bool:
        """Pump until ``ready()`` (True) or ``until`` passes (False)."""
        while not ready():
            if until is not None and time.monotonic() >= until:
                return False
            self.pump(float("inf") if until is None else until)
        return True

    def readable(self) -> bool:
        """Whether a socket has something to read (or an error to report), without waiting."""
        return bool(self._sockets) and bool(self._selector.select(0))

    def close(self) -> None:
        self.network.close()
        self.step()
        self._selector.close()

    # -- the engine's turn ----------------------------------------------------------------------

    def _stepped(self) -> None:
        self.network.completed.clear()  # nothing waits on events here: callers pump

    def pump(self, until: float | None = None) -> None:
        """One round of I/O, waiting at most until ``until`` (None: not at all) -- and not
        at all if the engine's step finished something (the caller may be done waiting)."""
        progress = self.network.progress
        self.step()
        timeout = 0.0
        if until is not None and self.network.progress == progress:
            timeout = max(0.0, min(until, self.wake_time()) - time.monotonic())
        if self._sockets:
            ready = self._selector.select(None if timeout == math.inf else timeout)
        else:
            ready = []
            time.sleep(min(timeout, 1.0))  # (the engine's next time: a backoff, a reconnect)
        for key, events in ready:
            link = key.data
            if link in self._addresses:
                self._connected(link, key.fileobj)
                continue
            if events & selectors.EVENT_READ:
                self._read(link, key.fileobj)
            if events & selectors.EVENT_WRITE and not link.closed:
                self._flush(link)
        self.step()

    # -- sockets --------------------------------------------------------------------------------

    def _open(self, link: Link) -> None:
        """Start a non-blocking connect to the link's address (each one it resolves to, in
        turn, until one answers)."""
        host, port = link.address
        try:
            self._addresses[link] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.network.failed(link, exc)
            return
        self._connect_next(link, None)

    def _connect_next(self, link: Link, error: OSError | None) -> None:
        addresses = self._addresses[link]
        while addresses:
            family, kind, proto, _, address = addresses.pop(0)
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS):
                self._sockets[link] = sock
                self._selector.register(sock, selectors.EVENT_WRITE, link)
                return
            sock.close()
            error = OSError(code, os.strerror(code))
        del self._addresses[link]
        self.network.failed(link, error or OSError(errno.EHOSTUNREACH, "no address"))

    def _connected(self, link: Link, sock: socket.socket) -> None:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._selector.unregister(sock)
            del self._sockets[link]
            sock.close()
            self._connect_next(link, OSError(code, os.strerror(code)))
            return
        del self._addresses[link]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._selector.modify(sock, selectors.EVENT_READ, link)
        self.network.connected(link)

    def _read(self, link: Link, sock: socket.socket) -> None:
        """Read what is there (straight into the frame being filled) and hand it over."""
        network = self.network
        while not link.closed:
            with link.receive_buffer(RECEIVE_BYTES) as view:
                try:
                    n = sock.recv_into(view)
                except BlockingIOError:
                    return
                except OSError as exc:
                    n = exc
                full = n == len(view)
            if isinstance(n, OSError):
                network.failed(link, n)
                return
            network.received(link, n)
            if not full:
                return

    def _flush(self, link: Link) -> None:
        sock = self._sockets.get(link)
        if sock is None or link in self._addresses:
            return
        try:
            done = self.network.flush(link, partial(os.writev, sock.fileno()))
        except OSError as exc:
            self.network.failed(link, exc)
            return
        want = selectors.EVENT_READ if done else selectors.EVENT_READ | selectors.EVENT_WRITE
        if self._selector.get_key(sock).events != want:
            self._selector.modify(sock, want, link)

    def _close(self, link: Link) -> None:
        sock = self._sockets.pop(link, None)
        self._addresses.pop(link, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()



def blocking(procedure):
    """A procedure method as a method that runs it on the client's blocking driver."""
    @wraps(procedure)
    def method(self, *args, **kwargs):
        return self._driver.run(procedure(self, *args, **kwargs))

    return method
