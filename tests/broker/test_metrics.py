"""``/metrics``: scraped while clients produce and consume, the values move by the right
amounts, counters never go back, and the output parses with Prometheus's own parser."""

from __future__ import annotations

import os
from itertools import accumulate

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from sluice.broker.config import BrokerConfig
from sluice.broker.io import pagecache
from sluice.broker.web.metrics import METRICS, collect, metric_table, render
from sluice.broker.web.view import BrokerView
from sluice.client import Admin, Consumer, Producer
from sluice.protocol import messages as m

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce
from tests.broker.http_helpers import HttpClient

RECORDS = 300


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)


def http_port(handle) -> int:
    return int(handle.http.rsplit(":", 1)[1])


class Scrape:
    """One parsed exposition: ``value(name, **labels)``, the families by name."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values() for sample in family.samples
        }

    def value(self, name: str, **labels) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def counters(self) -> dict:
        return {key: value for key, value in self.samples.items()
                if key[0].endswith(("_total", "_count", "_sum", "_bucket"))}


async def scrape(port: int) -> Scrape:
    async with await HttpClient.connect(port) as web:
        reply = await web.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(reply.body.decode())


async def test_metrics_move_by_the_right_amounts_while_producing_and_consuming(broker):
    port = http_port(broker)
    bootstrap = f"127.0.0.1:{broker.port}"
    async with Admin(bootstrap) as admin:
        await admin.create_topic("orders", 2)
    before = await scrape(port)
    scrapes = []
    done = trio.Event()

    async def scrape_until_done() -> None:
        async with await HttpClient.connect(port) as web:  # one keep-alive connection
            while not done.is_set():
                scrapes.append(Scrape((await web.get("/metrics")).body.decode()))
                await trio.sleep(0.01)  # a scraper's interval, not synchronisation

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scrape_until_done)
            async with Producer(bootstrap, linger_ms=1) as producer:
                for i in range(RECORDS):
                    await producer.send("orders", b"value-%d" % i, partition=i % 2)
                await producer.flush()
            seen = 0
            async with Consumer(bootstrap, group_id="billing", topics=["orders"],
                                auto_offset_reset="earliest", auto_commit=False) as consumer:
                async for batch in consumer.batches():
                    seen += len(batch)
                    if seen == RECORDS:
                        break
                await consumer.commit({("orders", 0): 100, ("orders", 1): 150})
            done.set()
    after = await scrape(port)

    assert scrapes  # at least one taken while the clients ran
    for earlier, later in zip([before, *scrapes], [*scrapes, after], strict=True):  # only grow
        grown = later.counters()
        assert all(grown.get(key, 0) >= value for key, value in earlier.counters().items())
    for index in (0, 1):
        part = {"topic": "orders", "partition": str(index)}
        produced = after.value("sluice_produced_records_total", **part)
        assert produced - before.value("sluice_produced_records_total", **part) == RECORDS // 2
        assert after.value("sluice_log_end_offset", **part) == RECORDS // 2
        size = after.value("sluice_log_size_bytes", **part)
        assert after.value("sluice_produced_bytes_total", **part) == size > 0
        assert after.value("sluice_log_segments", **part) == 1
        assert after.value("sluice_fetched_records_total", **part) == RECORDS // 2
        assert after.value("sluice_fetched_bytes_total", **part) == size
        assert after.value("sluice_produced_batches_total", **part) >= 1
    batches = sum(after.value("sluice_produced_batches_total", topic="orders", partition=str(i))
                  for i in (0, 1))
    assert after.value("sluice_produce_batch_size_bytes_count", topic="orders") == batches
    total_bytes = sum(after.value("sluice_log_size_bytes", topic="orders", partition=str(i))
                      for i in (0, 1))
    assert after.value("sluice_produce_batch_size_bytes_sum", topic="orders") == total_bytes
    assert after.value("sluice_produce_batch_size_bytes_bucket", topic="orders", le="+Inf") == batches

    group = {"group": "billing", "topic": "orders"}
    assert after.value("sluice_consumer_group_committed_offset", **group, partition="0") == 100
    assert after.value("sluice_consumer_group_lag_records", **group, partition="0") == 50
    assert after.value("sluice_consumer_group_lag_records", **group, partition="1") == 0
    assert after.value("sluice_consumer_group_members", group="billing") == 0  # it left

    produce_api = {"protocol": "sluice", "api": "produce"}
    requests = after.value("sluice_requests_total", **produce_api)
    assert requests >= 1
    assert after.value("sluice_request_duration_seconds_count", **produce_api) == requests
    assert after.value("sluice_request_duration_seconds_sum", **produce_api) > 0


async def test_request_counts_and_latencies_per_api_and_connections(broker, client):
    await create_topic(client, "t")
    async with await HttpClient.connect(http_port(broker)) as web:  # one scraping connection
        before = Scrape((await web.get("/metrics")).body.decode())
        for _ in range(3):
            await client.request(m.MetadataRequest(topics=["t"]))
        refused = await client.request(m.CommitOffsetsRequest(
            group_id="", member_id="", member_epoch=-1, offsets=[]))
        assert refused.error
        async with await RawClient.connect(broker.port) as second:
            await second.request(m.MetadataRequest(topics=[]))  # answered: admitted
            after = Scrape((await web.get("/metrics")).body.decode())
    metadata = {"protocol": "sluice", "api": "metadata"}
    commit = {"protocol": "sluice", "api": "commit_offsets"}
    assert after.value("sluice_requests_total", **metadata) - before.value(
        "sluice_requests_total", **metadata) == 4
    assert after.value("sluice_request_duration_seconds_count", **metadata) == after.value(
        "sluice_requests_total", **metadata)
    assert (after.value("sluice_requests_total", **commit),
            after.value("sluice_request_errors_total", **commit)) == (1, 1)
    # the raw client and the scraper, then the second client too
    assert (before.value("sluice_connections"), after.value("sluice_connections")) == (2, 3)


async def test_flushes_and_fsync_latency(broker, client):
    port = http_port(broker)
    await create_topic(client, "durable")
    for _ in range(4):
        assert (await produce(client, "durable", make_batch([b"x"]), acks=-1)).partitions[0].error == 0
    after = await scrape(port)
    flushes = after.value("sluice_log_flush_duration_seconds_count", topic="durable")
    assert flushes == broker.broker.topics.partition("durable", 0).stats.flushes >= 1
    assert after.value("sluice_log_flush_duration_seconds_sum", topic="durable") > 0
    assert after.value("sluice_log_flush_failures_total", topic="durable", partition="0") == 0


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
async def test_cold_reads_are_counted(broker, client, broker_config):
    port = http_port(broker)
    await create_topic(client, "cold")
    batch = make_batch([os.urandom(1000) for _ in range(100)])
    assert (await produce(client, "cold", batch, acks=-1)).partitions[0].error == 0
    [segment] = (broker_config.data_dir / "cold-0").glob("*.log")
    fd = os.open(segment, os.O_RDONLY)
    try:
        for _ in range(100):  # DONTNEED skips pages the kernel holds at that moment
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if pagecache.cached_pages(fd, 0, len(batch)) == 0:
                break
        else:
            pytest.skip("this filesystem keeps pages cached despite DONTNEED")
    finally:
        os.close(fd)
    before = await scrape(port)
    assert (await fetch(client, "cold", 0)).partitions[0].error == 0
    after = await scrape(port)
    assert after.value("sluice_cold_reads_total") - before.value("sluice_cold_reads_total") == 1
    assert after.value("sluice_cold_read_bytes_total") - before.value(
        "sluice_cold_read_bytes_total") == len(batch)


async def test_every_catalogued_metric_is_exposed_with_its_type(broker, client):
    await create_topic(client, "t")
    text = (await scrape(http_port(broker))).families
    for metric in METRICS:
        name = metric.name.removesuffix("_total")
        assert name in text, metric.name
        assert text[name].type == metric.kind
    assert "process_cpu_seconds" in text  # the process's own, from prometheus_client


def test_the_readme_lists_every_metric():
    readme = (__import__("pathlib").Path(__file__).parents[2] / "README.md").read_text()
    assert metric_table() in readme, "README's metric list is stale: paste metric_table()"


class Reference:
    """The same snapshot through prometheus_client's own writer (``generate_latest``)."""

    def __init__(self, samples) -> None:
        self.samples = samples

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for metric in METRICS:
            labels = list(metric.labels)
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name.removesuffix("_total"), metric.help,
                                             labels=labels)
            elif metric.kind == "gauge":
                family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
            else:
                family = HistogramMetricFamily(metric.name, metric.help, labels=labels)
            for values, value in self.samples.get(metric.name, ()):
                if metric.kind == "histogram":
                    bounds = [*map(str, value.bounds), "+Inf"]
                    family.add_metric(list(values), list(zip(bounds, accumulate(value.counts),
                                                             strict=True)), value.sum)
                else:
                    family.add_metric(list(values), value)
            yield family


async def test_the_exposition_reads_back_as_prometheus_client_s_own(broker, client):
    """The text the broker writes parses to exactly the samples prometheus_client's writer
    gives for the same snapshot -- with label values that need escaping."""
    from prometheus_client import CollectorRegistry, generate_latest

    await create_topic(client, "t", 2)
    await produce(client, "t", make_batch([b"x"] * 5), acks=-1)
    for group in ('quote"d', "back\\slash", "new\nline", "plain"):
        committed = await client.request(m.CommitOffsetsRequest(
            group_id=group, member_id="", member_epoch=-1,
            offsets=[m.OffsetCommit(topic="t", partition=0, offset=2)]))
        assert committed.error == 0
    await fetch(client, "t", 0)
    domain = broker.broker
    samples = collect(BrokerView(domain, domain.config, lambda: 1, broker.channels, {}, 0.0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference(samples))
    ours = Scrape(render(samples).decode())
    theirs = Scrape(generate_latest(registry).decode())
    sluice_only = {k: v for k, v in ours.samples.items() if k[0].startswith("sluice_")}
    assert sluice_only == theirs.samples
    assert ours.value("sluice_consumer_group_lag_records", group='quote"d', topic="t",
                      partition="0") == 3
    assert ours.value("sluice_consumer_group_lag_records", group="new\nline", topic="t",
                      partition="0") == 3
    assert any(k[0] == "process_cpu_seconds_total" for k in ours.samples)
