"""Every error a client user can see: the broker's typed errors plus client-side ones.

Broker errors arrive as wire codes and are raised as the exact ``protocol.errors`` class the
broker raised; the classes here cover what only the client can observe (no broker to talk to,
a delivery that ran out of time, a closed producer).
"""

from sluice.protocol.errors import *  # noqa: F403 -- re-export: users import every error from here
from sluice.protocol.errors import ApiError, RequestTimedOutError, SluiceError, error_for_code


class BrokerUnreachableError(SluiceError):
    """No broker in the bootstrap list accepted a connection."""


class ConnectionLostError(SluiceError):
    """The connection to the broker closed while a request was outstanding (retriable)."""

    retriable = True


class RequestTimeoutError(RequestTimedOutError, ConnectionLostError):
    """No answer within ``request_timeout_ms``: the client closed the connection (retriable).

    A ``RequestTimedOutError`` (``except RequestTimedOutError`` catches the broker's and the
    client's timeouts alike) and a ``ConnectionLostError``: the answer's place in the pipeline
    is lost, so the connection is closed and every other request on it fails too. Whether the
    request was carried out is unknown."""


class DeliveryTimeoutError(SluiceError):
    """A record was not acknowledged within ``delivery_timeout_ms``. If it was sent, whether it
    was written is unknown: the producer never sends it again (see ``client.sender``)."""


class ClientClosedError(SluiceError):
    """The producer or consumer is closed (or closing) and takes no more work."""


class NoOffsetError(SluiceError):
    """A partition has no valid position and ``auto_offset_reset`` is ``"error"``."""


def is_retriable(exc: BaseException) -> bool:
    """Whether trying the same request again may succeed."""
    return isinstance(exc, ConnectionLostError) or (isinstance(exc, ApiError) and exc.retriable)


def raise_for_error(response) -> None:
    """Raise the typed error of a response's top-level ``error`` code, if any."""
    if response.error:
        raise error_for_code(response.error, response.message)
