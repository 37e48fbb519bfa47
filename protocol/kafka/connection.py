"""Kafka server and client connections, sans-IO, in h11's shape.

The caller owns the I/O: feed received bytes to ``receive_data`` (``b""`` at EOF) or receive
into ``receive_buffer`` / ``received``; pull events from ``next_event`` until ``NEED_DATA``
(read more) or ``CLOSED``; send the pieces ``send_*`` return, in order (bytes-likes with a
socket send, ``FileSlice``s with sendfile).

Invariants: responses travel in request order; a Produce with acks=0 is owed nothing (Kafka
never answers one); a ``KafkaRemoteError`` (or any ``RemoteProtocolError``) is sticky: once
``next_event`` raised it, it raises it again, and the caller closes the connection, which is
what Kafka does for garbage, an unknown API key or an unsupported version.
"""

from __future__ import annotations

from collections import deque

from sluice.protocol.connection import _FramedConnection
from sluice.protocol.errors import LocalProtocolError, RemoteProtocolError
from sluice.protocol.framing import CLOSED, Signal
from sluice.protocol.kafka.codec import (
    MAX_ITEMS,
    api_for,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from sluice.protocol.kafka.events import (
    RequestHeader,
    RequestReceived,
    ResponseReceived,
    UnsupportedApiVersionsRequest,
)
from sluice.protocol.kafka.framing import MAX_FRAME_BYTES, KafkaFrameDecoder
from sluice.protocol.messages import Piece

PRODUCE = 0
_CID_MAX = 2**31 - 1


def expects_response(header: RequestHeader, request: object) -> bool:
    """False only for a Produce with acks=0."""
    return not (header.api_key == PRODUCE and request.acks == 0)


class _KafkaConnection(_FramedConnection):
    """What both sides share: received bytes go to one ``KafkaFrameDecoder`` (receiving as
    Sluice's own connections do); a remote error is remembered and raised again."""

    def __init__(self, decoder: KafkaFrameDecoder) -> None:
        self._decoder = decoder
        self._error: RemoteProtocolError | None = None

    def _next_frame(self) -> memoryview | Signal:
        if self._error is not None:
            raise self._error
        try:
            return self._decoder.next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        return exc


class KafkaServerConnection(_KafkaConnection):
    """The broker's side of one Kafka connection."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, max_items: int = MAX_ITEMS) -> None:
        super().__init__(KafkaFrameDecoder(max_frame_bytes))
        self.max_items = max_items
        self._owed: deque[RequestHeader] = deque()  # requests still to answer, in order

    @property
    def owed(self) -> int:
        """How many received requests still wait for their response."""
        return len(self._owed)

    def next_event(self) -> RequestReceived | UnsupportedApiVersionsRequest | Signal:
        """The next request, an ApiVersions request to refuse, ``NEED_DATA`` or ``CLOSED``.

        Raises ``KafkaRemoteError`` (``FrameSizeError``, ``UnknownApiKeyError``,
        ``UnsupportedApiVersionError``, ``MalformedMessageError``) or
        ``RemoteProtocolError`` (EOF inside a frame): close the connection.
        """
        frame = self._next_frame()
        if not isinstance(frame, memoryview):
            return frame
        try:
            event = decode_request(frame, self.max_items)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if isinstance(event, UnsupportedApiVersionsRequest) or expects_response(
            event.header, event.request
        ):
            self._owed.append(event.header)
        return event

    def send_response(self, header: RequestHeader, response: object) -> list[Piece]:
        """Encode ``response`` to the oldest owed request, whose ``header`` this is.

        For an ``UnsupportedApiVersionsRequest`` the response goes out at v0 (build it with
        ``codec.unsupported_version_response``). ``LocalProtocolError`` if ``header`` is not
        the next one owed or the response cannot be encoded.
        """
        if not self._owed or self._owed[0] is not header:
            owed = self._owed[0] if self._owed else "nothing"
            raise LocalProtocolError(f"response to {header} out of turn; next owed: {owed}")
        pieces = encode_response(header, response)
        self._owed.popleft()
        return pieces


class KafkaClientConnection(_KafkaConnection):
    """A client's side: assigns correlation ids, matches responses to requests in order.

    For tests and tools; the broker's clients are the Kafka clients themselves.
    """

    def __init__(self, client_id: str | None = "sluice",
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        super().__init__(KafkaFrameDecoder(max_frame_bytes))
        self.client_id = client_id
        self._next_cid = 0
        self._awaiting: deque[RequestHeader] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._awaiting)

    def send_request(self, request: object, api_version: int) -> tuple[RequestHeader, list[Piece]]:
        """Encode ``request`` at ``api_version`` under the next correlation id."""
        if self._error is not None:
            raise LocalProtocolError(f"connection already failed: {self._error}")
        header = RequestHeader(api_key=api_for(request, want_request=True).key,
                               api_version=api_version, correlation_id=self._next_cid,
                               client_id=self.client_id)
        pieces = encode_request(header, request)
        self._next_cid = (self._next_cid + 1) & _CID_MAX
        if expects_response(header, request):
            self._awaiting.append(header)
        return header, pieces

    def next_event(self) -> ResponseReceived | Signal:
        """The next response, ``NEED_DATA`` or ``CLOSED``; ``RemoteProtocolError`` if the
        broker breaks the protocol (garbage, an unexpected correlation id, EOF with answers
        due)."""
        frame = self._next_frame()
        if frame is CLOSED and self._awaiting:
            raise self._fail(RemoteProtocolError(
                f"broker closed the connection with {len(self._awaiting)} responses due"))
        if not isinstance(frame, memoryview):
            return frame
        if not self._awaiting:
            raise self._fail(RemoteProtocolError("response received but none is due"))
        header = self._awaiting[0]
        try:
            cid, response = decode_response(frame, header)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if cid != header.correlation_id:
            raise self._fail(RemoteProtocolError(
                f"response correlation id {cid}, expected {header.correlation_id}"))
        self._awaiting.popleft()
        return ResponseReceived(header=header, response=response)
