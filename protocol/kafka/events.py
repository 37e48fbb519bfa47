"""What the Kafka connections hand their caller: request headers and the three events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_INT16 = (-(2**15), 2**15 - 1)
_INT32 = (-(2**31), 2**31 - 1)


def _int_in(value: object, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHeader:
    """Request header v1 (v2 adds tagged fields, for flexible versions): what every request
    starts with. ``client_id`` may be None (a nullable string)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None

    def __post_init__(self) -> None:
        if (type(self.api_key) is int and type(self.api_version) is int  # the common case,
                and type(self.correlation_id) is int  # checked inline: every request has one
                and -(2**15) <= self.api_key < 2**15 and -(2**15) <= self.api_version < 2**15
                and -(2**31) <= self.correlation_id < 2**31
                and (self.client_id is None or type(self.client_id) is str)):
            return
        for name, bounds in (("api_key", _INT16), ("api_version", _INT16),
                             ("correlation_id", _INT32)):
            if not _int_in(getattr(self, name), bounds):
                raise ValueError(f"RequestHeader.{name} must be an int in {bounds}, "
                                 f"got {getattr(self, name)!r}")
        if self.client_id is not None and not isinstance(self.client_id, str):
            raise ValueError(f"RequestHeader.client_id must be a str or None, got "
                             f"{type(self.client_id).__name__}")


_SETTERS = tuple(RequestHeader.__dict__[name].__set__
                 for name in ("api_key", "api_version", "correlation_id", "client_id"))


def header_from_wire(api_key: int, api_version: int, correlation_id: int,
                     client_id: str | None) -> RequestHeader:
    """A header from values the wire types already bound (int16, int16, int32, str or None):
    built without re-checking them, as every request pays for it."""
    header = object.__new__(RequestHeader)
    for setter, value in zip(_SETTERS, (api_key, api_version, correlation_id, client_id),
                             strict=True):
        setter(header, value)
    return header


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request that decoded against its schema; answer it with ``send_response`` (unless it
    is a Produce with acks=0, which Kafka never answers)."""

    header: RequestHeader
    request: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsupportedApiVersionsRequest:
    """ApiVersions at a version this broker does not know (clients open with their newest).
    Kafka answers it -- the only request it answers without decoding -- with a v0 body:
    error UNSUPPORTED_VERSION (35) and the API list, so the client retries at a version both
    know. ``send_response`` encodes the answer at v0 whatever the request's version."""

    header: RequestHeader


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """The response to the oldest outstanding request (client side)."""

    header: RequestHeader  # of the request it answers
    response: Any
