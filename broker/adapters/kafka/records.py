"""Produce, Fetch, ListOffsets and InitProducerId: Kafka's messages <-> the domain's
``Produce``, ``Fetch``, partitions and producer ids -- the same operations Sluice's clients
use, so ordering, ``acks=all``, the idempotent-producer checks, the KIP-74 byte budget and
the long poll are one implementation for both protocols (``adapters.sluice.records`` says
how the outcomes flow: inline, ``Pending``, ``Deferred``).

A Produce's records are views of the received frame (validated and stamped in place, never
copied); a Fetch's records are the stored batches as file slices, sent with ``sendfile``.
Kafka's fields without a Sluice counterpart: ``last_stable_offset`` is the high watermark
(no transactions), ``aborted_transactions`` null, ``session_id`` 0 (no fetch sessions: a
client asking for an incremental fetch gets FETCH_SESSION_ID_NOT_FOUND and starts over with
full fetches), leader epochs -1.
"""

from __future__ import annotations

from sluice.broker.adapters.kafka.context import KafkaContext
from sluice.broker.adapters.kafka.responses import error_code
from sluice.broker.adapters.outcomes import Deferred, Pending
from sluice.broker.domain.fetching import FetchedPartition, FetchTarget
from sluice.broker.domain.producing import ACKS_ALL, ACKS_NONE, Produce, ProduceTarget
from sluice.protocol.errors import ApiError, CorruptRecordError, InvalidRequestError
from sluice.protocol.kafka import ErrorCode, RequestHeader
from sluice.protocol.kafka import messages as k

ACKS_LEADER = 1
NO_SESSION = 0


# -- Produce ----------------------------------------------------------------------------------


def handle_produce(ctx: KafkaContext, header: RequestHeader, request: k.ProduceRequest):
    if request.acks not in (ACKS_NONE, ACKS_LEADER, ACKS_ALL):
        return _produce_failed(ctx, header, request, int(ErrorCode.INVALID_REQUIRED_ACKS))
    if request.transactional_id is not None:
        return _produce_failed(ctx, header, request,
                               int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    targets = [ProduceTarget(t.name, p.index, p.records if p.records is not None else bytearray())
               for t in request.topic_data for p in t.partition_data]
    produce = ctx.broker.produce(targets, request.acks)
    if produce.append_inline():
        return _produced(ctx, header, request, produce)

    async def rest():
        await produce.append_rest()
        return _produced(ctx, header, request, produce)

    return Pending(rest)


def _produce_failed(ctx: KafkaContext, header: RequestHeader, request: k.ProduceRequest,
                    code: int):
    """A Produce refused whole: every partition gets ``code`` (acks=0: the connection closes)."""
    if request.acks == ACKS_NONE:
        ctx.close_after(f"an acks=0 Produce failed with Kafka error {code}")
        return None
    R = k.ProduceResponse
    return R(responses=[R.TopicProduceResponse(name=t.name, partition_responses=[
        R.PartitionProduceResponse(index=p.index, error_code=code, base_offset=-1)
        for p in t.partition_data]) for t in request.topic_data])


def _produced(ctx: KafkaContext, header: RequestHeader, request: k.ProduceRequest,
              produce: Produce):
    """None for acks=0 (closing the connection if an append failed), the response, or
    (acks=all) a ``Deferred`` awaiting the commits."""
    if request.acks == ACKS_NONE:
        failed = [r for r in produce.results if r.error is not None]
        if failed:
            ctx.close_after(f"an acks=0 Produce failed: {failed[0].topic}[{failed[0].partition}]"
                            f": {failed[0].error.message}")
        return None
    if not produce.must_wait:
        return _produce_response(header, request, produce)

    async def committed() -> k.ProduceResponse:
        await produce.wait_committed(request.timeout_ms)
        return _produce_response(header, request, produce)

    return Deferred(committed)


def _produce_response(header: RequestHeader, request: k.ProduceRequest,
                      produce: Produce) -> k.ProduceResponse:
    R = k.ProduceResponse
    results = iter(produce.results)
    topics = []
    for t in request.topic_data:
        parts = []
        for _ in t.partition_data:
            r = next(results)
            if r.error is None:
                parts.append(R.PartitionProduceResponse(
                    index=r.partition, base_offset=r.base_offset,
                    log_start_offset=r.log_start_offset))
            else:
                parts.append(R.PartitionProduceResponse(
                    index=r.partition, error_code=_records_error(r.error, header),
                    base_offset=-1, error_message=r.error.message))
        topics.append(R.TopicProduceResponse(name=t.name, partition_responses=parts))
    return R(responses=topics)


def _records_error(error: ApiError, header: RequestHeader) -> int:
    """A batch the broker refused: Kafka says CORRUPT_MESSAGE for a bad CRC or length, and
    INVALID_RECORD for one that breaks a rule (transactional, control, a bad timestamp)."""
    if isinstance(error, InvalidRequestError) and header.api_version >= 8:
        return int(ErrorCode.INVALID_RECORD)
    if isinstance(error, CorruptRecordError):
        return int(ErrorCode.CORRUPT_MESSAGE)
    return error_code(error, header)


# -- Fetch ------------------------------------------------------------------------------------


def handle_fetch(ctx: KafkaContext, header: RequestHeader, request: k.FetchRequest):
    if request.session_id != NO_SESSION:  # an incremental fetch of a session never made
        return k.FetchResponse(error_code=int(ErrorCode.FETCH_SESSION_ID_NOT_FOUND))
    fetch = ctx.broker.fetch(
        [FetchTarget(t.topic, p.partition, p.fetch_offset, p.partition_max_bytes)
         for t in request.topics for p in t.partitions],
        max_bytes=request.max_bytes, min_bytes=request.min_bytes,
        max_wait_ms=max(0, request.max_wait_ms),
    )
    parts = fetch.poll()
    if parts is not None:
        return _fetch_response(header, request, parts)

    async def answered() -> k.FetchResponse:
        return _fetch_response(header, request, await fetch.wait())

    return Deferred(answered)


def _fetch_response(header: RequestHeader, request: k.FetchRequest,
                    parts: list[FetchedPartition]) -> k.FetchResponse:
    R = k.FetchResponse
    results = iter(parts)
    topics = []
    for t in request.topics:
        out = []
        for _ in t.partitions:
            p = next(results)
            out.append(R.PartitionData(
                partition_index=p.partition,
                error_code=0 if p.error is None else error_code(p.error, header),
                high_watermark=p.high_watermark, last_stable_offset=p.high_watermark,
                log_start_offset=p.log_start_offset, records=p.slices,
            ))
        topics.append(R.FetchableTopicResponse(topic=t.topic, partitions=out))
    return R(session_id=NO_SESSION, responses=topics)


# -- ListOffsets, InitProducerId ------------------------------------------------------------


def handle_list_offsets(ctx: KafkaContext, header: RequestHeader,
                        request: k.ListOffsetsRequest) -> k.ListOffsetsResponse:
    R = k.ListOffsetsResponse
    topics = []
    for t in request.topics:
        out = []
        for want in t.partitions:
            try:
                partition = ctx.broker.topics.partition(t.name, want.partition_index)
                offset, timestamp = partition.list_offset(want.timestamp)
            except ApiError as exc:
                out.append(R.ListOffsetsPartitionResponse(
                    partition_index=want.partition_index, error_code=error_code(exc, header)))
                continue
            out.append(R.ListOffsetsPartitionResponse(
                partition_index=want.partition_index, timestamp=timestamp, offset=offset))
        topics.append(R.ListOffsetsTopicResponse(name=t.name, partitions=out))
    return R(topics=topics)


def handle_init_producer_id(ctx: KafkaContext, header: RequestHeader,
                            request: k.InitProducerIdRequest) -> k.InitProducerIdResponse:
    """An idempotent producer's id (a new one every time: v0-1 carry no id to re-initialise).
    Transactional ids are not served: no transactions."""
    if request.transactional_id is not None:
        return k.InitProducerIdResponse(
            error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    producer_id, epoch = ctx.broker.init_producer_id()
    return k.InitProducerIdResponse(producer_id=producer_id, producer_epoch=epoch)
