"""ApiVersions, Metadata and the topic APIs: Kafka's messages <-> ``TopicRegistry``.

This broker is the whole cluster: the only broker in Metadata, leader and only replica of
every partition, with leader epoch -1 (librdkafka then skips its offset validation, KIP-320,
which needs epochs one broker does not stamp). Topics are not created by Metadata requests
(``allow_auto_topic_creation`` is not honoured): create them with CreateTopics or ``sluice
topics create``. Internal topics are listed only when named, as for Sluice's clients.
"""

from __future__ import annotations

from sluice.broker.adapters.kafka import configs
from sluice.broker.adapters.kafka.context import KafkaContext
from sluice.broker.adapters.kafka.responses import error_code
from sluice.broker.domain.topics import is_internal
from sluice.protocol.errors import (
    ApiError,
    InvalidPartitionsError,
    InvalidRequestError,
)
from sluice.protocol.kafka import ErrorCode, RequestHeader, api_versions_entries
from sluice.protocol.kafka import messages as k

CLUSTER_ID = "sluice"
NO_EPOCH = -1
DEFAULT = -1  # CreateTopics' "the broker's default" partition count and replication factor


def handle_api_versions(ctx: KafkaContext, header: RequestHeader,
                        request: k.ApiVersionsRequest) -> k.ApiVersionsResponse:
    return k.ApiVersionsResponse(api_keys=api_versions_entries())


def handle_metadata(ctx: KafkaContext, header: RequestHeader,
                    request: k.MetadataRequest) -> k.MetadataResponse:
    R = k.MetadataResponse
    broker_id = ctx.broker.broker_id
    topics = ctx.broker.topics
    names = topics.names() if request.topics is None else [t.name for t in request.topics]
    out = []
    for name in names:
        info = topics.topic(name)
        if info is None:
            out.append(R.MetadataResponseTopic(
                error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), name=name, partitions=[]))
            continue
        out.append(R.MetadataResponseTopic(name=name, is_internal=is_internal(name), partitions=[
            R.MetadataResponsePartition(partition_index=i, leader_id=broker_id,
                                        leader_epoch=NO_EPOCH, replica_nodes=[broker_id],
                                        isr_nodes=[broker_id])
            for i in range(info.config.partitions)]))
    host, port = ctx.advertised
    return R(brokers=[R.MetadataResponseBroker(node_id=broker_id, host=host, port=port)],
             cluster_id=CLUSTER_ID, controller_id=broker_id, topics=out)


def handle_create_topics(ctx: KafkaContext, header: RequestHeader,
                         request: k.CreateTopicsRequest) -> k.CreateTopicsResponse:
    R = k.CreateTopicsResponse
    topics = ctx.broker.topics
    out = []
    for spec in request.topics:
        try:
            partitions = _partition_count(spec, ctx.broker.broker_id)
            overrides = configs.topic_overrides((c.name, c.value) for c in spec.configs)
            if request.validate_only:
                topics.check_new(spec.name, partitions, overrides)
            else:
                topics.create(spec.name, partitions, overrides)
        except _ReplicationError as exc:
            out.append(R.CreatableTopicResult(name=spec.name, error_code=exc.kafka_code,
                                              error_message=str(exc)))
            continue
        except ApiError as exc:
            out.append(R.CreatableTopicResult(name=spec.name, error_code=error_code(exc, header),
                                              error_message=exc.message))
            continue
        out.append(R.CreatableTopicResult(name=spec.name))
    return R(topics=out)


class _ReplicationError(Exception):
    """A replication factor or replica assignment a broker of one cannot honour."""

    def __init__(self, message: str, kafka_code: ErrorCode) -> None:
        super().__init__(message)
        self.kafka_code = int(kafka_code)


def _partition_count(spec: k.CreateTopicsRequest.CreatableTopic, broker_id: int) -> int | None:
    """The partitions asked for (None: the broker's default), from the count or from a replica
    assignment that names this broker only."""
    if spec.replication_factor not in (DEFAULT, 1) and not spec.assignments:
        raise _ReplicationError(
            f"replication factor {spec.replication_factor}: this broker is a cluster of one",
            ErrorCode.INVALID_REPLICATION_FACTOR)
    if spec.assignments:
        if spec.num_partitions != DEFAULT or spec.replication_factor != DEFAULT:
            raise InvalidRequestError("a replica assignment comes with num_partitions and "
                                      "replication_factor -1")
        indexes = sorted(a.partition_index for a in spec.assignments)
        if indexes != list(range(len(indexes))) or any(
                a.broker_ids != [broker_id] for a in spec.assignments):
            raise _ReplicationError(
                f"a replica assignment must give partitions 0..n-1 to broker {broker_id} alone",
                ErrorCode.INVALID_REPLICA_ASSIGNMENT)
        return len(indexes)
    if spec.num_partitions == DEFAULT:
        return None
    if spec.num_partitions < 1:
        raise InvalidPartitionsError(f"num_partitions must be at least 1, got "
                                     f"{spec.num_partitions}")
    return spec.num_partitions


def handle_delete_topics(ctx: KafkaContext, header: RequestHeader,
                         request: k.DeleteTopicsRequest) -> k.DeleteTopicsResponse:
    R = k.DeleteTopicsResponse
    out = []
    for name in request.topic_names:
        try:
            ctx.broker.topics.delete(name)
        except ApiError as exc:
            out.append(R.DeletableTopicResult(name=name, error_code=error_code(exc, header)))
            continue
        out.append(R.DeletableTopicResult(name=name))
    return R(responses=out)


def handle_describe_configs(ctx: KafkaContext, header: RequestHeader,
                            request: k.DescribeConfigsRequest) -> k.DescribeConfigsResponse:
    R = k.DescribeConfigsResponse
    out = []
    for resource in request.resources:
        try:
            found = configs.described(resource, ctx.broker.topics, ctx.config)
        except ApiError as exc:
            out.append(R.DescribeConfigsResult(
                error_code=error_code(exc, header), error_message=exc.message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name))
            continue
        out.append(R.DescribeConfigsResult(
            resource_type=resource.resource_type, resource_name=resource.resource_name,
            configs=[R.DescribeConfigsResourceResult(
                name=s.name, value=s.value, read_only=s.read_only, config_source=s.source,
                is_default=s.source == configs.SOURCE_DEFAULT, config_type=s.kind)
                for s in found]))
    return R(results=out)
