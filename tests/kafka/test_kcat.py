"""kcat (librdkafka 2.0 from the system's packages) against the Kafka listener: metadata,
10,000 keyed records with headers through every compression codec and back (from the
beginning and from an offset), and two ``kcat -G`` members sharing a topic."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from sluice.client.sync import Admin
from sluice.protocol import compression
from sluice.protocol.batch import iter_batches, parse_header

from tests.kafka.conftest import KcatMember, kcat, kcat_json_records, needs_kcat, sluice

pytestmark = needs_kcat

RECORDS = 10_000
CODECS = {"none": compression.NONE, "gzip": compression.GZIP, "snappy": compression.SNAPPY,
          "lz4": compression.LZ4, "zstd": compression.ZSTD}


def create(broker, name: str, partitions: int) -> None:
    with Admin(broker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions)


def test_kcat_lists_the_topics_and_their_partitions(broker):
    create(broker, "orders", 3)
    create(broker, "audit", 1)
    listed = json.loads(kcat(broker, "-L", "-J").stdout)
    assert [(b["id"], b["name"]) for b in listed["brokers"]] == [
        (0, f"127.0.0.1:{broker.kafka_port}")]
    topics = {t["topic"]: t["partitions"] for t in listed["topics"]}
    assert sorted(topics) == ["audit", "orders"]  # the offsets topic is internal: not listed
    assert [(p["partition"], p["leader"], p["replicas"], p["isrs"]) for p in topics["orders"]] \
        == [(i, 0, [{"id": 0}], [{"id": 0}]) for i in range(3)]
    one = json.loads(kcat(broker, "-L", "-J", "-t", "audit").stdout)
    assert [t["topic"] for t in one["topics"]] == ["audit"]


def stored_codecs(data_dir: Path, topic: str) -> set[int]:
    """The compression codec of every batch stored for ``topic``, read from its log files."""
    found = set()
    for path in data_dir.glob(f"{topic}-*/*.log"):
        for batch in iter_batches(memoryview(path.read_bytes())):
            found.add(parse_header(batch).attributes & 7)
    return found


@pytest.mark.parametrize("codec", list(CODECS))
def test_kcat_round_trips_keyed_records_with_headers(broker, codec):
    topic = f"kcat-{codec}"
    create(broker, topic, 3)
    lines = b"".join(b"key%05d:value %05d \xe2\x9c\x93\n" % (i % 97, i) for i in range(RECORDS))
    kcat(broker, "-P", "-t", topic, "-K:", "-H", "source=kcat", "-H", "codec=" + codec,
         "-z", codec, "-X", "linger.ms=20", input=lines)
    assert stored_codecs(broker.data_dir, topic) == {CODECS[codec]}  # compressed as asked

    everything = kcat_json_records(kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e",
                                        "-J").stdout)
    assert len(everything) == RECORDS
    sent = [line.split(b":", 1) for line in lines.splitlines()]
    by_key: dict[str, list[str]] = defaultdict(list)
    partition_of: dict[str, int] = {}
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in everything:
        assert record["headers"] == ["source", "kcat", "codec", codec]
        by_key[record["key"]].append(record["payload"])
        assert partition_of.setdefault(record["key"], record["partition"]) == record["partition"]
        by_partition[record["partition"]].append(record["offset"])
    # Every record once; a key's records in one partition, in the order they were sent.
    expected: dict[str, list[str]] = defaultdict(list)
    for key, value in sent:
        expected[key.decode()].append(value.decode())
    assert by_key == expected
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())
    assert len(by_partition) == 3

    # From an offset of one partition: the same records, from there on.
    partition = max(by_partition, key=lambda p: len(by_partition[p]))
    start = len(by_partition[partition]) // 2
    tail = kcat_json_records(kcat(broker, "-C", "-t", topic, "-p", str(partition), "-o",
                                  str(start), "-e", "-J").stdout)
    assert [(r["offset"], r["key"], r["payload"]) for r in tail] == [
        (r["offset"], r["key"], r["payload"]) for r in everything
        if r["partition"] == partition and r["offset"] >= start]


def test_two_kcat_group_members_split_a_topic_and_rebalance_when_one_leaves(broker, tmp_path):
    create(broker, "shared", 4)
    everything = {("shared", p) for p in range(4)}
    a = KcatMember(broker, "pair", ["shared"], tmp_path / "a.log")
    b = None
    try:
        a.wait(lambda m: m.assigned == everything, "the first member to get every partition")
        b = KcatMember(broker, "pair", ["shared"], tmp_path / "b.log")
        b.wait(lambda m: m.assigned, "the second member to get partitions")
        a.wait(lambda m: m.assigned is not None and not m.assigned & b.assigned
               and m.assigned | b.assigned == everything, "the first member to keep the others")
        assert len(a.assigned) == len(b.assigned) == 2
        listed = sluice(broker, "groups", "list").stdout.decode().splitlines()
        assert listed[1].split() == ["pair", "classic", "stable", "2"]

        # Records produced now reach each member on its own partitions only.
        lines = b"".join(b"%d\n" % i for i in range(200))
        kcat(broker, "-P", "-t", "shared", "-p", "-1", input=lines)
        counts = {p: 0 for p in range(4)}
        for record in kcat_json_records(kcat(broker, "-C", "-t", "shared", "-e", "-J").stdout):
            counts[record["partition"]] += 1
        for member in (a, b):
            mine = {p for _, p in member.assigned}
            member.wait(lambda m, mine=mine: len(m.consumed) == sum(counts[p] for p in mine),
                        "every record of its partitions")
            assert {p for p, _ in member.consumed} <= mine

        assert b.stop() == 0  # leaves the group: its partitions go back to a
        a.wait(lambda m: m.assigned == everything, "the first member to get every partition back")
    finally:
        for member in (a, b):
            if member is not None:
                member.stop()
