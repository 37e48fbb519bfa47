"""Producer batching: records in, one valid record batch per partition out; sequencing/retries."""

import pytest
from sluice.client.accumulator import Accumulator
from sluice.client.errors import ConnectionLostError
from sluice.client.producer import Producer as AsyncProducer
from sluice.client.records import decode_batches
from sluice.client.sender import SendState
from sluice.client.sync import Producer as SyncProducer
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, validate_batch
from sluice.protocol.errors import (
    OutOfOrderSequenceError,
    RecordTooLargeError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)


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


@pytest.mark.parametrize(("name", "codec"), [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)])
async def test_producers_compress_each_batch_with_the_codec_asked_for(name, codec):
    for producer in (AsyncProducer(compression=name), SyncProducer(compression=name)):
        acc = producer._acc
        acc.append("t", 0, b"k", b"v" * 500, [("h", b"x")], 1000)
        acc.append_values("t", 0, [b"w" * 500] * 3, 1001)
        acc.seal_all()
        data = acc.ready[("t", 0)][0].encode()
        header = validate_batch(data)
        assert header.attributes == codec and header.size < 500
        assert [(r.key, r.value, r.timestamp) for r in decode_records(data)] == [
            (b"k", b"v" * 500, 1000), *[(None, b"w" * 500, 1001)] * 3
        ]


def test_an_unknown_compression_is_refused_at_construction():
    for producer in (AsyncProducer, SyncProducer):
        with pytest.raises(ValueError, match="compression must be one of none, gzip, snappy"):
            producer(compression="brotli")


def test_backwards_timestamps_are_negative_deltas_from_the_first():
    acc, _, _ = make()
    acc.append("t", 0, None, b"a", None, 1000)
    acc.append("t", 0, None, b"b", None, 900)
    acc.seal_all()
    data = acc.ready[("t", 0)][0].encode()
    header = validate_batch(data)
    assert (header.base_timestamp, header.max_timestamp) == (1000, 1000)  # Kafka's rule
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


def error_answer(batches, error):
    return m.ProduceResponse(partitions=[m.ProducePartitionResult(
        topic=b.topic, partition=b.partition, error=error.code, message="from the broker")
        for b in batches])


OLD_ID, NEW_ID = "a" * 32, "b" * 32


def test_a_recreated_topic_gets_new_sequences_and_what_went_to_the_old_one_fails():
    acc, _, _ = make(batch_bytes=40)
    state = sender(acc)
    state.reset_topic("t", OLD_ID, 2)
    for partition in (0, 0, 0, 1):
        acc.append("t", partition, None, b"x" * 20, None, 1)
    acc.seal_all()
    first, second = state.next_request(0)[1], state.next_request(0)[1]
    assert [(b.partition, b.base_sequence, b.topic_id) for b in first] == [(0, 0, OLD_ID), (1, 0, OLD_ID)]
    state.on_failure(second, ConnectionLostError("cut"))  # will be retried ... to the old topic
    state.on_response(first, error_answer(first, UnknownTopicIdError))
    assert state.stale_topics == {"t"}
    assert state.next_request(0) is None  # held back until fresh metadata
    acc.append("t", 0, None, b"new", None, 2)
    acc.append("t", 1, None, b"new", None, 2)
    acc.seal_all()
    state.reset_topic("t", NEW_ID, 1)  # recreated, with one partition
    assert isinstance(second[0].error, UnknownTopicIdError) and "in flight" in str(second[0].error)
    assert all(isinstance(b.error, UnknownTopicIdError) for b in first)
    gone = [b for b in state.completed if b.values == [b"new"] and b.partition == 1]
    assert isinstance(gone[0].error, UnknownTopicOrPartitionError)
    assert "1 partition" in str(gone[0].error)
    request, batches = state.next_request(0)
    assert [(b.partition, b.base_sequence, b.topic_id) for b in batches] == [(0, 0, NEW_ID)]
    assert request.partitions[0].topic_id == NEW_ID
    assert validate_batch(batches[0].data).base_sequence == 0


def test_an_answer_from_the_old_topic_after_the_reset_touches_nothing_of_the_new_one():
    acc, _, _ = make(batch_bytes=40)
    state = sender(acc)
    state.reset_topic("t", OLD_ID, 1)
    acc.append("t", 0, None, b"x" * 20, None, 1)
    acc.seal_all()
    old = state.next_request(0)[1]
    state.reset_topic("t", NEW_ID, 1)  # learned elsewhere (e.g. by a send) first
    acc.append("t", 0, None, b"x" * 20, None, 1)
    acc.seal_all()
    new = state.next_request(0)[1]
    assert (new[0].base_sequence, new[0].topic_id) == (0, NEW_ID)
    state.on_response(old, error_answer(old, OutOfOrderSequenceError))
    assert isinstance(old[0].error, UnknownTopicIdError)
    assert not state.retrying and not state.stale_topics and not state.epoch_due
    state.on_response(new, ok(new))
    assert new[0].error is None and state.next_sequence[("t", 0)] == 1


def test_a_deleted_topic_fails_what_is_queued_for_it_and_the_same_topic_changes_nothing():
    acc, _, _ = make(batch_bytes=40)
    state = sender(acc)
    state.reset_topic("t", OLD_ID, 1)
    acc.append("t", 0, None, b"x", None, 1)
    acc.seal_all()
    state.stale_topics.add("t")
    state.reset_topic("t", OLD_ID, 1)  # same incarnation: just sends again
    assert not state.stale_topics and state.next_request(0) is not None
    acc.append("t", 0, None, b"y", None, 1)
    state.reset_topic("t", None)
    [failed] = [b for b in state.completed if b.values == [b"y"]]
    assert isinstance(failed.error, UnknownTopicOrPartitionError) and "deleted" in str(failed.error)


# -- topic incarnations and producer epochs together ------------------------------------------


def add_batch(acc, partition=0, value=b"x" * 20):
    batch, _ = acc.append("t", partition, None, value, None, 1)
    acc.seal(batch)
    return batch


def test_what_dies_with_a_deleted_topic_makes_no_new_epoch():
    """A numbered batch sent to an incarnation deleted since fails, and its sequence numbers
    died with the old log: no new epoch (which would fail pending batches elsewhere whose
    outcome is unknown), and the new topic starts at 0 in the same epoch."""
    acc, clock, _ = make(batch_bytes=40)
    state = sender(acc)
    state.reset_topic("t", OLD_ID, 1)
    state.reset_topic("u", OLD_ID, 1)
    elsewhere, _ = acc.append("u", 0, None, b"u" * 20, None, 1)
    acc.seal(elsewhere)
    old_t = [add_batch(acc), add_batch(acc)]
    _, first = state.next_request(0)
    _, second = state.next_request(0)
    assert first == [elsewhere, old_t[0]] and second == [old_t[1]]
    state.on_failure(first, ConnectionLostError("cut"))  # outcome unknown: both to be retried
    state.reset_topic("t", NEW_ID, 1)  # t recreated, learned by a send
    state.on_response(second, error_answer(second, UnknownTopicIdError))
    clock.now = 5.0
    assert all(isinstance(b.error, UnknownTopicIdError) for b in old_t)
    assert not state.epoch_due and not state.held_holes
    new = add_batch(acc)
    _, batches = state.next_request(5.0)
    assert {(b.topic, b.base_sequence) for b in batches} == {("t", 0), ("u", 0)}
    assert elsewhere in batches and not elsewhere.done  # resent in its epoch, not failed
    assert validate_batch(new.data).producer_epoch == 0


def test_a_batch_in_flight_to_a_deleted_topic_that_expires_makes_no_new_epoch():
    acc, clock, _ = make(batch_bytes=40)
    state = SendState(acc, acks=1, idempotent=True, retries=10, delivery_timeout_s=1.0,
                      request_timeout_ms=1000)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=5, producer_epoch=0))
    state.reset_topic("t", OLD_ID, 1)
    add_batch(acc)
    _, old = state.next_request(0)
    state.reset_topic("t", NEW_ID, 1)
    clock.now = 2.0
    state.expire(2.0)
    assert old[0].done and not state.epoch_due


def test_a_hole_left_while_the_topic_is_stale_makes_a_new_epoch_only_for_the_same_topic():
    for topic_id, epoch_due in ((OLD_ID, True), (NEW_ID, False)):
        acc, clock, _ = make(batch_bytes=40)
        state = sender(acc)
        state.reset_topic("t", OLD_ID, 1)
        add_batch(acc)
        _, first = state.next_request(0)
        add_batch(acc)
        _, follower = state.next_request(0)
        state.on_response(first, error_answer(first, OutOfOrderSequenceError))
        # explained by a recreate, or not: the metadata will say
        assert state.stale_topics == {"t"} and not state.epoch_due
        state.on_response(follower, error_answer(follower, OutOfOrderSequenceError))
        assert not follower[0].done  # refused only for coming after the hole: kept
        state.reset_topic("t", topic_id, 1)
        assert state.epoch_due is epoch_due and not state.held_holes
        if epoch_due:  # the same log: the follower is renumbered in the new epoch
            assert state.next_request(1.0) is None
            state.on_producer_id(m.InitProducerIdResponse(producer_id=5, producer_epoch=1))
            _, [resent] = state.next_request(1.0)
            assert resent is follower[0]
            header = validate_batch(resent.data)
            assert (header.producer_epoch, header.base_sequence) == (1, 0)
        else:  # sent to the old topic: never resent to the new one
            assert isinstance(follower[0].error, UnknownTopicIdError)
            new = add_batch(acc)
            state.next_request(1.0)
            header = validate_batch(new.data)
            assert (header.producer_epoch, header.base_sequence) == (0, 0)


def test_a_batch_renumbered_in_a_new_epoch_keeps_its_topic_incarnation():
    acc, _, _ = make(batch_bytes=40)
    state = sender(acc)
    state.reset_topic("t", OLD_ID, 1)
    state.reset_topic("u", OLD_ID, 1)
    refused = add_batch(acc)
    _, first = state.next_request(0)
    follower = add_batch(acc)
    _, second = state.next_request(0)
    state.on_response(first, error_answer(first, RecordTooLargeError))  # u is fine: an epoch
    state.on_response(second, error_answer(second, OutOfOrderSequenceError))
    assert state.epoch_due and not follower.done and refused.done
    state.held_holes.add("u")  # (a stale topic's pending verdict: moot in a new epoch)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=5, producer_epoch=1))
    assert not state.held_holes
    assert follower.base_sequence == -1 and follower.topic_id == OLD_ID
    state.reset_topic("t", NEW_ID, 1)  # recreated before the renumbered batch went again
    assert isinstance(follower.error, UnknownTopicIdError)
    assert state.next_request(0) is None
