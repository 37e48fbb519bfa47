"""Counters the domain keeps for whoever watches the broker (metrics, the console).

Each is updated once per append, read, flush or request -- never per record -- by plain
integer additions on the event loop (a flush's time is added when its worker thread is
done), and read without locks: a reader sees each counter at some moment, not all of them at
one. Totals since the broker started serving; a rate is the caller's difference of two reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNKNOWN_API = "unknown"


@dataclass(slots=True)
class PartitionStats:
    """One partition's traffic and durability work."""

    appends: int = 0  # produce requests' appends (each may hold several batches)
    batches_in: int = 0
    records_in: int = 0  # from the batch headers' counts, not by decoding
    bytes_in: int = 0
    duplicates: int = 0  # batches a retrying idempotent producer sent again (not rewritten)
    fetches: int = 0  # reads whose data went out to a reader (a fetch answered with data)
    bytes_out: int = 0
    offsets_out: int = 0  # offsets handed out past the position each reader asked for
    flushes: int = 0
    flush_failures: int = 0
    flush_seconds: float = 0.0  # time spent in fdatasync (worker threads), in total


@dataclass(slots=True)
class ApiStats:
    """One API of one protocol: requests served and how many were answered with an error."""

    requests: int = 0
    errors: int = 0


@dataclass(slots=True)
class RequestStats:
    """Per-API counters of every listener, keyed by ``(protocol, api name)`` -- e.g.
    ``("sluice", "produce")`` -- so each protocol adapter counts under its own names."""

    apis: dict[tuple[str, str], ApiStats] = field(default_factory=dict)

    def api(self, protocol: str, name: str) -> ApiStats:
        """The counters of one API (created on first use; adapters look them up once)."""
        key = (protocol, name)
        stats = self.apis.get(key)
        if stats is None:
            stats = self.apis[key] = ApiStats()
        return stats

    def protocol(self, protocol: str, names: Mapping[int, str]) -> ProtocolStats:
        """One protocol's counters by API key (``names``: key -> API name)."""
        return ProtocolStats({key: self.api(protocol, name) for key, name in names.items()},
                             self.api(protocol, UNKNOWN_API))


@dataclass(slots=True)
class ProtocolStats:
    """One protocol's per-API counters by API key; keys it does not know count under
    ``"unknown"`` (a request for an API nobody serves is still a request)."""

    by_key: dict[int, ApiStats]
    unknown: ApiStats

    def __getitem__(self, key: int) -> ApiStats:
        return self.by_key.get(key) or self.unknown
