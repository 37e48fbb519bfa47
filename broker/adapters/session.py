"""``Session``: one connection of any protocol -- read requests, serve them in order, answer
them in order. The protocol is a ``Dialect`` (its sans-IO connection and its handlers); the
bytes come and go through a ``Channel``.

Two tasks per connection:

* the **reader** decodes requests and serves each inline, in arrival order (appends therefore
  happen in request order; a ``Pending`` outcome -- a large append written by a worker
  thread -- is awaited before the next request is read), and queues the outcome;
* the **writer** takes outcomes in the same order, completes the deferred ones (a commit to
  wait for, a long poll), encodes and sends them. The reader answers a ready outcome itself
  when nothing is queued ahead of it (saving the hop), so the channel has one sender at a
  time: whoever holds the front of the queue.

Fairness: the reader lets other tasks run after ``FAIR_SHARE_REQUESTS`` requests or
``FAIR_SHARE_BYTES`` received without waiting, whichever comes first, so neither a client
pipelining many small requests nor one sending 8 MiB batches back to back holds the event loop
for long.

The queue between them is bounded (``max_in_flight``): a client that pipelines faster than the
broker answers, or stops reading its responses, stops being read, so its memory stays bounded
and TCP pushes back. A client that sends nothing for ``idle_timeout_s`` is disconnected; so is
one whose responses can't be delivered within the channel's send timeout.

Bad input: a request the dialect can decode but not accept is answered with an error and the
connection carries on; broken framing (garbage, an oversized prefix) gets the dialect's last
word (``closing_frame``), then the connection is closed. Either way only this connection is
affected. Every request counts in ``InFlight`` from when it is served until its answer is
sent or dropped, so a shutdown can wait for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from time import perf_counter
from typing import Any, Protocol

import trio
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.outcomes import Deferred, Pending
from sluice.broker.io.channel import Channel, Piece
from sluice.protocol.errors import ApiError, RemoteProtocolError, UnknownServerError
from sluice.protocol.framing import CLOSED, NEED_DATA

log = logging.getLogger("sluice.session")

RECEIVE_BYTES = 256 * 1024
FAIR_SHARE_REQUESTS = 16  # the reader yields at least once per this many requests...
FAIR_SHARE_BYTES = 256 * 1024  # ...and per this many bytes received
_CLOSE = object()


class Dialect(Protocol):
    """A protocol adapter's side of one connection.

    ``next_request`` returns a request (the dialect's own object), ``NEED_DATA`` or
    ``CLOSED``, or raises ``RemoteProtocolError`` for broken framing. ``serve(request)`` returns
    its outcome: a response, a ``Deferred`` or ``Pending`` one, an ``ApiError`` to answer
    with, or None for no answer (it may also raise ``ApiError``). ``encode(request, outcome)``
    turns a ready outcome into the pieces to send; ``release(outcome)`` drops what an outcome
    holds (file references), once sent or dropped. ``answered(request, seconds)`` is told,
    once a request's answer is sent (or it needed none), how long that took from the moment
    it was read: the request latency a client sees, its wait behind earlier answers on the
    same connection included (metrics)."""

    def receive_buffer(self, size_hint: int) -> memoryview: ...
    def received(self, n: int) -> None: ...
    def next_request(self) -> Any: ...
    def serve(self, request: Any) -> Any: ...
    def encode(self, request: Any, outcome: Any) -> list[Piece]: ...
    def closing_frame(self, error: RemoteProtocolError) -> list[Piece]: ...
    def release(self, outcome: Any) -> None: ...
    def answered(self, request: Any, seconds: float) -> None: ...


class _Broken:
    """The reader's last item: the framing broke with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: RemoteProtocolError) -> None:
        self.error = error


class Session:
    """The state of one connection; ``run`` serves it until EOF, error or cancellation."""

    def __init__(
        self, channel: Channel, dialect: Dialect, inflight: InFlight, *,
        idle_timeout_s: float, max_in_flight: int,
    ) -> None:
        self.channel = channel
        self.dialect = dialect
        self.inflight = inflight
        self.peer = channel.peer
        self.idle_timeout_s = idle_timeout_s
        self._queued = 0  # responses handed to the writer and not yet sent (or dropped)
        self._unyielded = 0  # requests answered by the reader since it last let others run
        self._unyielded_bytes = 0  # bytes received by the reader since it last let others run
        self._outbox_send, self._outbox_receive = trio.open_memory_channel(max_in_flight)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                async with self._outbox_send:
                    await self._read_loop()
        except* (trio.BrokenResourceError, trio.ClosedResourceError) as dropped:
            # The peer hung up (the nursery may hand this over in an exception group).
            log.debug("connection %s dropped: %s", self.peer, dropped.exceptions[0])
        finally:
            await self.channel.aclose()

    # -- the reader ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        # One scope for the connection's life; its deadline is armed only while waiting for
        # bytes (a client blocked by backpressure is not idle).
        with trio.CancelScope() as idle:
            await self._serve_requests(idle)
        if idle.cancelled_caught:
            log.info("closing connection %s: idle, or not reading its responses", self.peer)

    async def _serve_requests(self, idle: trio.CancelScope) -> None:
        dialect = self.dialect
        while True:
            try:
                request = dialect.next_request()
            except RemoteProtocolError as exc:
                log.warning("protocol error from %s: %s", self.peer, exc)
                idle.deadline = math.inf
                await self._enqueue(_Broken(exc), None, 0.0)
                await self._outbox_send.send((None, _CLOSE, 0.0))
                return
            if request is CLOSED:
                return
            if request is NEED_DATA:
                with dialect.receive_buffer(RECEIVE_BYTES) as view:
                    n = await self._receive_into(view, idle)
                dialect.received(n)
                await self._fair_share(requests=0, received=n)
                continue
            started = perf_counter()
            outcome = self._serve(request)
            if isinstance(outcome, Pending):
                # In flight from now until answered, so a drain waits for it (the count never
                # touches zero between its work and its response). Waiting for it is not idling.
                idle.deadline = math.inf
                self.inflight.started()
                try:
                    outcome = await self._finish(outcome.run(), request)
                    self._unyielded = self._unyielded_bytes = 0  # it waited: others ran
                    await self._answer(request, outcome, idle, started)
                finally:
                    self.inflight.finished()
            else:
                await self._answer(request, outcome, idle, started)

    async def _answer(self, request, outcome, idle: trio.CancelScope, started: float) -> None:
        if outcome is None:
            self.dialect.answered(request, perf_counter() - started)
            await self._fair_share()
        elif self._queued == 0 and not isinstance(outcome, Deferred):
            # Nothing is queued or being sent ahead of it: answer from here, saving the hop
            # through the outbox to the writer task. ``idle`` doubles as the send timeout
            # while the deadline is armed for the send.
            self.inflight.started()
            try:
                await self._send(request, outcome, idle, started)
            finally:
                self.inflight.finished()
            await self._fair_share()
        else:
            await self._enqueue(request, outcome, started, idle)

    async def _receive_into(self, view: memoryview, idle: trio.CancelScope) -> int:
        """Receive straight into the dialect's buffer (for a large frame: the frame itself).

        Bytes already there are taken at once, with no trip through the scheduler; only an
        empty channel waits, with ``idle``'s deadline armed. The deadline stays armed after
        the wait (re-arming it costs as much as a small request's decoding) and is lifted
        before anything else that may block: queueing for the writer, or a send.
        """
        channel = self.channel
        while True:
            n = channel.receive_now(view)
            if n is not None:
                return n
            idle.deadline = trio.current_time() + self.idle_timeout_s
            self._unyielded = self._unyielded_bytes = 0
            await channel.wait_receivable()

    async def _fair_share(self, *, requests: int = 1, received: int = 0) -> None:
        """Let other tasks run after every few requests answered, or bytes received, without
        waiting: a client that keeps its socket full must not monopolize the loop."""
        self._unyielded += requests
        self._unyielded_bytes += received
        if self._unyielded >= FAIR_SHARE_REQUESTS or self._unyielded_bytes >= FAIR_SHARE_BYTES:
            self._unyielded = self._unyielded_bytes = 0
            await trio.lowlevel.checkpoint()

    async def _enqueue(
        self, request, outcome, started: float, idle: trio.CancelScope | None = None
    ) -> None:
        """Queue an answer for the writer; it counts as in flight until sent or dropped.

        Waiting for room in the outbox is backpressure, not idleness: ``idle`` is lifted."""
        self.inflight.started()
        self._queued += 1
        item = (request, outcome, started)
        try:
            try:
                self._outbox_send.send_nowait(item)
            except trio.WouldBlock:
                if idle is not None:
                    idle.deadline = math.inf
                await self._outbox_send.send(item)
            else:
                await self._fair_share()
        except BaseException:
            self._queued -= 1
            self.inflight.finished()
            raise

    def _serve(self, request):
        try:
            return self.dialect.serve(request)
        except ApiError as exc:
            return exc
        except Exception as exc:  # a bug: answer it, log it, keep serving
            return _unexpected(exc, request)

    @staticmethod
    async def _finish(work: Awaitable, request):
        """Await a request's pending work or deferred answer: its outcome, or the error to
        answer with."""
        try:
            return await work
        except ApiError as exc:
            return exc
        except Exception as exc:
            return _unexpected(exc, request)

    # -- the writer ----------------------------------------------------------------------------

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        try:
            # One scope for the connection's life; its deadline is armed only while a response
            # is being sent, so a client that stops reading is dropped after the send timeout.
            with trio.CancelScope() as sending:
                async for request, outcome, started in self._outbox_receive:
                    if outcome is _CLOSE:
                        break
                    try:
                        await self._deliver(request, outcome, sending, started)
                    finally:
                        self._queued -= 1
                        self.inflight.finished()
            if sending.cancelled_caught:
                log.info("dropping %s: it did not read its response in time", self.peer)
        finally:
            scope.cancel()
            # Responses still queued will never be sent: they are no longer in flight.
            while True:
                try:
                    _, outcome, _ = self._outbox_receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if outcome is not _CLOSE:
                    self.dialect.release(outcome)
                    self._queued -= 1
                    self.inflight.finished()

    async def _deliver(self, request, outcome, sending: trio.CancelScope, started: float) -> None:
        if isinstance(request, _Broken):
            await self.channel.send(self.dialect.closing_frame(request.error), sending)
            return
        if isinstance(outcome, Deferred):
            outcome = await self._finish(outcome.complete(), request)
        await self._send(request, outcome, sending, started)

    async def _send(self, request, outcome, sending: trio.CancelScope, started: float) -> None:
        try:
            await self.channel.send(self.dialect.encode(request, outcome), sending)
        finally:
            self.dialect.release(outcome)
        self.dialect.answered(request, perf_counter() - started)


def _unexpected(exc: Exception, request) -> ApiError:
    """A bug serving ``request`` (a dialect's request event: named by the request it holds):
    log it; the client gets an ``UnknownServerError``."""
    name = type(getattr(request, "request", request)).__name__
    log.exception("unexpected error serving %s", name, exc_info=exc)
    return UnknownServerError(f"{type(exc).__name__}: {exc}")
