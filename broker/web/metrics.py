"""``/metrics``: the broker's counters in Prometheus's text format.

Nothing here runs on the data path. The domain and the channels keep plain counters and
histograms, bumped once per request, batch, append, read or flush (``domain.stats``,
``io.channel.ChannelStats``); a scrape reads them into plain values (``collect``: a few
attribute reads per partition, API and group offset) and writes the text (``render``), on
the event loop, in about 1 us per sample line.

Why the text is written here and not by prometheus_client's ``generate_latest`` (which the
tests parse it with, and whose ``ProcessCollector`` supplies the process's metrics):
``generate_latest`` (0.26) spends ~9 us per sample line on escaping and validating names.
On a broker of 44 partitions (~1,700 lines, 128 KB) that was ~15 ms of CPU per scrape, held
under the GIL in a worker thread, and scraping every 100 ms cut ``sluice perf produce`` to
0.77 of its throughput (tests/perf/metrics_overhead.py). The format is small and fixed: HELP
and TYPE lines, then ``name{label="value",...} number`` lines with ``\\``, ``"`` and newlines
escaped in label values.

``METRICS`` is the catalogue: every metric's name, type, labels and help, in the order they
are exposed. The README's metric list is checked against it (``metric_table``).
Conventions: base units in the names (seconds, bytes), ``_total`` on counters, labels for
what varies (topic, partition, protocol, api, group).
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import math
from collections import defaultdict
from typing import NamedTuple

from prometheus_client import ProcessCollector
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
    channels = view.channels.values()
    out["sluice_cold_reads_total"].append(((), sum(c.cold_reads for c in channels)))
    out["sluice_cold_read_bytes_total"].append(((), sum(c.cold_read_bytes for c in channels)))
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
    """``samples`` in Prometheus's text format (0.0.4), in ``METRICS``'s order, then the
    process's own metrics (CPU, memory, open files: prometheus_client's ``ProcessCollector``)."""
    out: list[str] = []
    for metric in METRICS:
        _write_metric(out, metric, samples.get(metric.name, ()))
    for family in _PROCESS.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        out.append(f"# HELP {name} {_help(family.documentation)}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            labels = _labels(tuple(sample.labels), tuple(sample.labels.values()))
            out.append(f"{sample.name}{labels} {_number(sample.value)}\n")
    return "".join(out).encode()


_PROCESS = ProcessCollector(registry=None)


def _write_metric(out: list[str], metric: Metric, samples) -> None:
    name = metric.name
    out.append(f"# HELP {name} {_help(metric.help)}\n# TYPE {name} {metric.kind}\n")
    if metric.kind != "histogram":
        for values, value in samples:
            out.append(f"{name}{_labels(metric.labels, values)} {value}\n")
        return
    for values, histogram in samples:
        labels = _labels(metric.labels, values)
        bucket = f"{name}_bucket{labels[:-1]}," if labels else f"{name}_bucket{{"
        for le, count in zip(_le(histogram.bounds), itertools.accumulate(histogram.counts),
                             strict=True):
            out.append(f'{bucket}le="{le}"}} {count}\n')
        out.append(f"{name}_count{labels} {count}\n{name}_sum{labels} {_number(histogram.sum)}\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """``{name="value",...}`` (label values escaped as the format says), or "" for none."""
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@functools.cache
def _le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """A histogram's ``le`` label values: its bounds (shortest exact form), then +Inf."""
    return (*map(repr, bounds), "+Inf")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # the shortest form that reads back exactly; NaN is "nan"


class Metrics:
    """The ``/metrics`` endpoint."""

    def __init__(self, view: BrokerView) -> None:
        self._view = view

    def scrape(self, request: HttpRequest) -> HttpResponse:
        body = render(collect(self._view))
        return HttpResponse(200, body, CONTENT_TYPE, (("Cache-Control", "no-store"),))


def metric_table() -> str:
    """The README's metric list (markdown), from ``METRICS``."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in METRICS:
        labels = ", ".join(metric.labels) or "-"
        rows.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(rows)
