"""HTTP/1.1 on a ``Channel``: h11 (sans-IO, the shape Sluice's own protocol code has) reads
requests and writes responses; this module moves the bytes and keeps the limits.

``HttpConnection.serve(handle)`` answers one connection's requests in turn (keep-alive) until
the peer closes, a limit is hit or a response must close it. ``handle`` gets an
``HttpRequest`` and returns an ``HttpResponse``, or an ``EventStream`` (server-sent events:
the connection is given to the stream until it ends or the peer goes away, then closed).

Limits, so a slow or hostile client costs one connection and little memory: a request's head
is at most ``MAX_HEAD_BYTES``, its body at most ``MAX_BODY_BYTES`` (413 beyond); a request's
head must arrive within ``IDLE_TIMEOUT_S`` of the connection's previous answer (or its start;
else the connection is closed) and its body within ``REQUEST_TIMEOUT_S`` after that (408). A response that the peer does not
take within the channel's send timeout drops the connection. Broken HTTP is answered 400 and
the connection closed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio
from sluice.broker.io.channel import Channel

log = logging.getLogger("sluice.web")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
RECEIVE_BYTES = 64 * 1024
SERVER = "sluice"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request: method, the decoded path, the query's parameters (the last of each
    name), headers by lower-case name (repeated ones joined with ", "), and the body."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        """The body as JSON (``HttpError`` 400 if it is not)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole response: status, body, its content type, and more headers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of_json(cls, value: object, status: int = 200) -> HttpResponse:
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    @classmethod
    def error(cls, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return cls(status, json.dumps({"error": message}).encode(), "application/json", headers)


class HttpError(Exception):
    """Answer the request with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> HttpResponse:
        return HttpResponse.error(self.status, self.message, self.headers)


@dataclass(frozen=True, slots=True)
class EventStream:
    """A response of server-sent events: ``run(send)`` sends each event's bytes with ``send``
    until it returns; the peer going away cancels it."""

    run: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse | EventStream]]


def refusal_bytes(status: int, message: str) -> bytes:
    """A whole response for a connection turned away before any request was read (h11 speaks
    only after a request), closing the connection."""
    body = (message + "\n").encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: {SERVER}\r\nContent-Type: text/plain; "
            f"charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _PeerGone(Exception):
    """The peer closed its side (or sent something) while an event stream ran."""


class HttpConnection:
    """One HTTP connection over ``channel`` (see the module docstring)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._buffer = bytearray(RECEIVE_BYTES)
        self._sending: trio.CancelScope | None = None

    async def serve(self, handle: Handler) -> None:
        """Answer requests until the connection ends."""
        with trio.CancelScope() as sending:  # its deadline: the channel's send timeout
            self._sending = sending
            while await self._serve_one(handle):
                self._h11.start_next_cycle()

    async def _serve_one(self, handle: Handler) -> bool:
        """Read, handle and answer one request; whether the connection may carry another."""
        try:
            request = await self._read_request()
        except HttpError as exc:
            await self._respond_and_close(exc.response())
            return False
        except h11.RemoteProtocolError as exc:
            await self._respond_and_close(HttpResponse.error(exc.error_status_hint, f"bad request: {exc}"))
            return False
        if request is None:
            return False
        try:
            answer = await handle(request)
        except HttpError as exc:
            answer = exc.response()
        except Exception:  # a bug: answer it, log it, keep the broker serving
            log.exception("unexpected error serving %s %s", request.method, request.path)
            answer = HttpResponse.error(500, "internal error (logged by the broker)")
        if isinstance(answer, EventStream):
            await self._stream(answer)
            return False
        await self._respond(answer)
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    # -- reading -------------------------------------------------------------------------------

    async def _read_request(self) -> HttpRequest | None:
        """The next request, or None if the peer closed (or stayed idle) between requests."""
        head = None
        body = bytearray()
        with trio.move_on_after(IDLE_TIMEOUT_S) as idle:
            event = await self._next_event()
        if idle.cancelled_caught or isinstance(event, h11.ConnectionClosed):
            return None
        with trio.move_on_after(REQUEST_TIMEOUT_S) as late:
            while True:
                if isinstance(event, h11.Request):
                    head = event
                    if _content_length(event) > MAX_BODY_BYTES:
                        raise HttpError(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY_BYTES:
                        raise HttpError(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
                event = await self._next_event()
        if late.cancelled_caught:
            raise HttpError(408, f"the request did not arrive within {REQUEST_TIMEOUT_S:g} s")
        assert head is not None
        return _request_of(head, bytes(body))

    async def _next_event(self):
        """h11's next event, receiving bytes as it needs them."""
        conn = self._h11
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            n = self._channel.receive_now(memoryview(self._buffer))
            if n is None:
                await self._channel.wait_receivable()
                continue
            conn.receive_data(bytes(self._buffer[:n]) if n else b"")

    # -- writing -------------------------------------------------------------------------------

    async def _respond(self, response: HttpResponse) -> None:
        headers = [("Server", SERVER), ("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *_SAFETY, *response.headers]
        await self._send(h11.Response(status_code=response.status, headers=headers,
                                      reason=HTTPStatus(response.status).phrase),
                         h11.Data(data=response.body), h11.EndOfMessage())

    async def _respond_and_close(self, response: HttpResponse) -> None:
        """Answer a request that broke off (bad, too large, too slow), then close."""
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                response = HttpResponse(response.status, response.body, response.content_type,
                                        (*response.headers, ("Connection", "close")))
                await self._respond(response)
            except h11.LocalProtocolError:  # e.g. it broke before h11 saw a request line
                await self._channel.send([refusal_bytes(response.status, response.body.decode())],
                                         self._sending)

    async def _stream(self, stream: EventStream) -> None:
        headers = [("Server", SERVER), ("Content-Type", "text/event-stream"),
                   ("Cache-Control", "no-store"), ("Connection", "close"), *_SAFETY,
                   *stream.headers]
        await self._send(h11.Response(status_code=200, headers=headers, reason="OK"))

        async def send(data: bytes) -> None:
            await self._send(h11.Data(data=data))

        gone = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_peer)
                await stream.run(send)
                nursery.cancel_scope.cancel()
        except* (_PeerGone, trio.BrokenResourceError, trio.ClosedResourceError):
            gone = True  # the peer went away: nothing more to say
        if not gone:
            await self._send(h11.EndOfMessage())

    async def _watch_peer(self) -> None:
        """While a stream runs the peer has nothing more to say: whatever comes (its close,
        above all) ends the stream."""
        await self._channel.wait_receivable()
        raise _PeerGone

    async def _send(self, *events) -> None:
        data = b"".join(self._h11.send(event) or b"" for event in events)
        await self._channel.send([data], self._sending)


# Every response: no MIME sniffing, no framing by other sites (the console has buttons that
# write), no referrer leaking the broker's address.
_SAFETY = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
           ("Referrer-Policy", "no-referrer"))


def _content_length(head: h11.Request) -> int:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is a number
    return 0


def _request_of(head: h11.Request, body: bytes) -> HttpRequest:
    target = head.target.decode("ascii", "replace")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return HttpRequest(
        method=head.method.decode("ascii"), path=unquote(parts.path) or "/",
        query=dict(parse_qsl(parts.query, keep_blank_values=True)), headers=headers, body=body,
    )

