"""``/metrics``: the broker's counters in Prometheus's text format.

Nothing here runs on the data path. The domain and the channels keep plain counters and
histograms, bumped once per request, batch, append, read or flush (``domain.stats``,
``io.channel.ChannelStats``); a scrape reads them -- on the event loop, into plain values
(``collect``: a snapshot, at the cost of a few attribute reads per partition, API and group
offset) -- and formats them in a worker thread with ``prometheus_client`` (``render``), so a
large exposition does not hold the event loop.

``METRICS`` is the catalogue: every metric's name, type, labels and help, in the order they
are exposed. The README's metric list is checked against it (``metric_table``).
Conventions: base units in the names (seconds, bytes), ``_total`` on counters, labels for
what varies (topic, partition, protocol, api, group).
"""

from __future__ import annotations

import importlib.metadata
import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

import trio
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from sluice.broker.domain.stats import Histogram
from sluice.broker.web.http import HttpRequest, HttpResponse
from sluice.broker.web.view import BrokerView
from sluice.protocol.errors import ApiError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PARTITION = ("topic", "partition")
GROUP_OFFSET = ("group", "topic", "partition")
API = ("protocol", "api")


class Metric(NamedTuple):
    """One metric as exposed: ``name`` (counters with their ``_total``), ``kind`` (counter,
    gauge or histogram), its labels, and what it means."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


METRICS = (
    Metric("sluice_broker_info", "gauge", ("broker_id", "version"),
           "Always 1; the labels say which broker this is and its version."),
    Metric("sluice_connections", "gauge", (),
           "Open connections on every listener (the HTTP port's included)."),
    Metric("sluice_offline_partitions", "gauge", (),
           "Partitions refused at startup (corrupt below their flushed point)."),
    Metric("sluice_cold_reads_total", "counter", (),
           "File slices sent to readers whose pages were not in the page cache (read from disk "
           "by a worker thread first)."),
    Metric("sluice_cold_read_bytes_total", "counter", (), "Bytes of those cold slices."),
    Metric("sluice_produced_records_total", "counter", PARTITION,
           "Records appended (from the batch headers)."),
    Metric("sluice_produced_bytes_total", "counter", PARTITION, "Bytes of batches appended."),
    Metric("sluice_produced_batches_total", "counter", PARTITION, "Batches appended."),
    Metric("sluice_duplicate_batches_total", "counter", PARTITION,
           "Batches an idempotent producer sent again, answered without being written again."),
    Metric("sluice_fetched_records_total", "counter", PARTITION,
           "Offsets delivered to readers past the position each asked for."),
    Metric("sluice_fetched_bytes_total", "counter", PARTITION, "Bytes delivered to readers."),
    Metric("sluice_fetches_total", "counter", PARTITION, "Reads that delivered data."),
    Metric("sluice_log_start_offset", "gauge", PARTITION, "The partition's first offset."),
    Metric("sluice_log_end_offset", "gauge", PARTITION,
           "The partition's next offset (its high watermark on one broker)."),
    Metric("sluice_log_size_bytes", "gauge", PARTITION, "Bytes of the partition's segments."),
    Metric("sluice_log_segments", "gauge", PARTITION, "Segments of the partition."),
    Metric("sluice_log_flush_failures_total", "counter", PARTITION, "Flushes (fdatasync) that failed."),
    Metric("sluice_log_flush_duration_seconds", "histogram", ("topic",),
           "Time of each flush (fdatasync, in a worker thread) of the topic's partitions."),
    Metric("sluice_produce_batch_size_bytes", "histogram", ("topic",),
           "Size of each batch appended to the topic's partitions, headers included."),
    Metric("sluice_requests_total", "counter", API, "Requests served."),
    Metric("sluice_request_errors_total", "counter", API, "Requests answered with an error."),
    Metric("sluice_request_duration_seconds", "histogram", API,
           "Time from a request being read to its answer being sent (waits behind earlier "
           "answers on the connection, long polls and fsyncs included)."),
    Metric("sluice_consumer_group_members", "gauge", ("group",), "Members of the group."),
    Metric("sluice_consumer_group_committed_offset", "gauge", GROUP_OFFSET,
           "The group's committed offset (the next record it will read)."),
    Metric("sluice_consumer_group_lag_records", "gauge", GROUP_OFFSET,
           "Records between the group's committed offset and the partition's end."),
)

# A snapshot: metric name -> samples, each (label values, value) -- for histograms the value
# is a ``Histogram`` of its own (a copy or a sum, never the live one).
Samples = dict[str, list[tuple[tuple[str, ...], object]]]


def _version() -> str:
    try:
        return importlib.metadata.version("sluice")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


def collect(view: BrokerView) -> Samples:
    """Every metric's values now (on the event loop: the domain changes under no lock)."""
    broker = view.broker
    out: Samples = defaultdict(list)
    out["sluice_broker_info"].append(((str(broker.broker_id), VERSION), 1))
    out["sluice_connections"].append(((), view.connections()))
    out["sluice_offline_partitions"].append(((), len(broker.store.offline)))
    out["sluice_cold_reads_total"].append(((), view.channels.cold_reads))
    out["sluice_cold_read_bytes_total"].append(((), view.channels.cold_read_bytes))
    flushes: dict[str, Histogram] = {}
    batches: dict[str, Histogram] = {}
    for partition in sorted(broker.topics, key=lambda p: (p.topic, p.index)):
        labels = (partition.topic, str(partition.index))
        stats = partition.stats
        for name, value in (
            ("sluice_produced_records_total", stats.records_in),
            ("sluice_produced_bytes_total", stats.bytes_in),
            ("sluice_produced_batches_total", stats.batches_in),
            ("sluice_duplicate_batches_total", stats.duplicates),
            ("sluice_fetched_records_total", stats.offsets_out),
            ("sluice_fetched_bytes_total", stats.bytes_out),
            ("sluice_fetches_total", stats.fetches),
            ("sluice_log_start_offset", partition.log_start_offset),
            ("sluice_log_end_offset", partition.high_watermark),
            ("sluice_log_size_bytes", partition.size_bytes),
            ("sluice_log_segments", partition.segment_count),
            ("sluice_log_flush_failures_total", stats.flush_failures),
        ):
            out[name].append((labels, value))
        _add(flushes, partition.topic, stats.flush_durations)
        _add(batches, partition.topic, stats.batch_bytes)
    out["sluice_log_flush_duration_seconds"] = [((t,), h) for t, h in flushes.items()]
    out["sluice_produce_batch_size_bytes"] = [((t,), h) for t, h in batches.items()]
    for (protocol, api), stats in sorted(broker.requests.apis.items()):
        if not stats.requests:
            continue
        labels = (protocol, api)
        out["sluice_requests_total"].append((labels, stats.requests))
        out["sluice_request_errors_total"].append((labels, stats.errors))
        out["sluice_request_duration_seconds"].append((labels, _copy(stats.latency)))
    for summary in broker.groups.list_groups():
        out["sluice_consumer_group_members"].append(((summary.group_id,), summary.members))
        try:
            described = broker.groups.describe(summary.group_id)
        except ApiError:  # gone since it was listed
            continue
        for offset in described.offsets:
            if offset.lag < 0:  # the partition is gone
                continue
            labels = (summary.group_id, offset.topic, str(offset.partition))
            out["sluice_consumer_group_committed_offset"].append((labels, offset.offset))
            out["sluice_consumer_group_lag_records"].append((labels, offset.lag))
    return out


def _copy(histogram: Histogram) -> Histogram:
    copy = Histogram(histogram.bounds)
    copy.add(histogram)
    return copy


def _add(totals: dict[str, Histogram], key: str, histogram: Histogram) -> None:
    """Add ``histogram`` into ``totals[key]`` (a fresh one at first)."""
    total = totals.get(key)
    if total is None:
        total = totals[key] = Histogram(histogram.bounds)
    total.add(histogram)


def render(samples: Samples) -> bytes:
    """The exposition of ``samples`` (with the process's own metrics: CPU, memory, open
    files), in Prometheus's text format. Blocking: run it in a worker thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(samples))
    ProcessCollector(registry=registry)
    return generate_latest(registry)


class _Snapshot:
    """A ``prometheus_client`` collector over one snapshot."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples

    def collect(self) -> Iterator:
        for metric in METRICS:
            family = _family(metric)
            for labels, value in self._samples.get(metric.name, ()):
                if metric.kind == "histogram":
                    family.add_metric(list(labels), _buckets(value), value.sum)
                else:
                    family.add_metric(list(labels), value)
            yield family


def _family(metric: Metric):
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name.removesuffix("_total"), metric.help,
                                   labels=metric.labels)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
    return HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)


def _buckets(histogram: Histogram) -> list[tuple[str, int]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    bounds = [*(f"{bound:g}" for bound in histogram.bounds), "+Inf"]
    return list(zip(bounds, itertools.accumulate(histogram.counts), strict=True))


class Metrics:
    """The ``/metrics`` endpoint."""

    def __init__(self, view: BrokerView) -> None:
        self._view = view

    async def scrape(self, request: HttpRequest) -> HttpResponse:
        samples = collect(self._view)
        body = await trio.to_thread.run_sync(render, samples)
        return HttpResponse(200, body, CONTENT_TYPE, (("Cache-Control", "no-store"),))


def metric_table() -> str:
    """The README's metric list (markdown), from ``METRICS``."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in METRICS:
        labels = ", ".join(metric.labels) or "-"
        rows.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(rows)
