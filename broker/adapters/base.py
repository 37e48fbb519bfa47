"""``ProtocolAdapter``: what every protocol's adapter shares -- the domain it serves, its
settings, the requests in flight, the address its listener advertises, its per-API counters
-- and serving a connection as a ``Session`` of the adapter's ``Dialect``."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.session import Dialect, Session
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.domain.stats import ApiStats
from sluice.broker.io.channel import Channel
from sluice.protocol.errors import ApiError


class ProtocolAdapter:
    """One protocol on a listener. Subclasses name their ``protocol`` (counters are kept
    under it), make each connection's ``dialect`` and say what a refused connection gets."""

    protocol: str

    def __init__(self, broker: Broker, config: BrokerConfig, inflight: InFlight,
                 advertised: tuple[str, int], api_names: Mapping[int, str]) -> None:
        self.broker = broker
        self.config = config
        self.inflight = inflight
        self.advertised = advertised
        self.stats = broker.requests.protocol(self.protocol, api_names)

    async def serve(self, channel: Channel) -> None:
        """Serve one connection until it ends."""
        config = self.config
        await Session(channel, self.dialect(channel.peer), self.inflight,
                      idle_timeout_s=config.idle_timeout_s,
                      max_in_flight=config.max_in_flight).run()

    def dialect(self, peer: str) -> Dialect:
        raise NotImplementedError

    def refusal(self, error: ApiError) -> bytes:
        raise NotImplementedError

    def stats_for(self, api_key: int) -> ApiStats:
        return self.stats[api_key]
