"""``KafkaContext``: what a Kafka handler knows besides its request."""

from __future__ import annotations

from typing import Protocol

from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker


class KafkaContext(Protocol):
    """The connection a request came on: the domain, the broker's settings, the address the
    Kafka listener advertises, and the peer's address (``host:port``)."""

    broker: Broker
    config: BrokerConfig
    advertised: tuple[str, int]
    peer: str

    def close_after(self, reason: str) -> None:
        """Close the connection once the responses owed before this request are sent."""
