"""One trio connection to a broker, and the ``Cluster`` that (re)opens it from a bootstrap list.

``Connection`` pipelines: ``send`` writes a request and returns a ``Pending`` at once, and a
reader task resolves the pendings in request order (the broker answers in order). Invariant:
correlation ids are assigned and frames written under one lock, so the order the protocol
state expects is the order on the wire; a write cut off half-way breaks the connection
instead of corrupting it. When the connection dies every outstanding ``Pending`` fails with
``ConnectionLostError``, which callers treat as retriable.

Every request has a deadline, ``request_timeout_s`` after it was sent (plus any extra wait
the request asks the broker for, such as a fetch's long poll) and never before the deadline
of the request ahead of it, since answers come in order. A watchdog task wakes at the oldest
deadline: a request still unanswered then fails with ``RequestTimeoutError`` and the
connection is closed (the answer's place in the pipeline is lost, so nothing after it could
be trusted). A write that cannot finish by its request's deadline fails the same way, and so
does a connect that does not complete in ``request_timeout_s``.
"""

from __future__ import annotations

import math
import os
from collections import deque

import trio
from sluice.client import admin_ops as ops
from sluice.client.bootstrap import describe_connect_error, parse_bootstrap
from sluice.client.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    ConnectionLostError,
    RequestTimeoutError,
    raise_for_error,
)
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection, ResponseReceived
from sluice.protocol.errors import ProtocolError
from sluice.protocol.framing import NEED_DATA

RECEIVE_BYTES = 1 << 20
JOIN_BELOW = 64 * 1024  # pieces smaller than this in total are joined into one write


class Pending:
    """The future response of one request sent on a ``Connection``, due by ``deadline``.

    With ``on_answer``, nobody waits: the connection's reader calls
    ``on_answer(response, error)`` itself, in response order, the moment the answer (or the
    connection's loss) is known -- no task has to wake up for it. It must not raise or block.
    """

    __slots__ = ("_event", "_response", "_error", "_on_answer", "deadline")

    def __init__(self, on_answer=None, deadline: float = math.inf) -> None:
        self._event = trio.Event()
        self._response = None
        self._error: BaseException | None = None
        self._on_answer = on_answer
        self.deadline = deadline

    def _resolve(self, response=None, error: BaseException | None = None) -> None:
        self._response, self._error = response, error
        if self._on_answer is not None:
            self._on_answer(response, error)
        self._event.set()

    async def wait(self):
        """The response; raises its top-level error, or ``ConnectionLostError`` (of which
        ``RequestTimeoutError`` is one)."""
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._response


class Connection:
    """A pipelined request/response channel to one broker; every request answered (or
    failed) by its deadline."""

    def __init__(
        self, stream: trio.SocketStream, address: str, request_timeout_s: float = 30.0
    ) -> None:
        self.address = address
        self.request_timeout_s = request_timeout_s
        self._stream = stream
        self._proto = ClientConnection()
        self._pending: deque[Pending] = deque()
        self._send_lock = trio.Lock()
        self._watchdog_scope = trio.CancelScope()
        self.closed = False

    @classmethod
    async def open(
        cls, host: str, port: int, nursery: trio.Nursery, request_timeout_s: float = 30.0
    ) -> Connection:
        stream = None
        with trio.move_on_after(request_timeout_s):
            stream = await trio.open_tcp_stream(host, port)
        if stream is None:
            raise RequestTimeoutError(f"connect to {host}:{port} timed out")
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        conn = cls(stream, f"{host}:{port}", request_timeout_s)
        nursery.start_soon(conn._read_loop)
        nursery.start_soon(conn._watchdog)
        return conn

    def _deadline(self, timeout_s: float | None) -> float:
        """A new request's deadline: its timeout from now, never before the one ahead."""
        deadline = trio.current_time() + (self.request_timeout_s if timeout_s is None else timeout_s)
        pending = self._pending
        if pending and pending[-1].deadline > deadline:
            return pending[-1].deadline
        return deadline

    async def send(self, request, on_answer=None, *, timeout_s: float | None = None) -> Pending | None:
        """Write ``request``; its ``Pending``, or None for requests that get no answer.
        ``timeout_s``: this request's timeout, if not ``request_timeout_s`` (e.g. a long poll's
        wait on top of it).

        Waits (and checkpoints) only if another task is writing or the socket is full."""
        if self.closed:
            raise ConnectionLostError(f"connection to {self.address} is closed")
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # uncontended (the usual case): no trip through the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self.closed:
                raise ConnectionLostError(f"connection to {self.address} is closed")
            _cid, pieces = self._proto.send_request(request)
            deadline = self._deadline(timeout_s)
            pending = Pending(on_answer, deadline) if m.expects_response(request) else None
            if pending is not None:
                self._pending.append(pending)
            try:
                await self._write(pieces, deadline)
            except BaseException as exc:
                # Half a frame may be on the wire: this connection cannot be used again. This
                # request's caller learns it once: from the exception, or, if the reader (or
                # the watchdog) failed the connection while the write waited, from its Pending
                # (already resolved).
                told = pending is not None and not (self._pending and self._pending[-1] is pending)
                if pending is not None and not told:
                    self._pending.pop()
                self._fail(ConnectionLostError(f"write to {self.address} failed: {exc!r}"))
                lost = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
                if isinstance(exc, (*lost, RequestTimeoutError)):
                    if told:
                        return pending
                    if isinstance(exc, RequestTimeoutError):
                        raise
                    raise ConnectionLostError(f"connection to {self.address} lost") from None
                raise
        finally:
            lock.release()
        return pending

    async def request(self, request, *, timeout_s: float | None = None):
        """Send ``request`` and wait for its response (top-level errors raised as typed)."""
        pending = await self.send(request, timeout_s=timeout_s)
        response = await pending.wait()
        raise_for_error(response)
        return response

    async def _write(self, pieces, deadline: float) -> None:
        """Write the frame with ``os.write`` on the non-blocking socket, waiting only if it is
        full (until ``deadline`` at most): trio's ``send_all`` would take two trips through
        the scheduler per request."""
        if sum(map(len, pieces)) < JOIN_BELOW:
            pieces = [b"".join(pieces)]
        sock = self._stream.socket
        for piece in pieces:
            view = memoryview(piece)
            while view:
                try:
                    view = view[os.write(sock.fileno(), view):]
                except BlockingIOError:
                    with trio.move_on_at(deadline):
                        await trio.lowlevel.wait_writable(sock)
                        continue
                    raise RequestTimeoutError(
                        f"request to {self.address} not written within its timeout "
                        f"({self.request_timeout_s:g} s): the broker stopped reading"
                    ) from None

    async def _watchdog(self) -> None:
        """Fail the connection when its oldest request outlives its deadline. Sleeps until
        that deadline; with nothing pending, for a whole timeout (any request sent meanwhile
        is due later than that), so it costs a wake-up per timeout, not per request."""
        with self._watchdog_scope:  # cancelled when the connection closes
            while not self.closed:
                pending = self._pending
                now = trio.current_time()
                if not pending:
                    await trio.sleep_until(now + self.request_timeout_s)
                    continue
                head = pending[0]
                if now < head.deadline:
                    await trio.sleep_until(head.deadline)
                    continue
                self._fail(ConnectionLostError(
                    f"connection to {self.address} closed: an earlier request timed out"), head)

    async def _read_loop(self) -> None:
        proto = self._proto
        sock = self._stream.socket
        try:
            while True:
                event = proto.next_event()
                if event is NEED_DATA:
                    # Straight into the frame being filled: a large fetch body is copied once.
                    # Bytes already there are taken without a trip through the scheduler.
                    with proto.receive_buffer(RECEIVE_BYTES) as view:
                        while True:
                            try:
                                n = os.readv(sock.fileno(), [view])
                                break
                            except BlockingIOError:
                                await trio.lowlevel.wait_readable(sock)
                    proto.received(n)
                    if not n:
                        break
                elif isinstance(event, ResponseReceived):
                    self._pending.popleft()._resolve(event.response)
                    # A response's waiter runs before more bytes are read: the loop never
                    # keeps the scheduler to itself, however fast the broker answers.
                    await trio.lowlevel.checkpoint()
                else:  # CLOSED between frames
                    break
            self._fail(ConnectionLostError(f"broker {self.address} closed the connection"))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(ConnectionLostError(f"connection to {self.address} lost: {exc}"))
        except ProtocolError as exc:
            self._fail(ConnectionLostError(f"broker {self.address} broke the protocol: {exc}"))

    def _fail(self, error: BaseException, timed_out: Pending | None = None) -> None:
        """Close, failing every pending request with ``error`` (``timed_out``, the request
        that outlived its deadline, with ``RequestTimeoutError``)."""
        self.closed = True
        self._watchdog_scope.cancel()
        while self._pending:
            pending = self._pending.popleft()
            if pending is timed_out:
                pending._resolve(error=RequestTimeoutError(
                    f"no answer from {self.address} within the request timeout "
                    f"({self.request_timeout_s:g} s); connection closed"))
            else:
                pending._resolve(error=error)
        self._stream.socket.close()

    async def aclose(self) -> None:
        self._fail(ConnectionLostError(f"connection to {self.address} was closed"))
        await trio.lowlevel.checkpoint()


class Cluster:
    """The brokers we know of and a live connection to one, reopened with backoff.

    Bootstraps from the given addresses, then learns the broker list from metadata. Sluice
    runs one broker per cluster today, so one connection serves every partition. A lost
    connection is reopened on the next use, trying for up to ``reconnect_timeout_s``
    (``BrokerUnreachableError`` after that; the first connect tries each address once).
    """

    def __init__(
        self,
        bootstrap: str,
        nursery: trio.Nursery,
        *,
        client_id: str = "sluice-client",
        reconnect_timeout_s: float = 30.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.addresses = parse_bootstrap(bootstrap)
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.reconnect_timeout_s = reconnect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._nursery = nursery
        self._conn: Connection | None = None
        self._lock = trio.Lock()
        self._topics: dict[str, ops.TopicMeta] = {}
        self.closed = False

    async def connection(self) -> Connection:
        """The live connection, reconnecting (with backoff) if it died."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._lock:
            if self._conn is None or self._conn.closed:
                first = self._conn is None
                self._conn = await self._connect(0 if first else self.reconnect_timeout_s)
            return self._conn

    async def _connect(self, patience_s: float) -> Connection:
        """Try every known address, with backoff, for up to ``patience_s`` seconds."""
        if self.closed:
            raise ClientClosedError("client is closed")
        deadline = trio.current_time() + patience_s
        delay = 0.05
        while True:
            errors = []
            for host, port in self.addresses:
                try:
                    conn = await Connection.open(
                        host, port, self._nursery, self.request_timeout_s
                    )
                    try:
                        await conn.request(m.HandshakeRequest(client_id=self.client_id))
                    except BaseException:
                        await conn.aclose()
                        raise
                    return conn
                except (OSError, ConnectionLostError) as exc:
                    errors.append(f"{host}:{port} ({describe_connect_error(exc)})")
            if trio.current_time() + delay > deadline:
                raise BrokerUnreachableError(
                    f"cannot connect to broker at {', '.join(errors)}"
                )
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def request(self, request):
        """One request on the current connection (reconnecting first if needed)."""
        conn = await self.connection()
        return await conn.request(request)

    async def topic(self, topic: str, *, refresh: bool = False) -> ops.TopicMeta:
        """The topic's partition count and id, cached until asked to ``refresh`` (e.g. when
        the topic may have been deleted or recreated); ``UnknownTopicOrPartitionError`` if
        there is no such topic (and then nothing stays cached for it)."""
        meta = self._topics.get(topic)
        if meta is None or refresh:
            self._topics.pop(topic, None)
            response = await self.request(ops.metadata([topic]))
            learned = [(b.host, b.port) for b in response.brokers]
            self.addresses = list(dict.fromkeys(learned + parse_bootstrap(self.bootstrap)))
            meta = self._topics[topic] = ops.topic_meta(response, topic)
        return meta

    async def partitions(self, topic: str, *, refresh: bool = False) -> int:
        """The topic's partition count (see ``topic``)."""
        return (await self.topic(topic, refresh=refresh)).partitions

    async def aclose(self) -> None:
        self.closed = True
        if self._conn is not None:
            await self._conn.aclose()


__all__ = ["Cluster", "Connection", "Pending", "parse_bootstrap", "raise_for_error"]
