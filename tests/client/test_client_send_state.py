"""``SendState`` under failures: sequences never reused (new epoch), backoff, delivery expiry,
encode failures -- the sans-IO rules both producers follow (issue 13, items 1, 4, 5, 6, 9)."""

import math

import pytest
from sluice.client.accumulator import Accumulator
from sluice.client.errors import ConnectionLostError, DeliveryTimeoutError, RequestTimeoutError
from sluice.client.sender import MAX_EPOCH, SendState
from sluice.protocol import messages as m
from sluice.protocol.batch import NO_SEQUENCE, validate_batch
from sluice.protocol.errors import (
    OutOfOrderSequenceError,
    RecordTooLargeError,
    StorageError,
)


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def make_state(acks=1, delivery_timeout_s=60.0, retries=100, batch_bytes=40):
    clock = Clock()
    acc = Accumulator(batch_bytes, clock, lambda batch: None)
    state = SendState(acc, acks=acks, idempotent=True, retries=retries,
                      delivery_timeout_s=delivery_timeout_s, request_timeout_ms=1000,
                      retry_backoff_s=0.1, retry_backoff_max_s=1.0)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=7, producer_epoch=0))
    return state, acc, clock


def add(acc, value=b"x" * 20, partition=0):
    batch, _ = acc.append("t", partition, None, value, None, 1)
    acc.seal(batch)
    return batch


def answer(batches, error=None, base=0):
    return m.ProduceResponse(partitions=[
        m.ProducePartitionResult(topic=b.topic, partition=b.partition, base_offset=base,
                                 error=error.code if error else 0)
        for b in batches
    ])


def header(batch):
    return validate_batch(batch.data)


def test_a_batch_of_unknown_outcome_given_up_makes_later_data_start_a_new_epoch():
    """The reported loss: X's request is lost after X's delivery time; X is failed, but the
    broker may have written it, so Y must never be sent under X's sequence number."""
    state, acc, clock = make_state(delivery_timeout_s=1.5)
    x = add(acc, b"X" * 20)
    _, sent = state.next_request(0)
    clock.now = 2.0
    state.on_failure(sent, ConnectionLostError("cut"))
    assert x.done and isinstance(x.error, ConnectionLostError)
    y = add(acc, b"Y" * 20)
    assert state.next_request(2.0) is None  # nothing goes out in the old epoch
    request = state.producer_id_request(2.0)
    assert request == m.InitProducerIdRequest(producer_id=7, producer_epoch=0)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    _, sent = state.next_request(2.0)
    assert sent == [y]
    assert (header(y).producer_epoch, header(y).base_sequence) == (1, 0)


def test_a_new_epoch_waits_for_every_request_in_flight():
    state, acc, clock = make_state(delivery_timeout_s=1.5)
    add(acc, partition=0)
    add(acc, partition=1)
    _, first = state.next_request(0)
    assert len(first) == 2
    clock.now = 2.0
    state.expire(2.0)  # both expire in flight: given up, their requests still out
    assert all(b.done and isinstance(b.error, DeliveryTimeoutError) for b in first)
    assert "may have been written" in str(first[0].error)
    assert state.epoch_due and state.producer_id_request(2.0) is None
    state.on_response(first, answer(first))  # a late answer: ignored, deliveries stay failed
    assert isinstance(first[0].error, DeliveryTimeoutError)
    assert state.producer_id_request(2.0) is None  # nothing to send yet: no need
    assert state.wake_time() == math.inf
    add(acc)
    assert state.producer_id_request(2.0) is not None


def test_pending_batches_are_renumbered_only_if_no_attempt_can_have_been_written():
    state, acc, clock = make_state()
    a, b, c = add(acc), add(acc), add(acc)
    sent = [state.next_request(0)[1] for _ in range(3)]
    state.on_response(sent[0], answer(sent[0], RecordTooLargeError))  # refused: given up
    state.on_failure(sent[1], ConnectionLostError("cut"))  # b: unknown outcome
    state.on_response(sent[2], answer(sent[2], OutOfOrderSequenceError))  # c: refused
    assert isinstance(a.error, RecordTooLargeError) and not b.done and not c.done
    state.on_producer_id(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    assert isinstance(b.error, ConnectionLostError)  # may be in the log: never sent again
    clock.now = 5.0
    _, resent = state.next_request(5.0)
    assert resent == [c] and (header(c).producer_epoch, header(c).base_sequence) == (1, 0)


def test_an_acks_all_flush_error_leaves_the_outcome_unknown():
    state, acc, _ = make_state(acks=-1, retries=0)
    batch = add(acc)
    _, sent = state.next_request(0)
    state.on_response(sent, answer(sent, StorageError))
    assert batch.maybe_written and state.epoch_due


def test_retries_back_off_exponentially_up_to_the_cap():
    state, acc, clock = make_state(delivery_timeout_s=100)
    batch = add(acc)
    waits = []
    for _ in range(6):
        _, sent = state.next_request(clock.now)
        state.on_response(sent, answer(sent, StorageError))
        assert state.next_request(clock.now) is None  # not before the backoff
        waits.append(round(state.wake_time() - clock.now, 6))
        clock.now = state.wake_time()
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert not batch.done and batch.attempts == 6


def test_a_retry_that_cannot_happen_in_time_fails_with_its_own_error():
    state, acc, clock = make_state(delivery_timeout_s=0.35)
    batch = add(acc)
    for _ in range(3):
        _, sent = state.next_request(clock.now)
        state.on_response(sent, answer(sent, StorageError))
        clock.now = min(state.wake_time(), clock.now + 1)
    assert isinstance(batch.error, StorageError)  # clear, not a bare timeout


def test_expire_fails_open_queued_and_in_flight_batches_and_says_when_to_look_again():
    state, acc, clock = make_state(delivery_timeout_s=10)
    flying = add(acc)
    state.next_request(0)
    clock.now = 4.0
    queued = add(acc, partition=1)
    open_batch, _ = acc.append("t", 2, None, b"o", None, 1)
    assert state.expire(4.0) == 10.0
    assert state.expire(9.0) == 10.0 and not flying.done
    assert state.expire(10.0) == 14.0
    assert isinstance(flying.error, DeliveryTimeoutError) and not queued.done
    state.expire(14.0)
    assert queued.done and open_batch.done and not acc.open and acc.incomplete == 0
    assert state.expire(15.0) == 24.0  # nothing left: a whole timeout from now


class Unpackable:
    def __len__(self):
        return 3


def test_an_encode_failure_fails_only_its_batch_and_takes_no_sequence():
    state, acc, _ = make_state(batch_bytes=1000)
    acc.append("t", 0, None, Unpackable(), None, 1)
    acc.append("t", 1, None, b"fine", None, 1)
    acc.seal_all()
    _, sent = state.next_request(0)
    bad = acc.ready[("t", 0)] or None
    assert [b.partition for b in sent] == [1] and bad is None
    failed = [b for b in state.completed if b.partition == 0][0]
    assert isinstance(failed.error, TypeError) and failed.base_sequence == NO_SEQUENCE
    assert not state.epoch_due and acc.incomplete == 1
    batch, _ = acc.append("t", 0, None, b"next", None, 1)
    acc.seal(batch)
    state.next_request(0)
    assert header(batch).base_sequence == 0


def test_after_giving_up_everything_later_records_go_in_a_new_epoch():
    state, acc, _ = make_state()
    add(acc)
    state.next_request(0)
    add(acc)
    state.fail_all(ConnectionLostError("unreachable"))  # e.g. the reconnect window ran out
    later = add(acc)
    assert state.next_request(0) is None
    state.on_producer_id(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    state.next_request(0)
    assert (header(later).producer_epoch, header(later).base_sequence) == (1, 0)


def test_a_failed_epoch_request_is_asked_again_after_a_backoff():
    state, acc, _ = make_state(retries=0)
    add(acc)
    _, sent = state.next_request(0)
    state.on_failure(sent, RequestTimeoutError("no answer"))
    add(acc)
    assert state.producer_id_request(0) is not None
    state.on_producer_id_failed(0)
    assert state.producer_id_request(0.05) is None and state.wake_time() == pytest.approx(0.1)
    assert state.producer_id_request(0.1) is not None


def test_the_last_epoch_asks_for_a_new_producer_id():
    state, acc, _ = make_state(retries=0)
    state.on_producer_id(m.InitProducerIdResponse(producer_id=7, producer_epoch=MAX_EPOCH))
    add(acc)
    _, sent = state.next_request(0)
    state.on_failure(sent, ConnectionLostError("cut"))
    add(acc)
    assert state.producer_id_request(0) == m.InitProducerIdRequest()


def test_full_or_waiting_for_answers_only_answers_wake_the_driver():
    state, acc, _ = make_state(retries=0)
    add(acc)
    _, first = state.next_request(0)
    add(acc, partition=1)
    _, second = state.next_request(0)
    state.on_failure(first, ConnectionLostError("cut"))
    assert state.epoch_due and state.wake_time() == math.inf
