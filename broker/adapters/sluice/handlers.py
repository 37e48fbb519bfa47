"""One function per API: request in, response (or a ``Deferred`` response) out.

Handlers run on the session's reader task, in request order, so anything that must happen in
order -- appends above all -- happens inline, or in a ``Pending`` the reader awaits before it
reads the next request (an append that waits its partition's turn or is written by a worker
thread). Work that waits (an ``acks=all`` flush, a
long-polling fetch) is returned as a ``Deferred``; the session's writer awaits it when that
response's turn comes, so responses stay in request order while later requests are already
being read and appended (that overlap is what lets one connection's pipelined ``acks=all``
produces share fsyncs).

Invariants: a handler never lets a non-``ApiError`` escape as a wire error except as
``UnknownServerError``; fetch reads happen in the writer (inside ``Deferred``), so the file
slices a response holds are released by the same code that sends them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import trio
from sluice.broker.adapters.outcomes import Deferred, Pending
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.state import BrokerState
from sluice.broker.storage import ValidatedBatches, release_slices
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    ApiError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    StorageError,
    UnknownTopicOrPartitionError,
)

EARLIEST = -2
LATEST = -1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- handshake and metadata --------------------------------------------------------------------


def handle_handshake(state: BrokerState, request: m.HandshakeRequest, session) -> m.HandshakeResponse:
    session.client_id = request.client_id
    return m.HandshakeResponse(broker_id=state.config.broker_id, apis=dict(m.API_VERSIONS))


def handle_metadata(state: BrokerState, request: m.MetadataRequest, session) -> m.MetadataResponse:
    broker = m.BrokerInfo(id=state.config.broker_id, host=state.advertised_host, port=state.advertised_port)
    topics = state.manager.topics()
    out = []
    for name in _requested_topics(topics, request.topics):
        info = topics.get(name)
        if info is None:
            out.append(m.TopicMetadata(name=name, error=UnknownTopicOrPartitionError.code, partitions=[]))
            continue
        out.append(
            m.TopicMetadata(
                name=name,
                topic_id=info.topic_id,
                partitions=[
                    m.PartitionMetadata(partition=i, leader=state.config.broker_id)
                    for i in range(info.config.partitions)
                ],
            )
        )
    return m.MetadataResponse(
        brokers=[broker], controller_id=state.config.broker_id, topics=out
    )


def _requested_topics(topics, requested: list[str] | None) -> list[str]:
    """The named topics, or all user topics (internal ``__`` topics only when named)."""
    if requested is None:
        return sorted(name for name in topics if not name.startswith("__"))
    return list(requested)


# -- topics ------------------------------------------------------------------------------------


def handle_create_topics(state: BrokerState, request: m.CreateTopicsRequest, session) -> m.CreateTopicsResponse:
    return m.CreateTopicsResponse(topics=_topic_results(
        request.topics, lambda spec: spec.name,
        lambda spec: state.create_topic(spec.name, spec.partitions, dict(spec.configs)).topic_id))


def handle_delete_topics(state: BrokerState, request: m.DeleteTopicsRequest, session) -> m.DeleteTopicsResponse:
    return m.DeleteTopicsResponse(topics=_topic_results(
        request.topics, lambda name: name, state.delete_topic))


def handle_alter_topics(state: BrokerState, request: m.AlterTopicsRequest, session) -> m.AlterTopicsResponse:
    return m.AlterTopicsResponse(topics=_topic_results(
        request.topics, lambda alteration: alteration.name,
        lambda alteration: state.alter_topic(
            alteration.name, alteration.partitions, dict(alteration.configs))))


def _topic_results(items, name_of, apply) -> list[m.TopicResult]:
    """``apply`` each item in turn (it returns the topic's id): a result per item, with its
    ``ApiError`` if it failed."""
    results = []
    for item in items:
        try:
            topic_id = apply(item)
            results.append(m.TopicResult(name=name_of(item), topic_id=topic_id))
        except ApiError as exc:
            results.append(m.TopicResult(name=name_of(item), error=exc.code, message=exc.message))
    return results


def handle_describe_topics(state: BrokerState, request: m.DescribeTopicsRequest, session) -> m.DescribeTopicsResponse:
    topics = state.manager.topics()
    out = []
    for name in _requested_topics(topics, request.topics):
        info = topics.get(name)
        if info is None:
            err = UnknownTopicOrPartitionError(f"unknown topic {name!r}")
            out.append(m.TopicDescription(name=name, error=err.code, message=err.message))
            continue
        parts = []
        for i in range(info.config.partitions):
            plog = state.partition(name, i).log
            parts.append(
                m.PartitionDescription(
                    partition=i,
                    log_start_offset=plog.log_start_offset,
                    log_end_offset=plog.log_end_offset,
                    size_bytes=plog.size_bytes,
                    segments=plog.segment_count,
                )
            )
        out.append(
            m.TopicDescription(name=name, topic_id=info.topic_id, configs=info.config.to_mapping(),
                               partitions=parts)
        )
    return m.DescribeTopicsResponse(topics=out)


# -- produce -----------------------------------------------------------------------------------


def handle_produce(state: BrokerState, request: m.ProduceRequest, session):
    """Append each partition's batches in request order. While every append can run inline,
    they do; from the first that must wait its turn or be written off the loop (a large one,
    or a partition busy with one), the rest run in a ``Pending`` the reader awaits before it
    reads the next request -- so appends keep the order in which requests arrived."""
    produce = _Produce(state, request)
    for i, part in enumerate(request.partitions):
        target = produce.validate(part)
        if target is None:
            continue
        partition, batches = target
        if not partition.can_append_now(batches):
            return Pending(partial(produce.append_rest, i, partition, batches))
        produce.append(part, partition, batches)
    return produce.outcome()


class _Produce:
    """One produce request's per-partition results, filled in request order."""

    def __init__(self, state: BrokerState, request: m.ProduceRequest) -> None:
        self.state = state
        self.request = request
        self.results: list[m.ProducePartitionResult] = []
        self.to_flush: list[tuple[int, object, int]] = []

    def validate(self, part: m.ProducePartition) -> tuple[Partition, ValidatedBatches] | None:
        """The partition and validated batches to append, or None (its error result recorded)."""
        try:
            partition = self.state.partition(part.topic, part.partition, part.topic_id)
            return partition, partition.validate(part.records)
        except ApiError as exc:
            self.failed(part, exc)
            return None

    def append(self, part: m.ProducePartition, partition: Partition, batches) -> None:
        try:
            appended = partition.append(batches)
        except ApiError as exc:
            self.failed(part, exc)
            return
        self.appended(part, partition, appended)

    async def append_rest(self, first: int, partition: Partition, batches) -> object:
        """From partition ``first`` (validated: ``partition``, ``batches``) on, each append in
        its partition's turn; then the outcome."""
        parts = self.request.partitions
        for i in range(first, len(parts)):
            part = parts[i]
            if i > first:
                target = self.validate(part)
                if target is None:
                    continue
                partition, batches = target
            try:
                appended = await partition.append_in_turn(batches)
            except ApiError as exc:
                self.failed(part, exc)
                continue
            self.appended(part, partition, appended)
        return self.outcome()

    def failed(self, part: m.ProducePartition, exc: ApiError) -> None:
        self.results.append(m.ProducePartitionResult(
            topic=part.topic, partition=part.partition, error=exc.code, message=exc.message
        ))

    def appended(self, part: m.ProducePartition, partition: Partition, appended) -> None:
        self.results.append(m.ProducePartitionResult(
            topic=part.topic, partition=part.partition, base_offset=appended.base_offset,
            log_start_offset=partition.log.log_start_offset,
        ))
        if self.request.acks == -1:
            self.to_flush.append((len(self.results) - 1, partition, appended.last_offset))

    def outcome(self):
        """None for acks=0, the response, or (acks=all) a ``Deferred`` awaiting the flushes."""
        request, results, to_flush = self.request, self.results, self.to_flush
        if request.acks == 0:
            return None
        if not to_flush:
            return m.ProduceResponse(partitions=results)

        async def complete() -> m.ProduceResponse:
            with trio.move_on_after(request.timeout_ms / 1000) as scope:
                for slot, partition, last_offset in to_flush:
                    try:
                        await partition.wait_committed(last_offset)
                    except ApiError as exc:
                        results[slot] = _failed(results[slot], exc)
            if scope.cancelled_caught:
                timeout = RequestTimedOutError(f"not flushed within {request.timeout_ms} ms")
                for slot, partition, last_offset in to_flush:
                    if partition.committed_offset <= last_offset:
                        results[slot] = _failed(results[slot], timeout)
            return m.ProduceResponse(partitions=results)

        return Deferred(complete)


def _failed(result: m.ProducePartitionResult, exc: ApiError) -> m.ProducePartitionResult:
    return m.ProducePartitionResult(
        topic=result.topic, partition=result.partition, error=exc.code, message=exc.message
    )


# -- fetch -------------------------------------------------------------------------------------


def _read_partitions(state: BrokerState, request: m.FetchRequest):
    """Read every requested partition now: (per-partition data, bytes found, error seen)."""
    out = []
    budget = request.max_bytes
    total = 0
    for want in request.partitions:
        spent = budget <= 0 and total > 0
        # The first non-empty partition always returns at least one batch (KIP-74); once the
        # request's budget is spent, later partitions report their offsets and no data.
        part = _read_one(state, want, 0 if spent else max(1, min(want.max_bytes, budget)))
        size = m.records_length(part.records)
        total += size
        budget -= size
        out.append(part)
    return out, total, any(part.error for part in out)


def _read_one(state: BrokerState, want: m.FetchPartition, max_bytes: int) -> m.FetchPartitionData:
    """One partition's whole batches from ``want.offset`` (none when ``max_bytes`` is 0)."""
    try:
        plog = state.partition(want.topic, want.partition, want.topic_id).log
        slices = plog.read(want.offset, max_bytes).slices if max_bytes else []
    except OffsetOutOfRangeError as exc:  # with the bounds, so the client can reset
        return m.FetchPartitionData(
            topic=want.topic, partition=want.partition, error=exc.code, message=exc.message,
            high_watermark=plog.log_end_offset, log_start_offset=plog.log_start_offset,
        )
    except ApiError as exc:
        return m.FetchPartitionData(
            topic=want.topic, partition=want.partition, error=exc.code, message=exc.message
        )
    except OSError as exc:  # e.g. no descriptor left to open an older segment with
        error = StorageError(f"cannot read {want.topic}[{want.partition}]: {exc.strerror or exc}")
        return m.FetchPartitionData(
            topic=want.topic, partition=want.partition, error=error.code, message=error.message
        )
    return m.FetchPartitionData(
        topic=want.topic, partition=want.partition, high_watermark=plog.log_end_offset,
        log_start_offset=plog.log_start_offset, records=list(slices),
    )


def handle_fetch(state: BrokerState, request: m.FetchRequest, session) -> m.FetchResponse | Deferred:
    """Answer at once if there is enough to return (or nothing to wait for), so the reader
    sends it without the hop through the writer; else a long poll (``Deferred``) that
    re-reads on every append to a requested partition until ``max_wait_ms``."""
    deadline = trio.current_time() + request.max_wait_ms / 1000
    parts, total, errored = _read_partitions(state, request)
    if total >= request.min_bytes or errored or state.draining or not request.max_wait_ms:
        return m.FetchResponse(partitions=parts)
    for part in parts:
        release_slices(part.records)
    # Watch from now, not from when the writer gets to it: an append in between must wake it.
    # (If the connection drops first, the event is discarded at the partition's next append.)
    woke = _watch(state, request)

    async def complete() -> m.FetchResponse:
        nonlocal woke
        while True:
            try:
                with trio.move_on_at(deadline):
                    await woke.wait()
            finally:
                _unwatch(state, request, woke)
            parts, total, errored = _read_partitions(state, request)
            done = total >= request.min_bytes or errored or state.draining
            if done or trio.current_time() >= deadline:
                return m.FetchResponse(partitions=parts)
            for part in parts:
                release_slices(part.records)
            woke = _watch(state, request)

    return Deferred(complete)


def _watch(state: BrokerState, request: m.FetchRequest) -> trio.Event:
    """An event set by the next append to (or deletion of) any requested partition."""
    woke = trio.Event()
    for p in request.partitions:
        partition = state.partitions.get((p.topic, p.partition))
        if partition is not None:
            partition.watch(woke)
    return woke


def _unwatch(state: BrokerState, request: m.FetchRequest, woke: trio.Event) -> None:
    for p in request.partitions:
        partition = state.partitions.get((p.topic, p.partition))
        if partition is not None:
            partition.unwatch(woke)


# -- offsets and producer ids -------------------------------------------------------------------


def handle_list_offsets(state: BrokerState, request: m.ListOffsetsRequest, session) -> m.ListOffsetsResponse:
    out = []
    for want in request.partitions:
        try:
            plog = state.partition(want.topic, want.partition).log
            if want.timestamp == EARLIEST:
                offset, ts = plog.log_start_offset, -1
            elif want.timestamp == LATEST:
                offset, ts = plog.log_end_offset, -1
            elif want.timestamp >= 0:
                found = plog.offset_for_timestamp(want.timestamp)
                offset, ts = found if found is not None else (-1, -1)
            else:
                raise InvalidRequestError(f"invalid timestamp {want.timestamp}")
        except ApiError as exc:
            out.append(m.ListOffsetsResult(
                    topic=want.topic, partition=want.partition, error=exc.code, message=exc.message
                ))
            continue
        out.append(m.ListOffsetsResult(topic=want.topic, partition=want.partition, offset=offset, timestamp=ts))
    return m.ListOffsetsResponse(partitions=out)


def handle_init_producer_id(state: BrokerState, request: m.InitProducerIdRequest, session) -> m.InitProducerIdResponse:
    if request.producer_id >= 0:
        # A known producer re-initialising (e.g. after a sequence error): bump its epoch, which
        # fences any older instance still using the id.
        return m.InitProducerIdResponse(
            producer_id=request.producer_id, producer_epoch=(request.producer_epoch + 1) % 32768
        )
    return m.InitProducerIdResponse(producer_id=state.producer_ids.allocate(), producer_epoch=0)


# -- groups (broker.groups does the work) --------------------------------------------------------


def handle_group_heartbeat(state: BrokerState, request: m.GroupHeartbeatRequest, session):
    return state.groups.heartbeat(request, session.client_id)


def handle_commit_offsets(state: BrokerState, request: m.CommitOffsetsRequest, session):
    return state.groups.commit(request)


def handle_fetch_offsets(state: BrokerState, request: m.FetchOffsetsRequest, session):
    return state.groups.fetch_offsets(request)


def handle_list_groups(state: BrokerState, request: m.ListGroupsRequest, session):
    return state.groups.list_groups(request)


def handle_describe_groups(state: BrokerState, request: m.DescribeGroupsRequest, session):
    return state.groups.describe_groups(request)


def handle_delete_groups(state: BrokerState, request: m.DeleteGroupsRequest, session):
    return state.groups.delete_groups(request)


HANDLERS: dict[type, Callable] = {
    m.HandshakeRequest: handle_handshake,
    m.MetadataRequest: handle_metadata,
    m.CreateTopicsRequest: handle_create_topics,
    m.DeleteTopicsRequest: handle_delete_topics,
    m.DescribeTopicsRequest: handle_describe_topics,
    m.ProduceRequest: handle_produce,
    m.FetchRequest: handle_fetch,
    m.ListOffsetsRequest: handle_list_offsets,
    m.InitProducerIdRequest: handle_init_producer_id,
    m.GroupHeartbeatRequest: handle_group_heartbeat,
    m.CommitOffsetsRequest: handle_commit_offsets,
    m.FetchOffsetsRequest: handle_fetch_offsets,
    m.ListGroupsRequest: handle_list_groups,
    m.DescribeGroupsRequest: handle_describe_groups,
    m.AlterTopicsRequest: handle_alter_topics,
    m.DeleteGroupsRequest: handle_delete_groups,
}


def dispatch(state: BrokerState, request: object, session):
    """Run the handler for ``request``: a response, a ``Deferred``, or None (acks=0)."""
    handler = HANDLERS.get(type(request))
    if handler is None:
        raise InvalidRequestError(f"{type(request).__name__} is not served by this broker")
    return handler(state, request, session)
