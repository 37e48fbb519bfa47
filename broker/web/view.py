"""``BrokerView``: what the HTTP port reads besides the domain -- handed over by the
composition root, so this package imports neither the root nor the I/O implementations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sluice.broker.config import BrokerConfig
from sluice.broker.domain.broker import Broker
from sluice.broker.io.channel import ChannelStats


@dataclass(frozen=True, slots=True)
class BrokerView:
    """The broker as the HTTP port sees it.

    ``connections()`` counts the open connections of every listener (this port's too: they
    share the descriptor budget); ``channels`` what each listener's channels sent and read,
    by listener name; ``listeners`` names each listener's ``host:port``;
    ``started`` is when serving began (``time.time()``)."""

    broker: Broker
    config: BrokerConfig
    connections: Callable[[], int]
    channels: dict[str, ChannelStats]
    listeners: dict[str, str]
    started: float

    def __post_init__(self) -> None:
        if not callable(self.connections):
            raise TypeError("connections must be a function counting open connections")
