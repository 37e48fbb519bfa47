"""Sluice's protocol on a listener: ``SluiceAdapter`` serves each connection as a ``Session``
whose ``Dialect`` is a ``SluiceConnection`` -- the sans-IO ``ServerConnection`` plus the
handlers, which see it as their ``RequestContext``.

Every request counts in the broker's ``RequestStats`` under ``("sluice", api name)``: one
more request when it is served, one more error when it is answered with an error response,
and its latency once answered.
"""

from __future__ import annotations

import logging

from sluice.broker.adapters.base import ProtocolAdapter
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.sluice.handlers import dispatch
from sluice.broker.adapters.sluice.records import release_fetch
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.io.channel import Piece
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
)

log = logging.getLogger("sluice.session")

PROTOCOL = "sluice"


class SluiceAdapter(ProtocolAdapter):
    """Sluice's protocol served on ``broker`` (see the module docstring)."""

    protocol = PROTOCOL

    def __init__(
        self, broker: Broker, config: BrokerConfig, inflight: InFlight, advertised: tuple[str, int]
    ) -> None:
        super().__init__(broker, config, inflight, advertised,
                         {key: api.name for key, api in m.APIS.items()})
        self.stats_by_request = {api.request: self.stats[key] for key, api in m.APIS.items()}

    def dialect(self, peer: str) -> SluiceConnection:
        return SluiceConnection(self, self.config.max_frame_bytes, peer)

    def refusal(self, error: ApiError) -> bytes:
        """The frame a connection that is not admitted gets: an error with correlation id -1,
        which a client reports as the broker refusing the connection."""
        return b"".join(bytes(piece) for piece in m.encode_error(-1, -1, error))


class SluiceConnection:
    """One connection's protocol state (the session's ``Dialect``) and what its handlers know
    besides their request (``RequestContext``: broker, advertised address, client id)."""

    def __init__(self, adapter: SluiceAdapter, max_frame_bytes: int, peer: str) -> None:
        self._adapter = adapter
        self._peer = peer
        self.broker = adapter.broker
        self.advertised = adapter.advertised
        self.client_id = ""
        self._conn = conn = ServerConnection(max_frame_bytes=max_frame_bytes)
        self.receive_buffer = conn.receive_buffer
        self.received = conn.received
        self.next_request = conn.next_event

    def serve(self, event: RequestReceived | BadRequest):
        if isinstance(event, BadRequest):
            self._adapter.stats_for(event.api).requests += 1
            return event.error
        request = event.request
        self._adapter.stats_by_request[type(request)].requests += 1
        if self.broker.stopping:
            if not m.expects_response(request):
                return None
            return BrokerShuttingDownError("the broker is shutting down")
        return dispatch(self, request)

    def encode(self, event: RequestReceived | BadRequest, outcome) -> list[Piece]:
        conn = self._conn
        if isinstance(outcome, ApiError):
            self._adapter.stats_for(event.api).errors += 1
            return conn.send_error(event.correlation_id, event.api, outcome)
        try:
            return conn.send_response(event.correlation_id, outcome)
        except LocalProtocolError as exc:  # e.g. a header over max_header_bytes
            log.warning("response to %s cannot be sent: %s", self._peer, exc)
            self._adapter.stats_for(event.api).errors += 1
            return conn.send_error(event.correlation_id, event.api, InvalidRequestError(
                f"the response cannot be encoded ({exc}); ask for fewer items per request"
            ))

    def closing_frame(self, error: RemoteProtocolError) -> list[Piece]:
        """The error frame sent before closing a connection whose framing broke."""
        if isinstance(error, OversizedFrameError):
            return self._conn.send_error(-1, -1, FrameTooLargeError(str(error)))
        return self._conn.send_error(-1, -1, InvalidRequestError(str(error)))

    def release(self, outcome) -> None:
        release_fetch(outcome)

    def answered(self, event: RequestReceived | BadRequest, seconds: float) -> None:
        self._adapter.stats_for(event.api).latency.observe(seconds)
