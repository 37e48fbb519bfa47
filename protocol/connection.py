"""Client and server connection state machines over frames and messages, sans-IO.

The caller owns the I/O loop: feed received bytes to ``receive_data`` (``b""`` at EOF), pull
events from ``next_event`` until it returns ``NEED_DATA`` (read more) or ``CLOSED``, and send
the pieces ``send_*`` returns (bytes-likes with ``sock.send``, ``FileSlice``s with sendfile).

Invariant: responses travel in request order. The client remembers which (cid, api) it awaits
and rejects anything else; the server remembers which it owes and refuses to answer out of
turn. ``acks=0`` produce requests are owed nothing. A ``RemoteProtocolError`` is sticky: once
raised, ``next_event`` raises it again.
"""

from collections import deque
from dataclasses import dataclass

from sluice.protocol.errors import (
    ApiError,
    LocalProtocolError,
    RemoteProtocolError,
    error_for_code,
)
from sluice.protocol.framing import (
    CLOSED,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    PREALLOCATE_BYTES,
    Frame,
    FrameDecoder,
    Signal,
)
from sluice.protocol.messages import (
    CID_MAX,
    Piece,
    Request,
    Response,
    api_of,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    expects_response,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A well-formed request; answer it with ``send_response`` (unless it is acks=0)."""

    correlation_id: int
    request: Request

    @property
    def api(self) -> int:
        return api_of(self.request).key


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRequest:
    """An intact frame whose header is not a valid request; answer with ``send_error``.

    ``correlation_id`` and ``api`` are -1 when they could not be read.
    """

    correlation_id: int
    api: int
    error: ApiError


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """The response to the oldest outstanding request."""

    correlation_id: int
    response: Response


class _FramedConnection:
    """What both sides share: incoming bytes go to one ``FrameDecoder`` (set by the subclass)."""

    _decoder: FrameDecoder

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._decoder.receive_data(data)

    def receive_buffer(self, size_hint: int) -> memoryview:
        """See ``FrameDecoder.receive_buffer``: receive straight into the frame being filled."""
        return self._decoder.receive_buffer(size_hint)

    def received(self, n: int) -> None:
        self._decoder.received(n)


class ServerConnection(_FramedConnection):
    """The broker's side of one connection."""

    def __init__(
        self,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        preallocate_bytes: int = PREALLOCATE_BYTES,
    ) -> None:
        # A client's announced frame size is not trusted: large frames grow as bytes arrive,
        # and none is kept after use (an idle connection must not pin megabytes).
        self._decoder = FrameDecoder(max_frame_bytes, max_header_bytes, preallocate_bytes)
        self._owed: deque[tuple[int, int]] = deque()  # (cid, api) still to answer, in order

    @property
    def owed(self) -> int:
        """How many received requests are still waiting for their response."""
        return len(self._owed)

    def next_event(self) -> RequestReceived | BadRequest | Signal:
        """The next request, ``NEED_DATA`` or ``CLOSED``; ``RemoteProtocolError`` on bad framing."""
        frame = self._decoder.next_frame()
        if not isinstance(frame, Frame):
            return frame
        try:
            cid, request = decode_request(frame)
        except ApiError as exc:
            self._owed.append((exc.correlation_id, exc.api))
            return BadRequest(correlation_id=exc.correlation_id, api=exc.api, error=exc)
        if expects_response(request):
            self._owed.append((cid, api_of(request).key))
        return RequestReceived(correlation_id=cid, request=request)

    def send_response(self, correlation_id: int, response: Response) -> list[Piece]:
        pieces = encode_response(correlation_id, response)
        self._settle(correlation_id, api_of(response).key)
        return pieces

    def send_error(self, correlation_id: int, api: int, exc: BaseException) -> list[Piece]:
        """An error response to the owed request (``cid``, ``api``), known api or not.

        With ``correlation_id`` -1 and nothing owed under it, this is a connection-level error
        (e.g. ``FrameTooLargeError`` after an oversized frame) that the broker sends before
        closing.
        """
        pieces = encode_error(correlation_id, api, exc)
        self._settle(correlation_id, api)
        return pieces

    def _settle(self, correlation_id: int, api: int) -> None:
        if self._owed and self._owed[0] == (correlation_id, api):
            self._owed.popleft()
        elif correlation_id != -1:
            owed = self._owed[0] if self._owed else "nothing"
            raise LocalProtocolError(
                f"response (cid={correlation_id}, api={api}) out of turn; next owed: {owed}"
            )


class ClientConnection(_FramedConnection):
    """The client's side of one connection: assigns correlation ids, matches responses."""

    def __init__(
        self, max_frame_bytes: int = MAX_FRAME_BYTES, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> None:
        # The broker is trusted to send the frame it announces: allocate it whole at once, and
        # keep two large buffers (a fetch response being read, the one before it) for reuse.
        self._decoder = FrameDecoder(
            max_frame_bytes, max_header_bytes, max_frame_bytes, keep_frames=2
        )
        self._next_cid = 0
        self._awaiting: deque[tuple[int, int]] = deque()  # (cid, api) not yet answered
        self._error: RemoteProtocolError | None = None

    @property
    def in_flight(self) -> int:
        """How many sent requests still await a response."""
        return len(self._awaiting)

    def send_request(self, request: Request) -> tuple[int, list[Piece]]:
        """Assign the next correlation id (wrapping at 2^31) and encode ``request``."""
        if self._error is not None:
            raise LocalProtocolError(f"connection already failed: {self._error}")
        cid = self._next_cid
        pieces = encode_request(cid, request)
        self._next_cid = (cid + 1) & CID_MAX
        if expects_response(request):
            self._awaiting.append((cid, api_of(request).key))
        return cid, pieces

    def next_event(self) -> ResponseReceived | Signal:
        """The next response, ``NEED_DATA`` or ``CLOSED``; ``RemoteProtocolError`` if the
        broker breaks the protocol (garbage, a response out of order, EOF with answers due)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> ResponseReceived | Signal:
        frame = self._decoder.next_frame()
        if frame is CLOSED and self._awaiting:
            raise RemoteProtocolError(
                f"broker closed the connection with {len(self._awaiting)} responses due"
            )
        if not isinstance(frame, Frame):
            return frame
        if not self._awaiting:
            raise RemoteProtocolError("response received but no request is outstanding")
        expected_cid, api = self._awaiting[0]
        cid, response = decode_response(frame, api)
        if cid == -1 and response.error:
            error = error_for_code(response.error, response.message)
            raise RemoteProtocolError(f"broker refused the connection: {error!r}") from error
        if cid != expected_cid:
            raise RemoteProtocolError(f"response cid {cid}, expected {expected_cid}")
        self._awaiting.popleft()
        return ResponseReceived(correlation_id=cid, response=response)
