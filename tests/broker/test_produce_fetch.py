"""Produce and fetch over the wire against an in-process broker."""

from __future__ import annotations

import msgpack
import trio
from sluice.protocol import messages as m
from sluice.protocol.batch import (
    CONTROL,
    HEADER_SIZE,
    TRANSACTIONAL,
    assemble,
    decode_records,
    iter_batches,
)
from sluice.protocol.errors import (
    CorruptRecordError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RecordTooLargeError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce


def values_of(records: bytes | memoryview) -> list[bytes]:
    return [r.value for b in iter_batches(records) for r in decode_records(b)]


async def test_produce_then_fetch_round_trip(client):
    await create_topic(client, "t")
    for acks in (1, -1):
        response = await produce(client, "t", make_batch([b"a", b"b"]), acks=acks)
        assert response.partitions[0].error == 0
    response = await fetch(client, "t", 0)
    part = response.partitions[0]
    assert part.error == 0 and part.high_watermark == 4 and part.log_start_offset == 0
    assert values_of(part.records) == [b"a", b"b", b"a", b"b"]
    offsets = [r.offset for b in iter_batches(part.records) for r in decode_records(b)]
    assert offsets == [0, 1, 2, 3]


async def test_acks_zero_gets_no_response_but_is_appended(client):
    await create_topic(client, "t")
    await produce_no_wait(client, "t", make_batch([b"fire-and-forget"]))
    response = await fetch(client, "t", 0, max_wait_ms=5000)
    assert values_of(response.partitions[0].records) == [b"fire-and-forget"]


async def produce_no_wait(client, topic, batch):
    await client.send(
        m.ProduceRequest(
            acks=0, timeout_ms=1000,
            partitions=[m.ProducePartition(topic=topic, partition=0, records=batch)],
        )
    )


async def test_long_poll_wakes_on_append(broker, client):
    await create_topic(client, "t")
    other = await RawClient.connect(broker.port)
    got = []

    async def poll():
        got.append(await fetch(client, "t", 0, max_wait_ms=30_000))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            await produce(other, "t", make_batch([b"wake"]))
    assert values_of(got[0].partitions[0].records) == [b"wake"]
    await other.aclose()


async def test_long_poll_times_out_empty(client):
    await create_topic(client, "t")
    with trio.fail_after(10):
        response = await fetch(client, "t", 0, max_wait_ms=50)
    part = response.partitions[0]
    assert part.error == 0 and bytes(part.records) == b"" and part.high_watermark == 0


async def test_fetch_out_of_range_reports_bounds(client):
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"x"] * 3))
    for offset in (-1, 4, 10**12):
        part = (await fetch(client, "t", offset)).partitions[0]
        assert part.error == OffsetOutOfRangeError.code
        assert (part.log_start_offset, part.high_watermark) == (0, 3)


async def test_fetch_returns_whole_batch_even_over_max_bytes(client):
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"v" * 5000]))
    part = (await fetch(client, "t", 0, max_bytes=10)).partitions[0]
    assert values_of(part.records) == [b"v" * 5000]


async def test_fetch_from_middle_of_batch_returns_containing_batch(client):
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"0", b"1", b"2"]))
    part = (await fetch(client, "t", 1)).partitions[0]
    assert values_of(part.records) == [b"0", b"1", b"2"]


async def test_unknown_topic_errors(client):
    response = await produce(client, "nope", make_batch([b"x"]))
    assert response.partitions[0].error == UnknownTopicOrPartitionError.code
    assert (await fetch(client, "nope", 0)).partitions[0].error == UnknownTopicOrPartitionError.code
    await create_topic(client, "t")
    response = await produce(client, "t", make_batch([b"x"]), partition=5)
    assert response.partitions[0].error == UnknownTopicOrPartitionError.code


async def test_bad_crc_is_refused_and_nothing_is_written(client):
    await create_topic(client, "t")
    batch = make_batch([b"payload"])
    batch[-1] ^= 0xFF
    response = await produce(client, "t", batch)
    assert response.partitions[0].error == CorruptRecordError.code
    assert "CRC" in response.partitions[0].message
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 0


async def test_an_old_client_batch_is_refused_saying_why(client):
    await create_topic(client, "t")
    old = assemble(msgpack.packb([None, None, [b"x"], None]), record_count=1,
                   base_timestamp=0, max_timestamp=0)
    old[16] = 1  # magic 1: what Sluice clients before record batch v2 send
    response = await produce(client, "t", bytes(old))
    assert response.partitions[0].error == CorruptRecordError.code
    assert "magic 1" in response.partitions[0].message
    assert "upgrade the client" in response.partitions[0].message
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 0


async def test_compressed_batches_are_stored_and_served_as_sent(client):
    await create_topic(client, "t")
    sent = [make_batch([b"v%d" % i] * 50, compression_codec=codec) for i, codec in
            enumerate(range(1, 5))]
    for batch in sent:
        assert (await produce(client, "t", bytes(batch))).partitions[0].error == 0
    served = list(iter_batches((await fetch(client, "t", 0)).partitions[0].records))
    assert [bytes(b[8:]) for b in served] == [bytes(b[8:]) for b in sent]  # but the offsets
    assert values_of(b"".join(served)) == [b"v%d" % i for i in range(4) for _ in range(50)]


async def test_transactional_and_control_batches_are_refused(client):
    await create_topic(client, "t")
    for attributes, needle in ((TRANSACTIONAL, "transactions"), (CONTROL, "control")):
        batch = bytes(make_batch([b"x"]))
        batch = assemble(batch[HEADER_SIZE:], record_count=1, base_timestamp=0,
                         max_timestamp=0, attributes=attributes)
        response = await produce(client, "t", bytes(batch))
        assert response.partitions[0].error == InvalidRequestError.code
        assert needle in response.partitions[0].message
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 0


async def test_trailing_partial_batch_is_refused(client):
    await create_topic(client, "t")
    batch = make_batch([b"one"]) + make_batch([b"two"])[:20]
    response = await produce(client, "t", bytes(batch))
    assert response.partitions[0].error == CorruptRecordError.code
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 0


async def test_batch_over_max_message_bytes_is_refused(client):
    await create_topic(client, "t", max_message_bytes=1024)
    response = await produce(client, "t", make_batch([b"x" * 2000]))
    assert response.partitions[0].error == RecordTooLargeError.code


async def test_list_offsets(client):
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"a", b"b"]))
    response = await client.request(
        m.ListOffsetsRequest(
            partitions=[
                m.ListOffsetsPartition(topic="t", partition=0, timestamp=-2),
                m.ListOffsetsPartition(topic="t", partition=0, timestamp=-1),
                m.ListOffsetsPartition(topic="t", partition=0, timestamp=0),
                m.ListOffsetsPartition(topic="t", partition=0, timestamp=2**62),
            ]
        )
    )
    assert [p.offset for p in response.partitions] == [0, 2, 0, -1]


async def test_idempotent_duplicate_answered_with_original_offsets(client):
    await create_topic(client, "t")
    init = await client.request(m.InitProducerIdRequest())
    pid, epoch = init.producer_id, init.producer_epoch
    first = make_batch([b"a", b"b"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
    second = make_batch([b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=2)
    r1 = await produce(client, "t", bytes(first))
    r2 = await produce(client, "t", bytes(second))
    again = await produce(client, "t", bytes(first))  # a retry of an already-written batch
    assert (r1.partitions[0].base_offset, r2.partitions[0].base_offset) == (0, 2)
    assert again.partitions[0].error == 0 and again.partitions[0].base_offset == 0
    assert (await fetch(client, "t", 0)).partitions[0].high_watermark == 3
    gap = make_batch([b"d"], producer_id=pid, producer_epoch=epoch, base_sequence=7)
    assert (await produce(client, "t", gap)).partitions[0].error == OutOfOrderSequenceError.code
    bumped = await client.request(m.InitProducerIdRequest(producer_id=pid, producer_epoch=epoch))
    assert bumped.producer_epoch == epoch + 1
    new = make_batch([b"e"], producer_id=pid, producer_epoch=epoch + 1, base_sequence=0)
    assert (await produce(client, "t", new)).partitions[0].error == 0
    stale = make_batch([b"f"], producer_id=pid, producer_epoch=epoch, base_sequence=3)
    assert (await produce(client, "t", stale)).partitions[0].error == ProducerFencedError.code


async def test_re_initialising_a_producer_id_never_issued_is_refused(client):
    """UnknownProducerIdError: the broker holds no state for an id it never handed out, so it
    cannot fence older instances of it; the producer must ask for a new id."""
    issued = (await client.request(m.InitProducerIdRequest())).producer_id
    unknown = await client.request(m.InitProducerIdRequest(producer_id=issued + 1, producer_epoch=0))
    assert unknown.error == UnknownProducerIdError.code and "never issued" in unknown.message
    known = await client.request(m.InitProducerIdRequest(producer_id=issued, producer_epoch=0))
    assert (known.error, known.producer_id, known.producer_epoch) == (0, issued, 1)


async def test_metadata_and_describe(broker, client):
    await create_topic(client, "t", partitions=3)
    meta = await client.request(m.MetadataRequest())
    assert meta.brokers[0].port == broker.port
    assert [t.name for t in meta.topics] == ["t"]
    assert [p.partition for p in meta.topics[0].partitions] == [0, 1, 2]
    await produce(client, "t", make_batch([b"x"]), partition=1)
    described = await client.request(m.DescribeTopicsRequest(topics=["t"]))
    parts = described.topics[0].partitions
    assert [p.log_end_offset for p in parts] == [0, 1, 0]
    assert described.topics[0].configs["partitions"] == 3


async def test_create_invalid_and_duplicate_topics(client):
    from sluice.protocol.errors import InvalidTopicError, TopicAlreadyExistsError

    await create_topic(client, "ok")
    response = await client.request(
        m.CreateTopicsRequest(
            topics=[
                m.TopicSpec(name=name, partitions=1)
                for name in ["..", "a/b", "", "x" * 250, "ok", "bad\x00name"]
            ]
        )
    )
    codes = [t.error for t in response.topics]
    assert codes == [InvalidTopicError.code] * 4 + [TopicAlreadyExistsError.code, InvalidTopicError.code]


async def test_delete_topic_wakes_pollers_and_forgets_data(client, broker):
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"x"]))
    other = await RawClient.connect(broker.port)
    got = []

    async def poll():
        got.append(await fetch(other, "t", 1, max_wait_ms=30_000))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            response = await client.request(m.DeleteTopicsRequest(topics=["t"]))
            assert response.topics[0].error == 0
    assert got[0].partitions[0].error == UnknownTopicOrPartitionError.code
    await other.aclose()


async def test_pipelined_mix_of_deferred_and_ready_responses_keeps_order(client):
    """acks=all produces (answered after a flush) interleaved with metadata requests (ready at
    once): every response comes back in request order (the client connection checks cids)."""
    await create_topic(client, "t")
    requests = []
    for i in range(40):
        if i % 2:
            requests.append(m.MetadataRequest(topics=["t"]))
        else:
            requests.append(m.ProduceRequest(
                acks=-1, timeout_ms=10_000,
                partitions=[m.ProducePartition(topic="t", partition=0, records=make_batch([b"%d" % i]))],
            ))
    with trio.fail_after(20):
        for request in requests:
            await client.send(request)
        responses = [await client.receive() for _ in requests]
    assert [type(r).__name__ for r in responses] == [
        "MetadataResponse" if i % 2 else "ProduceResponse" for i in range(40)
    ]
    assert [r.partitions[0].base_offset for r in responses[::2]] == list(range(20))
