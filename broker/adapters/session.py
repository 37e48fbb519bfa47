"""One client connection: read requests, dispatch them in order, answer them in order.

Two tasks per connection:

* the **reader** decodes frames and runs each request's handler inline, in arrival order
  (appends therefore happen in request order; a handler's ``Pending`` work -- a large append
  written by a worker thread -- is awaited before the next request is read), and queues the
  outcome;
* the **writer** takes outcomes in the same order, completes the deferred ones (a flush to wait
  for, a long poll), encodes and sends them -- the only task that sends on this connection.

Fairness: the reader lets other tasks run after ``FAIR_SHARE_REQUESTS`` requests or
``FAIR_SHARE_BYTES`` received without waiting, whichever comes first, so neither a client
pipelining many small requests nor one sending 8 MiB batches back to back holds the event loop
for long.

The queue between them is bounded (``max_in_flight``): a client that pipelines faster than the
broker answers, or stops reading its responses, stops being read, so its memory stays bounded
and TCP pushes back. A client that sends nothing for ``idle_timeout_s`` is disconnected; so is
one whose responses can't be delivered within ``send_timeout_s``.

Bad input: an intact frame with a bad header is answered with an error response and the
connection carries on; broken framing (garbage, an oversized prefix) is answered with one error
frame, then the connection is closed. Either way only this connection is affected.
"""

from __future__ import annotations

import logging
import math
import os

import trio
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.outcomes import Deferred, Pending
from sluice.broker.adapters.sluice.handlers import dispatch
from sluice.broker.adapters.sluice.records import release_fetch
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.io.sockets import Transport
from sluice.protocol import messages as m
from sluice.protocol.connection import BadRequest, RequestReceived, ServerConnection
from sluice.protocol.errors import (
    ApiError,
    BrokerShuttingDownError,
    FrameTooLargeError,
    InvalidRequestError,
    LocalProtocolError,
    OversizedFrameError,
    RemoteProtocolError,
    UnknownServerError,
)
from sluice.protocol.framing import CLOSED, NEED_DATA

log = logging.getLogger("sluice.session")

RECEIVE_BYTES = 256 * 1024
FAIR_SHARE_REQUESTS = 16  # the reader yields at least once per this many requests...
FAIR_SHARE_BYTES = 256 * 1024  # ...and per this many bytes received
_CLOSE = object()


class Session:
    """The state of one connection; ``run`` serves it until EOF, error or cancellation."""

    def __init__(
        self, broker: Broker, config: BrokerConfig, inflight: InFlight,
        advertised: tuple[str, int], stream: trio.SocketStream, peer: str,
    ) -> None:
        self.broker = broker
        self.config = config
        self.inflight = inflight
        self.advertised = advertised
        self.stream = stream
        self.peer = peer
        self.client_id = ""
        self._queued = 0  # responses handed to the writer and not yet sent (or dropped)
        self.conn = ServerConnection(max_frame_bytes=self.config.max_frame_bytes)
        self.transport = Transport(
            stream, use_sendfile=self.config.use_sendfile, send_timeout_s=self.config.send_timeout_s
        )
        self._unyielded = 0  # requests answered by the reader since it last let others run
        self._unyielded_bytes = 0  # bytes received by the reader since it last let others run
        self._outbox_send, self._outbox_receive = trio.open_memory_channel(
            self.config.max_in_flight
        )

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                async with self._outbox_send:
                    await self._read_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection %s dropped: %s", self.peer, exc)
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self) -> None:
        # One scope for the connection's life; its deadline is armed only while waiting for
        # bytes (a client blocked by backpressure is not idle).
        with trio.CancelScope() as idle:
            await self._serve_requests(idle)
        if idle.cancelled_caught:
            log.info("closing connection %s: idle, or not reading its responses", self.peer)

    async def _serve_requests(self, idle: trio.CancelScope) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                log.warning("protocol error from %s: %s", self.peer, exc)
                idle.deadline = math.inf
                await self._enqueue(-1, -1, _protocol_error(exc))
                await self._outbox_send.send((-1, -1, _CLOSE))
                return
            if event is CLOSED:
                return
            if event is NEED_DATA:
                with self.conn.receive_buffer(RECEIVE_BYTES) as view:
                    n = await self._receive_into(view, idle)
                self.conn.received(n)
                await self._fair_share(requests=0, received=n)
                continue
            if isinstance(event, BadRequest):
                await self._enqueue(event.correlation_id, event.api, event.error, idle)
                continue
            assert isinstance(event, RequestReceived)
            if self.broker.stopping:
                outcome = BrokerShuttingDownError("the broker is shutting down")
                if not m.expects_response(event.request):
                    continue
            else:
                outcome = self._handle(event.request)
            if isinstance(outcome, Pending):
                # In flight from now until answered, so a drain waits for it (the count never
                # touches zero between its work and its response). Waiting for it is not idling.
                idle.deadline = math.inf
                self.inflight.started()
                try:
                    outcome = await self._finish(outcome, event.request)
                    await self._answer(event, outcome, idle)
                finally:
                    self.inflight.finished()
            else:
                await self._answer(event, outcome, idle)

    async def _answer(self, event: RequestReceived, outcome, idle: trio.CancelScope) -> None:
        if outcome is None:
            await self._fair_share()
        elif self._can_answer_now(outcome):
            # Nothing is queued or being sent ahead of it: answer from here, saving the hop
            # through the outbox to the writer task. ``idle`` doubles as the send timeout
            # while the deadline is armed for the send.
            self.inflight.started()
            try:
                await self._send(event.correlation_id, event.api, outcome, idle)
            finally:
                release_fetch(outcome)
                self.inflight.finished()
            await self._fair_share()
        else:
            await self._enqueue(event.correlation_id, event.api, outcome, idle)

    def _can_answer_now(self, outcome) -> bool:
        """A ready response with no response ahead of it (so order is kept)."""
        return self._queued == 0 and not isinstance(outcome, Deferred)

    async def _receive_into(self, view: memoryview, idle: trio.CancelScope) -> int:
        """Receive straight into the protocol's buffer (for a large frame: the frame itself).

        Bytes already there are taken with one ``readv``, no trip through the scheduler;
        only an empty socket waits, with ``idle``'s deadline armed. The deadline stays armed
        after the wait (re-arming it costs as much as a small request's decoding) and is
        lifted before anything else that may block: queueing for the writer, or a send.
        """
        sock = self.stream.socket
        while True:
            try:
                return os.readv(sock.fileno(), [view])
            except BlockingIOError:
                pass
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive failed: {exc}") from exc
            idle.deadline = trio.current_time() + self.config.idle_timeout_s
            self._unyielded = self._unyielded_bytes = 0
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError as exc:
                raise trio.BrokenResourceError("connection closed while receiving") from exc

    async def _fair_share(self, *, requests: int = 1, received: int = 0) -> None:
        """Let other tasks run after every few requests answered, or bytes received, without
        waiting: a client that keeps its socket full must not monopolize the loop."""
        self._unyielded += requests
        self._unyielded_bytes += received
        if self._unyielded >= FAIR_SHARE_REQUESTS or self._unyielded_bytes >= FAIR_SHARE_BYTES:
            self._unyielded = self._unyielded_bytes = 0
            await trio.lowlevel.checkpoint()

    async def _enqueue(
        self, correlation_id: int, api: int, outcome, idle: trio.CancelScope | None = None
    ) -> None:
        """Queue a response for the writer; it counts as in flight until sent or dropped.

        Waiting for room in the outbox is backpressure, not idleness: ``idle`` is lifted."""
        self.inflight.started()
        self._queued += 1
        item = (correlation_id, api, outcome)
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

    def _handle(self, request):
        try:
            return dispatch(self, request)
        except ApiError as exc:
            return exc
        except Exception as exc:  # a bug: answer it, log it, keep serving
            return _unexpected(exc, request)

    async def _finish(self, pending: Pending, request):
        """Run a handler's pending work (it waits, so it has let others run)."""
        try:
            return await pending.run()
        except ApiError as exc:
            return exc
        except Exception as exc:
            return _unexpected(exc, request)
        finally:
            self._unyielded = self._unyielded_bytes = 0

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        try:
            # One scope for the connection's life; its deadline is armed only while a response
            # is being sent, so a client that stops reading is dropped after send_timeout_s.
            with trio.CancelScope() as sending:
                async for correlation_id, api, outcome in self._outbox_receive:
                    if outcome is _CLOSE:
                        break
                    try:
                        await self._deliver(correlation_id, api, outcome, sending)
                    finally:
                        self._queued -= 1
                        self.inflight.finished()
            if sending.cancelled_caught:
                log.info("dropping %s: it did not read its response within %.0f s",
                         self.peer, self.config.send_timeout_s)
        finally:
            scope.cancel()
            # Responses still queued will never be sent: they are no longer in flight.
            while True:
                try:
                    _, _, outcome = self._outbox_receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if outcome is not _CLOSE:
                    release_fetch(outcome)
                    self._queued -= 1
                    self.inflight.finished()

    async def _deliver(self, correlation_id: int, api, outcome, sending: trio.CancelScope) -> None:
        if isinstance(outcome, Deferred):
            try:
                outcome = await outcome.complete()
            except ApiError as exc:
                outcome = exc
        try:
            await self._send(correlation_id, api, outcome, sending)
        finally:
            release_fetch(outcome)

    async def _send(self, correlation_id: int, api, outcome, sending: trio.CancelScope) -> None:
        if isinstance(outcome, ApiError):
            pieces = self.conn.send_error(correlation_id, api, outcome)
        else:
            try:
                pieces = self.conn.send_response(correlation_id, outcome)
            except LocalProtocolError as exc:  # e.g. a header over max_header_bytes
                log.warning("response to %s cannot be sent: %s", self.peer, exc)
                pieces = self.conn.send_error(correlation_id, api, InvalidRequestError(
                    f"the response cannot be encoded ({exc}); ask for fewer items per request"
                ))
        await self.transport.send(pieces, sending)


def _unexpected(exc: Exception, request) -> ApiError:
    """A bug serving ``request``: log it; the client gets an ``UnknownServerError``."""
    log.exception("unexpected error serving %s", type(request).__name__, exc_info=exc)
    return UnknownServerError(f"{type(exc).__name__}: {exc}")


def _protocol_error(exc: RemoteProtocolError) -> ApiError:
    """The error frame sent before closing a connection whose framing broke."""
    if isinstance(exc, OversizedFrameError):
        return FrameTooLargeError(str(exc))
    return InvalidRequestError(str(exc))
