"""Handshake, metadata and the topic APIs: Sluice's wire messages <-> ``TopicRegistry``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sluice.broker.adapters.sluice.context import RequestContext
from sluice.broker.domain.topics import TopicRegistry
from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError, UnknownTopicOrPartitionError


def handle_handshake(ctx: RequestContext, request: m.HandshakeRequest) -> m.HandshakeResponse:
    ctx.client_id = request.client_id
    return m.HandshakeResponse(broker_id=ctx.broker.broker_id, apis=dict(m.API_VERSIONS))


def handle_metadata(ctx: RequestContext, request: m.MetadataRequest) -> m.MetadataResponse:
    broker_id = ctx.broker.broker_id
    topics = ctx.broker.topics
    out = []
    for name in _requested(topics, request.topics):
        info = topics.topic(name)
        if info is None:
            out.append(m.TopicMetadata(name=name, error=UnknownTopicOrPartitionError.code, partitions=[]))
            continue
        out.append(m.TopicMetadata(
            name=name, topic_id=info.topic_id,
            partitions=[m.PartitionMetadata(partition=i, leader=broker_id)
                        for i in range(info.config.partitions)],
        ))
    host, port = ctx.advertised
    return m.MetadataResponse(
        brokers=[m.BrokerInfo(id=broker_id, host=host, port=port)], controller_id=broker_id,
        topics=out,
    )


def _requested(topics: TopicRegistry, requested: list[str] | None) -> list[str]:
    """The named topics, or all user topics (internal ``__`` topics only when named)."""
    return topics.names() if requested is None else list(requested)


def handle_create_topics(ctx: RequestContext, request: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
    topics = ctx.broker.topics
    return m.CreateTopicsResponse(topics=_topic_results(
        request.topics, lambda spec: spec.name,
        lambda spec: topics.create(spec.name, spec.partitions, dict(spec.configs)).topic_id))


def handle_delete_topics(ctx: RequestContext, request: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
    return m.DeleteTopicsResponse(topics=_topic_results(
        request.topics, lambda name: name, ctx.broker.topics.delete))


def handle_alter_topics(ctx: RequestContext, request: m.AlterTopicsRequest) -> m.AlterTopicsResponse:
    topics = ctx.broker.topics
    return m.AlterTopicsResponse(topics=_topic_results(
        request.topics, lambda alteration: alteration.name,
        lambda alteration: topics.alter(alteration.name, alteration.partitions,
                                        dict(alteration.configs))))


def _topic_results(
    items: Iterable, name_of: Callable[[object], str], apply: Callable[[object], str]
) -> list[m.TopicResult]:
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


def handle_describe_topics(
    ctx: RequestContext, request: m.DescribeTopicsRequest
) -> m.DescribeTopicsResponse:
    topics = ctx.broker.topics
    out = []
    for name in _requested(topics, request.topics):
        info = topics.topic(name)
        if info is None:
            err = UnknownTopicOrPartitionError(f"unknown topic {name!r}")
            out.append(m.TopicDescription(name=name, error=err.code, message=err.message))
            continue
        parts = []
        for i in range(info.config.partitions):
            partition = topics.partition(name, i)
            parts.append(m.PartitionDescription(
                partition=i, log_start_offset=partition.log_start_offset,
                log_end_offset=partition.log_end_offset, size_bytes=partition.size_bytes,
                segments=partition.segment_count,
            ))
        out.append(m.TopicDescription(name=name, topic_id=info.topic_id,
                                      configs=info.config.to_mapping(), partitions=parts))
    return m.DescribeTopicsResponse(topics=out)
