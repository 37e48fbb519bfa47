"""Counters the domain keeps for whoever watches the broker (metrics, the console).

Each is updated once per append, batch, read, flush or request -- never per record -- by
plain integer additions on the event loop (a flush's time is added when its worker thread is
done), and read without locks: a reader sees each counter at some moment, not all of them at
one. Totals since the broker started serving; a rate is the caller's difference of two reads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

UNKNOWN_API = "unknown"

# Upper bounds of the latency buckets, in seconds: 100 us (a small request on loopback takes
# ~250 us) to 10 s (a long poll waits up to its max_wait). Prometheus's own defaults start at
# 5 ms, too coarse for a broker.
LATENCY_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Upper bounds of the batch size buckets, in bytes: powers of 4 from 256 B to 16 MiB.
BATCH_BOUNDS_BYTES = tuple(float(256 << (2 * i)) for i in range(9))


class Histogram:
    """Observations counted in buckets with fixed upper bounds, as Prometheus counts them.

    Invariant: ``counts[i]`` is how many observations were ``<= bounds[i]`` and greater than
    the bound before it; the last count is those above every bound (Prometheus's ``+Inf``);
    ``sum`` adds every observation. ``observe`` is one bisection and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or any(low >= high for low, high in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"histogram bounds must be strictly increasing, got {bounds}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Histogram) -> None:
        """Add ``other``'s observations (same bounds) to these: to sum partitions' histograms."""
        if other.bounds != self.bounds:
            raise ValueError("only histograms with the same bounds add up")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum


def latency_histogram() -> Histogram:
    return Histogram(LATENCY_BOUNDS_S)


def batch_histogram() -> Histogram:
    return Histogram(BATCH_BOUNDS_BYTES)


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
    # Each appended batch's size in bytes (headers included), once per batch.
    batch_bytes: Histogram = field(default_factory=batch_histogram)
    # Each flush's time in fdatasync (a worker thread), failed ones included.
    flush_durations: Histogram = field(default_factory=latency_histogram)

    @property
    def flush_seconds(self) -> float:
        """Time spent in fdatasync, in total."""
        return self.flush_durations.sum


@dataclass(slots=True)
class ApiStats:
    """One API of one protocol: requests served, how many were answered with an error, and
    how long each took from being read to its answer being sent (``Session``)."""

    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=latency_histogram)


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
