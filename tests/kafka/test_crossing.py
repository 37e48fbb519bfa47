"""Topics are shared: records cross between Kafka's clients and Sluice's, both ways, byte for
byte -- keys, values, headers, timestamps."""

from __future__ import annotations

import json
import time
import warnings

from confluent_kafka import Consumer, TopicPartition
from sluice.client.sync import Admin
from sluice.client.sync import Consumer as SluiceConsumer
from sluice.client.sync import Producer as SluiceProducer

from tests.kafka.conftest import WAIT_S, kcat, kcat_json_records, needs_kcat, sluice

with warnings.catch_warnings():  # kafka-python loads its schemas with a deprecated call
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer


def create(broker, name: str, partitions: int = 1) -> None:
    with Admin(broker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions)


@needs_kcat
def test_kcat_writes_what_sluice_tail_reads_and_the_other_way_round(broker):
    create(broker, "from-kcat")
    kcat(broker, "-P", "-t", "from-kcat", "-K:", "-H", "via=kcat",
         input=b"alice:paid\nbob:refunded \xc3\xa9\n")
    tailed = sluice(broker, "tail", "from-kcat", "--from-beginning", "--format", "json").stdout
    records = [json.loads(line) for line in tailed.splitlines()]
    assert [(r["key"], r["value"], r["headers"]) for r in records] == [
        ("alice", "paid", [["via", "kcat"]]), ("bob", "refunded \u00e9", [["via", "kcat"]])]

    create(broker, "from-sluice")
    sluice(broker, "produce", "from-sluice", "--key-separator", ":", "--header", "via=sluice",
           input=b"carol:shipped\ndave:lost\n")
    read = kcat_json_records(kcat(broker, "-C", "-t", "from-sluice", "-e", "-J").stdout)
    assert [(r["key"], r["payload"], r["headers"], r["offset"]) for r in read] == [
        ("carol", "shipped", ["via", "sluice"], 0), ("dave", "lost", ["via", "sluice"], 1)]


def test_kafka_python_to_sluice_and_sluice_to_confluent_kafka(broker):
    create(broker, "k2s", 2)
    producer = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all")
    try:
        for i in range(100):
            producer.send("k2s", key=b"k%d" % i, value=b"v%d" % i, headers=[("i", b"%d" % i)],
                          timestamp_ms=1_700_000_000_000 + i)
        producer.flush(timeout=WAIT_S)
    finally:
        producer.close(timeout=WAIT_S)
    with SluiceConsumer(broker.bootstrap, topics=["k2s"], auto_offset_reset="earliest") as c:
        got = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < 100:
            assert time.monotonic() < deadline, len(got)
            got += c.poll(timeout=1.0)
    assert sorted((r.key, r.value, r.headers, r.timestamp) for r in got) == sorted(
        (b"k%d" % i, b"v%d" % i, [("i", b"%d" % i)], 1_700_000_000_000 + i) for i in range(100))

    create(broker, "s2k")
    with SluiceProducer(broker.bootstrap, acks="all") as producer:
        for i in range(100):
            producer.send("s2k", b"v%d" % i, key=b"k%d" % i, headers=[("i", b"%d" % i)])
        producer.flush()
    consumer = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("s2k", 0, 0)])
        messages = []
        deadline = time.monotonic() + WAIT_S
        while len(messages) < 100:
            assert time.monotonic() < deadline, len(messages)
            messages += [m for m in consumer.consume(num_messages=100, timeout=1.0)
                         if m.error() is None]
    finally:
        consumer.close()
    assert [(m.offset(), m.key(), m.value(), m.headers()) for m in messages] == [
        (i, b"k%d" % i, b"v%d" % i, [("i", b"%d" % i)]) for i in range(100)]
