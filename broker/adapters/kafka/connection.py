"""Kafka's protocol on a listener: ``KafkaAdapter`` serves each connection as a ``Session``
whose ``Dialect`` is a ``KafkaConnection`` -- the sans-IO ``KafkaServerConnection`` plus the
handlers, which see it as their context.

Bad input, as Kafka treats it (docs/KAFKA-PROTOCOL.md, "Bad input"): garbage, an oversized
size prefix, an unknown API key or an unsupported version is a ``RemoteProtocolError`` from
the connection, and the session closes the connection without a word (Kafka answers none of
them); an ApiVersions request at a version this broker does not know is answered at v0 with
UNSUPPORTED_VERSION and the API list. A request that decodes but cannot be served is answered
with its API's error response. A Produce with acks=0 is never answered: if it fails, the
connection is closed instead (Kafka's way of telling such a producer to refresh its
metadata).

Every request counts in the broker's ``RequestStats`` under ``("kafka", API name)``.
"""

from __future__ import annotations

import logging

from sluice.broker.adapters.base import ProtocolAdapter
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.kafka.handlers import dispatch
from sluice.broker.adapters.kafka.responses import error_code, error_response
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.domain.fetching import release_slices
from sluice.broker.io.channel import Piece
from sluice.protocol.errors import ApiError, BrokerShuttingDownError, RemoteProtocolError
from sluice.protocol.kafka import (
    APIS,
    KafkaServerConnection,
    RequestReceived,
    UnsupportedApiVersionsRequest,
    api_versions_entries,
    unsupported_version_response,
)
from sluice.protocol.kafka import messages as k
from sluice.protocol.kafka.connection import expects_response
from sluice.protocol.kafka.errors import KafkaRemoteError

log = logging.getLogger("sluice.session")

PROTOCOL = "kafka"


class KafkaAdapter(ProtocolAdapter):
    """Kafka's protocol served on ``broker`` (see the module docstring). ``advertised`` is
    the Kafka listener's address, which Metadata and FindCoordinator name."""

    protocol = PROTOCOL

    def __init__(
        self, broker: Broker, config: BrokerConfig, inflight: InFlight, advertised: tuple[str, int]
    ) -> None:
        super().__init__(broker, config, inflight, advertised,
                         {key: api.name for key, api in APIS.items()})

    def dialect(self, peer: str) -> KafkaConnection:
        return KafkaConnection(self, peer)

    def refusal(self, error: ApiError) -> bytes:
        """A connection that is not admitted is closed without a word: Kafka's protocol has
        no frame a broker sends unasked (the client reconnects after its backoff)."""
        return b""


class KafkaConnection:
    """One connection's protocol state (the session's ``Dialect``) and what its handlers know
    besides their request: the broker, the advertised address, the peer."""

    def __init__(self, adapter: KafkaAdapter, peer: str) -> None:
        config = adapter.config
        self._adapter = adapter
        self.broker = adapter.broker
        self.config = config
        self.advertised = adapter.advertised
        self.peer = peer
        self._conn = conn = KafkaServerConnection(max_frame_bytes=config.max_frame_bytes)
        self.receive_buffer = conn.receive_buffer
        self.received = conn.received
        self._close_reason: str | None = None  # set by a failed acks=0 Produce

    def next_request(self):
        if self._close_reason is not None:
            raise RemoteProtocolError(self._close_reason)
        try:
            return self._conn.next_event()
        except KafkaRemoteError as exc:  # counted, for metrics, under the API it named
            self._adapter.stats_for(exc.api_key).errors += 1
            raise

    def close_after(self, reason: str) -> None:
        """Close the connection once the responses before this request are sent."""
        self._close_reason = reason

    def serve(self, event: RequestReceived | UnsupportedApiVersionsRequest):
        header = event.header
        self._adapter.stats_for(header.api_key).requests += 1
        if isinstance(event, UnsupportedApiVersionsRequest):
            return unsupported_version_response(api_versions_entries())
        request = event.request
        if self.broker.stopping:
            if not expects_response(header, request):
                self.close_after("the broker is shutting down")
                return None
            return BrokerShuttingDownError("the broker is shutting down")
        return dispatch(self, header, request)

    def encode(self, event: RequestReceived | UnsupportedApiVersionsRequest, outcome) -> list[Piece]:
        header = event.header
        if isinstance(outcome, ApiError):
            self._adapter.stats_for(header.api_key).errors += 1
            outcome = error_response(header, event.request, error_code(outcome, header))
        return self._conn.send_response(header, outcome)

    def closing_frame(self, error: RemoteProtocolError) -> list[Piece]:
        """Nothing: Kafka closes a connection whose framing broke without answering."""
        return []

    def release(self, outcome) -> None:
        """Release the file references a Fetch response's records hold (sent or dropped)."""
        if isinstance(outcome, k.FetchResponse):
            for topic in outcome.responses:
                for part in topic.partitions:
                    if isinstance(part.records, list | tuple):
                        release_slices(part.records)

    def answered(self, event: RequestReceived | UnsupportedApiVersionsRequest,
                 seconds: float) -> None:
        self._adapter.stats_for(event.header.api_key).latency.observe(seconds)
