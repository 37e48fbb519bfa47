"""Produce, fetch, list_offsets and init_producer_id: Sluice's wire messages <-> the domain's
``Produce``, ``Fetch``, partitions and producer ids.

Produce: the appends that can run inline do, in the reader task; from the first that cannot
(a large one, or a partition busy with one) the rest are a ``Pending`` the reader awaits
before it reads the next request, so appends keep request order. ``acks=all`` is a
``Deferred`` (the writer awaits the commit when the response's turn comes); ``acks=0`` is
answered with nothing.

Fetch: read once, in the reader task; if that is enough (or there is nothing to wait for),
it is an ordinary response; else a ``Deferred`` long poll, already watching its partitions.
The file slices a response holds are released by the session once it is sent or dropped.
"""

from __future__ import annotations

from sluice.broker.adapters.outcomes import Deferred, Pending
from sluice.broker.adapters.sluice.context import RequestContext
from sluice.broker.domain.fetching import FetchedPartition, FetchTarget, release_slices
from sluice.broker.domain.producing import ACKS_NONE, Produce, ProduceResult, ProduceTarget
from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError, InvalidRequestError


def handle_produce(ctx: RequestContext, request: m.ProduceRequest):
    produce = ctx.broker.produce(
        [ProduceTarget(p.topic, p.partition, p.records, p.topic_id) for p in request.partitions],
        request.acks,
    )
    if produce.append_inline():
        return _produced(produce, request)

    async def rest():
        await produce.append_rest()
        return _produced(produce, request)

    return Pending(rest)


def _produced(produce: Produce, request: m.ProduceRequest):
    """None for acks=0, the response, or (acks=all) a ``Deferred`` awaiting the commits."""
    if request.acks == ACKS_NONE:
        return None
    if not produce.must_wait:
        return _produce_response(produce.results)

    async def committed() -> m.ProduceResponse:
        await produce.wait_committed(request.timeout_ms)
        return _produce_response(produce.results)

    return Deferred(committed)


def _produce_response(results: list[ProduceResult]) -> m.ProduceResponse:
    return m.ProduceResponse(partitions=[
        m.ProducePartitionResult(topic=r.topic, partition=r.partition, error=r.error.code,
                                 message=r.error.message) if r.error else
        m.ProducePartitionResult(topic=r.topic, partition=r.partition,
                                 base_offset=r.base_offset, log_start_offset=r.log_start_offset)
        for r in results
    ])


def handle_fetch(ctx: RequestContext, request: m.FetchRequest) -> m.FetchResponse | Deferred:
    fetch = ctx.broker.fetch(
        [FetchTarget(p.topic, p.partition, p.offset, p.max_bytes, p.topic_id)
         for p in request.partitions],
        max_bytes=request.max_bytes, min_bytes=request.min_bytes, max_wait_ms=request.max_wait_ms,
    )
    parts = fetch.poll()
    if parts is not None:
        return _fetch_response(parts)

    async def answered() -> m.FetchResponse:
        return _fetch_response(await fetch.wait())

    return Deferred(answered)


def _fetch_response(parts: list[FetchedPartition]) -> m.FetchResponse:
    return m.FetchResponse(partitions=[
        m.FetchPartitionData(
            topic=p.topic, partition=p.partition, error=p.error.code, message=p.error.message,
            high_watermark=p.high_watermark, log_start_offset=p.log_start_offset,
        ) if p.error else
        m.FetchPartitionData(
            topic=p.topic, partition=p.partition, high_watermark=p.high_watermark,
            log_start_offset=p.log_start_offset, records=p.slices,
        )
        for p in parts
    ])


def release_fetch(response: object) -> None:
    """Release the file references a fetch response's slices hold (sent or dropped)."""
    if isinstance(response, m.FetchResponse):
        for part in response.partitions:
            if isinstance(part.records, list):
                release_slices(part.records)


def handle_list_offsets(ctx: RequestContext, request: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
    out = []
    for want in request.partitions:
        try:
            partition = ctx.broker.topics.partition(want.topic, want.partition)
            if want.timestamp == m.EARLIEST:
                offset, ts = partition.log_start_offset, -1
            elif want.timestamp == m.LATEST:
                offset, ts = partition.high_watermark, -1
            elif want.timestamp >= 0:
                found = partition.offset_for_timestamp(want.timestamp)
                offset, ts = found if found is not None else (-1, -1)
            else:
                raise InvalidRequestError(f"invalid timestamp {want.timestamp}")
        except ApiError as exc:
            out.append(m.ListOffsetsResult(topic=want.topic, partition=want.partition,
                                           error=exc.code, message=exc.message))
            continue
        out.append(m.ListOffsetsResult(topic=want.topic, partition=want.partition, offset=offset,
                                       timestamp=ts))
    return m.ListOffsetsResponse(partitions=out)


def handle_init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest
) -> m.InitProducerIdResponse:
    producer_id, epoch = ctx.broker.init_producer_id(request.producer_id, request.producer_epoch)
    return m.InitProducerIdResponse(producer_id=producer_id, producer_epoch=epoch)
