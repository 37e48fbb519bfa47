"""The counters the domain keeps for metrics move by the right amounts: per partition (records
and bytes in from the batch headers, duplicates, data delivered, flushes) and per API."""

from __future__ import annotations

from sluice.protocol import messages as m

from tests.broker.conftest import create_topic, fetch, make_batch, produce


async def test_partition_counters(broker, client):
    await create_topic(client, "t")
    stats = broker.broker.topics.partition("t", 0).stats
    first = make_batch([b"a", b"b", b"c"])
    second = make_batch([b"d"] * 2)
    both = bytes(first) + bytes(second)
    assert (await produce(client, "t", both, acks=-1)).partitions[0].error == 0
    assert (stats.appends, stats.batches_in, stats.records_in, stats.bytes_in) == (1, 2, 5, len(both))
    assert stats.flushes >= 1 and stats.flush_failures == 0 and stats.flush_seconds > 0

    init = await client.request(m.InitProducerIdRequest())
    idempotent = make_batch([b"e"], producer_id=init.producer_id, producer_epoch=0, base_sequence=0)
    for _ in range(2):  # the second is a retry: answered, not written
        assert (await produce(client, "t", bytes(idempotent))).partitions[0].error == 0
    assert (stats.appends, stats.records_in, stats.duplicates) == (2, 6, 1)

    answer = (await fetch(client, "t", 1)).partitions[0]  # from inside the first batch
    assert (stats.fetches, stats.bytes_out, stats.offsets_out) == (
        1, m.records_length(answer.records), 6 - 1)
    await fetch(client, "t", 6)  # nothing there: no data delivered
    assert stats.fetches == 1


async def test_request_counters_per_api(broker, client):
    requests = broker.broker.requests
    await create_topic(client, "t")
    await fetch(client, "t", 0)
    await fetch(client, "missing", 0)  # an error per partition: the request itself is fine
    bad = await client.request(m.DescribeGroupsRequest(groups=["nope"]))
    assert bad.groups[0].error
    refused = await client.request(m.CommitOffsetsRequest(
        group_id="", member_id="", member_epoch=-1, offsets=[]))
    assert refused.error  # answered with an error response
    counts = {api: (s.requests, s.errors) for (protocol, api), s in requests.apis.items()
              if protocol == "sluice" and s.requests}
    assert counts == {"create_topics": (1, 0), "fetch": (2, 0), "describe_groups": (1, 0),
                      "commit_offsets": (1, 1)}


async def test_batch_sizes_and_flush_times_are_histograms(broker, client):
    await create_topic(client, "t")
    stats = broker.broker.topics.partition("t", 0).stats
    small, large = make_batch([b"a"]), make_batch([b"x" * 5000] * 3)
    assert (await produce(client, "t", bytes(small) + bytes(large), acks=-1)).partitions[0].error == 0
    assert (await produce(client, "t", bytes(small))).partitions[0].error == 0
    sizes = stats.batch_bytes
    assert sizes.count == 3 and sizes.sum == 2 * len(small) + len(large)
    # small <= 256 B, 4 KiB < large <= 16 KiB: buckets 0 and 3
    assert len(small) <= 256 and 4096 < len(large) <= 16384
    assert sizes.counts[0] == 2 and sizes.counts[3] == 1
    flushes = stats.flush_durations
    assert flushes.count == stats.flushes >= 1 and flushes.sum == stats.flush_seconds > 0


async def test_request_latency_is_observed_once_per_request_answered_or_not(broker, client):
    requests = broker.broker.requests
    await create_topic(client, "t")
    for _ in range(3):
        await fetch(client, "t", 0)
    await client.send(m.ProduceRequest(acks=0, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=make_batch([b"quiet"]))]))
    await fetch(client, "t", 0)  # answered after the acks=0 produce was served
    fetches = requests.api("sluice", "fetch").latency
    produces = requests.api("sluice", "produce").latency
    assert fetches.count == 4 and fetches.sum > 0
    assert produces.count == 1  # no answer: observed when it was served
    for histogram in (fetches, produces):
        assert sum(histogram.counts) == histogram.count
