"""``RequestContext``: what a Sluice handler knows besides its request."""

from __future__ import annotations

from typing import Protocol

from sluice.broker.domain.broker import Broker


class RequestContext(Protocol):
    """The connection a request came on: the domain, the address this listener advertises,
    and what the client said of itself (its handshake's ``client_id``)."""

    broker: Broker
    advertised: tuple[str, int]
    client_id: str
