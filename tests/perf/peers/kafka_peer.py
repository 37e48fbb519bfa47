"""Kafka's clients against Sluice's Kafka listener: confluent-kafka (librdkafka, ``client:
"confluent"``) and kafka-python (pure Python, ``client: "kafka-python"``).

The workload is ``sluice_peer``'s (one partition, 16-byte keys, values numbered by
``make_values``), each client through its usual per-record API: ``produce``/``send`` in a
loop, then ``flush``; ``consume``/``poll`` of whole batches of messages from offset 0. The topic
is made and deleted by Sluice's admin client on the Sluice port (``admin_address``), outside the
timed section.
"""

from __future__ import annotations

import time
import warnings

from sluice.client.sync import Admin

from peers.common import Timer, check_sequence, make_key, make_values, seq_of, throughput

# Messages asked for per consume/poll call (never more than are left: confluent-kafka's
# ``consume`` waits for as many as it was asked for, up to its timeout).
POLL_RECORDS = 10_000


def _create(p: dict) -> None:
    with Admin(p["admin_address"]) as admin:
        admin.create_topic(p["topic"], partitions=1)


def _delete(p: dict) -> None:
    with Admin(p["admin_address"]) as admin:
        admin.delete_topic(p["topic"])


def _items(p: dict) -> list[tuple[bytes, bytes]]:
    return [(make_key(i), v) for i, v in enumerate(make_values(p["records"], p["value_size"]))]


def _consumed(p: dict, seqs: list[int], timer: Timer) -> dict:
    result = throughput(timer, len(seqs), p["value_size"], **check_sequence(seqs, p["records"]))
    if p.get("delete"):
        _delete(p)
    return result


# -- confluent-kafka (librdkafka) ------------------------------------------------------------


def confluent_produce(p: dict) -> dict:
    from confluent_kafka import Producer

    _create(p)
    items = _items(p)
    producer = Producer({"bootstrap.servers": p["address"], "acks": str(p["acks"]),
                         "linger.ms": p.get("linger_ms", 5), "enable.idempotence": False})
    acked = 0

    def delivered(error, _message) -> None:
        nonlocal acked
        acked += error is None

    topic, produce, poll = p["topic"], producer.produce, producer.poll
    with Timer(p.get("server_pid")) as timer:
        for key, value in items:
            try:
                produce(topic, value, key, on_delivery=delivered)
            except BufferError:  # librdkafka's queue is full: serve deliveries, then again
                poll(0.01)
                produce(topic, value, key, on_delivery=delivered)
        producer.flush(p.get("timeout_s", 120))
    return throughput(timer, p["records"], p["value_size"], acked=acked)


def confluent_consume(p: dict) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    # fetch.queue.backoff.ms: once librdkafka's queue holds queued.min.messages (100,000) it
    # stops fetching and, by default, waits 1 s before it looks again -- a client-side pause
    # that made the broker look ~5x slower at 300,000 records; 10 ms keeps the queue fed.
    consumer = Consumer({"bootstrap.servers": p["address"], "group.id": "bench",
                         "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    consumer.assign([TopicPartition(p["topic"], 0, 0)])
    batches, got, n = [], 0, p["records"]
    deadline = time.monotonic() + p.get("timeout_s", 120)
    try:
        with Timer(p.get("server_pid")) as timer:
            while got < n and time.monotonic() < deadline:
                messages = consumer.consume(num_messages=min(POLL_RECORDS, n - got), timeout=1.0)
                got += len(messages)
                batches.append(messages)
    finally:
        consumer.close()
    seqs = [seq_of(m.value()) for messages in batches for m in messages if m.error() is None]
    return _consumed(p, seqs, timer)


# -- kafka-python -----------------------------------------------------------------------------


def kafka_python():
    with warnings.catch_warnings():  # it loads its schemas with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
    return kafka


def kafka_python_produce(p: dict) -> dict:
    kafka = kafka_python()
    _create(p)
    items = _items(p)
    acks = p["acks"] if p["acks"] == "all" else int(p["acks"])
    producer = kafka.KafkaProducer(bootstrap_servers=p["address"], acks=acks,
                                   linger_ms=p.get("linger_ms", 5))
    topic, send = p["topic"], producer.send
    try:
        with Timer(p.get("server_pid")) as timer:
            futures = [send(topic, value=value, key=key) for key, value in items]
            producer.flush(p.get("timeout_s", 120))
    finally:
        producer.close()
    acked = sum(1 for f in futures if f.succeeded())
    return throughput(timer, p["records"], p["value_size"], acked=acked)


def kafka_python_consume(p: dict) -> dict:
    kafka = kafka_python()
    consumer = kafka.KafkaConsumer(bootstrap_servers=p["address"], enable_auto_commit=False)
    partition = kafka.TopicPartition(p["topic"], 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    batches, got, n = [], 0, p["records"]
    deadline = time.monotonic() + p.get("timeout_s", 120)
    try:
        with Timer(p.get("server_pid")) as timer:
            while got < n and time.monotonic() < deadline:
                polled = consumer.poll(timeout_ms=1000, max_records=min(POLL_RECORDS, n - got))
                for records in polled.values():
                    got += len(records)
                    batches.append(records)
    finally:
        consumer.close()
    seqs = [seq_of(r.value) for records in batches for r in records]
    return _consumed(p, seqs, timer)


ROLES = {
    ("confluent", "produce"): confluent_produce,
    ("confluent", "consume"): confluent_consume,
    ("kafka-python", "produce"): kafka_python_produce,
    ("kafka-python", "consume"): kafka_python_consume,
}


def run(role: str, params: dict) -> dict:
    return ROLES[params["client"], role](params)
