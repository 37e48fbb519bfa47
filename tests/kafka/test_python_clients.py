"""kafka-python and confluent-kafka against the Kafka listener: an ``acks=all`` producer, and a
group consumer that commits, stops, and a new one that resumes exactly where it left off --
its group visible, with its lag, in ``sluice groups``."""

from __future__ import annotations

import time
import warnings

from sluice.client.sync import Admin
from sluice.protocol.batch import iter_batches, parse_header

from tests.kafka.conftest import GROUP_SETTINGS, WAIT_S, sluice

with warnings.catch_warnings():  # kafka-python loads its schemas with a deprecated call
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer

from confluent_kafka import Consumer, Producer

RECORDS = 3_000


def create(broker, name: str, partitions: int) -> None:
    with Admin(broker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions)


def expected(i: int) -> tuple[bytes, bytes, bytes]:
    return b"key%d" % (i % 13), b"value %d" % i, b"%d" % i


def producer_ids(broker, topic: str) -> set[int]:
    """The producer id of every batch stored for ``topic`` (-1: not idempotent)."""
    return {parse_header(batch).producer_id
            for path in broker.data_dir.glob(f"{topic}-*/*.log")
            for batch in iter_batches(memoryview(path.read_bytes()))}


def check_resumed(first: list[tuple], second: list[tuple]) -> None:
    """Two consumers of one group, one after the other: every record exactly once."""
    keys = [(key, value, headers) for key, value, headers in first + second]
    assert len(keys) == RECORDS and set(keys) == {expected(i) for i in range(RECORDS)}


# -- kafka-python ----------------------------------------------------------------------------


def kafka_python_consume(broker, topic: str, group: str, count: int) -> list[tuple]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker.kafka_bootstrap, group_id=group,
        auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=250,
        session_timeout_ms=6000, heartbeat_interval_ms=300,
    )
    got: list[tuple] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"got {len(got)} of {count} records"
            for records in consumer.poll(timeout_ms=1000, max_records=count - len(got)).values():
                got += [(r.key, r.value, dict(r.headers)["n"]) for r in records]
        consumer.commit()
    finally:
        consumer.close()
    return got


def test_kafka_python_producer_and_a_consumer_group_that_resumes(broker):
    create(broker, "py-kp", 3)
    producer = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = []
        for i in range(RECORDS):
            key, value, n = expected(i)
            futures.append(producer.send("py-kp", key=key, value=value, headers=[("n", n)]))
        producer.flush(timeout=WAIT_S)
        offsets = [f.get(timeout=WAIT_S) for f in futures]
    finally:
        producer.close(timeout=WAIT_S)
    assert len({(o.partition, o.offset) for o in offsets}) == RECORDS

    first = kafka_python_consume(broker, "py-kp", "py-kp-group", RECORDS // 3)
    second = kafka_python_consume(broker, "py-kp", "py-kp-group", RECORDS - len(first))
    check_resumed(first, second)
    listed = sluice(broker, "groups", "list").stdout.decode().splitlines()
    assert listed[1].split() == ["py-kp-group", "classic", "empty", "0"]
    described = sluice(broker, "groups", "describe", "py-kp-group").stdout.decode()
    assert "total lag 0" in described


# -- confluent-kafka (librdkafka) ----------------------------------------------------------


def confluent_consume(broker, topic: str, group: str, count: int) -> list[tuple]:
    consumer = Consumer({
        "bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False, **GROUP_SETTINGS,
    })
    got: list[tuple] = []
    deadline = time.monotonic() + WAIT_S
    try:
        consumer.subscribe([topic])
        while len(got) < count:
            assert time.monotonic() < deadline, f"got {len(got)} of {count} records"
            for message in consumer.consume(num_messages=count - len(got), timeout=1.0):
                assert message.error() is None, message.error()
                got.append((message.key(), message.value(), dict(message.headers())["n"]))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_confluent_kafka_producer_and_a_consumer_group_that_resumes(broker):
    create(broker, "py-ck", 3)
    producer = Producer({"bootstrap.servers": broker.kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "compression.type": "lz4"})
    delivered = []

    def on_delivery(error, message):
        assert error is None, error
        delivered.append((message.partition(), message.offset()))

    for i in range(RECORDS):
        key, value, n = expected(i)
        producer.produce("py-ck", key=key, value=value, headers=[("n", n)],
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0
    assert len(set(delivered)) == RECORDS
    assert -1 not in producer_ids(broker, "py-ck")  # idempotent: every batch has its id

    first = confluent_consume(broker, "py-ck", "py-ck-group", RECORDS // 3)
    second = confluent_consume(broker, "py-ck", "py-ck-group", RECORDS - len(first))
    check_resumed(first, second)
    described = sluice(broker, "groups", "describe", "py-ck-group").stdout.decode()
    assert "total lag 0" in described and "state=empty" in described
