"""Producer batching: records in, one valid record batch per partition out; sequencing/retries."""

import pytest
from sluice.client.accumulator import Accumulator
from sluice.client.errors import ConnectionLostError
from sluice.client.records import decode_batches
from sluice.client.sender import SendState
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, validate_batch
from sluice.protocol.errors import OutOfOrderSequenceError


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def make(batch_bytes=1000):
    clock = Clock()
    sealed = []
    return Accumulator(batch_bytes, clock, sealed.append), clock, sealed


def test_records_become_one_valid_batch_per_partition():
    acc, _, _ = make()
    acc.append("t", 0, b"k", b"v1", [("h", b"x")], 1000)
    acc.append("t", 0, None, None, None, 1005)
    acc.append("t", 1, None, b"other", None, 1002)
    acc.seal_all()
    first = acc.ready[("t", 0)][0].encode()
    header = validate_batch(first)
    assert (header.record_count, header.base_timestamp, header.max_timestamp) == (2, 1000, 1005)
    assert (header.producer_id, header.base_sequence) == (-1, -1)
    records = decode_records(first)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in records] == [
        (b"k", b"v1", [("h", b"x")], 1000),
        (None, None, [], 1005),
    ]


def test_backwards_timestamps_rebase_to_the_smallest():
    acc, _, _ = make()
    acc.append("t", 0, None, b"a", None, 1000)
    acc.append("t", 0, None, b"b", None, 900)
    acc.seal_all()
    data = acc.ready[("t", 0)][0].encode()
    assert validate_batch(data).base_timestamp == 900
    assert [r.timestamp for r in decode_records(data)] == [1000, 900]


def test_a_full_batch_is_sealed_and_memory_is_accounted():
    acc, _, sealed = make(batch_bytes=100)
    for i in range(10):
        acc.append("t", 0, None, b"x" * 30, None, i)
    assert len(sealed) == 4 and all(len(b) == 2 for b in sealed)
    assert acc.incomplete == 5
    pending = acc.pending_bytes
    acc.finish(sealed[0], 0)
    assert acc.pending_bytes == pending - sealed[0].size and acc.incomplete == 4


def test_bulk_values_fill_batches_up_to_the_limit():
    acc, _, sealed = make(batch_bytes=1000)
    segments = acc.append_values("t", 0, [b"y" * 84] * 50, 5)
    assert sum(count for _, _, count in segments) == 50
    acc.seal_all()
    batches = list(acc.ready[("t", 0)])
    assert all(b.size <= 1000 for b in batches) and len(batches) == 5
    values = [r.value for b in batches for r in decode_batches("t", 0, b.encode(), 0)]
    assert values == [b"y" * 84] * 50


def test_linger_seals_only_batches_old_enough():
    acc, clock, sealed = make()
    acc.append("t", 0, None, b"a", None, 1)
    clock.now = 0.004
    acc.append("t", 1, None, b"b", None, 1)
    assert acc.seal_expired(0.005, 0.005) == pytest.approx(0.009)
    assert [b.partition for b in sealed] == [0]


def test_a_lingered_batch_waits_while_its_partition_has_a_request_in_flight():
    acc, clock, sealed = make(batch_bytes=100)
    busy = {("t", 0): ["a batch on the wire"], ("t", 1): []}
    acc.append("t", 0, None, b"a", None, 1)
    acc.append("t", 1, None, b"b", None, 1)
    clock.now = 0.01
    # partition 0 keeps collecting (no deadline: the answer wakes the sender); 1 goes now
    assert acc.seal_expired(0.01, 0.0, busy) is None
    assert [b.partition for b in sealed] == [1]
    while len(sealed) == 1:  # a full batch is sealed on append whatever is in flight
        acc.append("t", 0, None, b"x" * 30, None, 3)
    assert sealed[1].partition == 0 and sealed[1].values[0] == b"a"
    assert acc.seal_expired(0.02, 0.0, busy) is None and len(sealed) == 2
    busy[("t", 0)] = []  # answered: the rest goes at once
    acc.seal_expired(0.02, 0.0, busy)
    assert len(sealed) == 3 and sealed[2].values == [b"x" * 30] and not acc.open


def sender(acc):
    state = SendState(acc, acks=1, idempotent=True, retries=10, delivery_timeout_s=60,
                      request_timeout_ms=1000)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=5, producer_epoch=0))
    return state


def ok(batches, base=0):
    return m.ProduceResponse(partitions=[
        m.ProducePartitionResult(topic=b.topic, partition=b.partition, base_offset=base)
        for b in batches
    ])


def test_one_batch_per_partition_per_request_with_sequences():
    acc, _, _ = make(batch_bytes=40)
    for _ in range(4):
        acc.append("t", 0, None, b"x" * 20, None, 1)
    acc.seal_all()
    state = sender(acc)
    _, first = state.next_request(0)
    _, second = state.next_request(0)
    assert len(first) == len(second) == 1
    assert (first[0].base_sequence, second[0].base_sequence) == (0, 1)


def test_retry_resends_the_same_bytes_in_order_after_connection_loss():
    acc, clock, _ = make(batch_bytes=40)
    for _ in range(3):
        acc.append("t", 0, None, b"x" * 20, None, 1)
    acc.seal_all()
    state = sender(acc)
    sent = [state.next_request(0)[1] for _ in range(3)]
    data = [b[0].data for b in sent]
    lost = ConnectionLostError("gone")
    state.on_failure(sent[0], lost)
    assert state.next_request(0) is None  # muted until every batch in flight has answered
    state.on_failure(sent[1], lost)
    state.on_response(sent[2], m.ProduceResponse(partitions=[m.ProducePartitionResult(
        topic="t", partition=0, error=OutOfOrderSequenceError.code)]))
    clock.now = state.wake_time()  # after the backoff
    resent = [state.next_request(clock.now)[1][0] for _ in range(3)]
    assert [b.data for b in resent] == data
    assert [b.base_sequence for b in resent] == [0, 1, 2]
