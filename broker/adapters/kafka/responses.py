"""Errors as Kafka answers them: which code (``error_code``), in which response
(``error_response``).

Kafka has no error frame: a request that cannot be served is answered with its own API's
response, every item of it carrying the code (Kafka's ``AbstractRequest.getErrorResponse``).
Codes come from ``protocol.kafka.kafka_error_code`` (Sluice code -> Kafka code, with Kafka's
per-version rules), except for the classic group protocol's own conditions, which the domain
raises as subclasses of the nearest Sluice error and which have codes of their own in Kafka.
"""

from __future__ import annotations

from collections.abc import Callable

from sluice.broker.domain.groups import (
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    RebalanceInProgressError,
)
from sluice.protocol.errors import ApiError
from sluice.protocol.kafka import ErrorCode, RequestHeader, kafka_error_code
from sluice.protocol.kafka import messages as k

# The domain's classic-group errors: subclasses of Sluice errors whose Kafka codes differ.
_CLASSIC_CODES: tuple[tuple[type[ApiError], ErrorCode], ...] = (
    (RebalanceInProgressError, ErrorCode.REBALANCE_IN_PROGRESS),
    (InconsistentGroupProtocolError, ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
    (InvalidSessionTimeoutError, ErrorCode.INVALID_SESSION_TIMEOUT),
)


def error_code(error: ApiError, header: RequestHeader) -> int:
    """The Kafka code answering ``error`` in a response to the request ``header``."""
    for kind, code in _CLASSIC_CODES:
        if isinstance(error, kind):
            return int(code)
    return int(kafka_error_code(error, header.api_key, header.api_version))


def error_response(header: RequestHeader, request, code: int):
    """The response to ``request`` (at ``header``'s API) with ``code`` in every item."""
    return _ERROR_RESPONSES[header.api_key](request, code)


def _produce(r: k.ProduceRequest, code: int) -> k.ProduceResponse:
    R = k.ProduceResponse
    return R(responses=[R.TopicProduceResponse(name=t.name, partition_responses=[
        R.PartitionProduceResponse(index=p.index, error_code=code, base_offset=-1)
        for p in t.partition_data]) for t in r.topic_data])


def _fetch(r: k.FetchRequest, code: int) -> k.FetchResponse:
    R = k.FetchResponse
    return R(error_code=code, responses=[R.FetchableTopicResponse(topic=t.topic, partitions=[
        R.PartitionData(partition_index=p.partition, error_code=code, high_watermark=-1,
                        records=b"")
        for p in t.partitions]) for t in r.topics])


def _list_offsets(r: k.ListOffsetsRequest, code: int) -> k.ListOffsetsResponse:
    R = k.ListOffsetsResponse
    return R(topics=[R.ListOffsetsTopicResponse(name=t.name, partitions=[
        R.ListOffsetsPartitionResponse(partition_index=p.partition_index, error_code=code)
        for p in t.partitions]) for t in r.topics])


def _metadata(r: k.MetadataRequest, code: int) -> k.MetadataResponse:
    R = k.MetadataResponse
    return R(topics=[R.MetadataResponseTopic(error_code=code, name=t.name, partitions=[])
                     for t in r.topics or ()])


def _offset_commit(r: k.OffsetCommitRequest, code: int) -> k.OffsetCommitResponse:
    R = k.OffsetCommitResponse
    return R(topics=[R.OffsetCommitResponseTopic(name=t.name, partitions=[
        R.OffsetCommitResponsePartition(partition_index=p.partition_index, error_code=code)
        for p in t.partitions]) for t in r.topics])


def _offset_fetch(r: k.OffsetFetchRequest, code: int) -> k.OffsetFetchResponse:
    R = k.OffsetFetchResponse
    return R(error_code=code, topics=[R.OffsetFetchResponseTopic(name=t.name, partitions=[
        R.OffsetFetchResponsePartition(partition_index=p, committed_offset=-1, metadata="",
                                       error_code=code)
        for p in t.partition_indexes]) for t in r.topics or ()])


def _describe_groups(r: k.DescribeGroupsRequest, code: int) -> k.DescribeGroupsResponse:
    R = k.DescribeGroupsResponse
    return R(groups=[R.DescribedGroup(error_code=code, group_id=g) for g in r.groups])


def _create_topics(r: k.CreateTopicsRequest, code: int) -> k.CreateTopicsResponse:
    R = k.CreateTopicsResponse
    return R(topics=[R.CreatableTopicResult(name=t.name, error_code=code) for t in r.topics])


def _delete_topics(r: k.DeleteTopicsRequest, code: int) -> k.DeleteTopicsResponse:
    R = k.DeleteTopicsResponse
    return R(responses=[R.DeletableTopicResult(name=n, error_code=code) for n in r.topic_names])


def _describe_configs(r: k.DescribeConfigsRequest, code: int) -> k.DescribeConfigsResponse:
    R = k.DescribeConfigsResponse
    return R(results=[R.DescribeConfigsResult(error_code=code, resource_type=c.resource_type,
                                              resource_name=c.resource_name)
                      for c in r.resources])


def _join_group(r: k.JoinGroupRequest, code: int) -> k.JoinGroupResponse:
    return k.JoinGroupResponse(error_code=code, member_id=r.member_id)


def _just(cls: type) -> Callable[[object, int], object]:
    """APIs whose response has one error code and nothing per item."""
    return lambda request, code: cls(error_code=code)


_ERROR_RESPONSES: dict[int, Callable[[object, int], object]] = {
    0: _produce,
    1: _fetch,
    2: _list_offsets,
    3: _metadata,
    8: _offset_commit,
    9: _offset_fetch,
    10: _just(k.FindCoordinatorResponse),
    11: _join_group,
    12: _just(k.HeartbeatResponse),
    13: _just(k.LeaveGroupResponse),
    14: _just(k.SyncGroupResponse),
    15: _describe_groups,
    16: _just(k.ListGroupsResponse),
    18: _just(k.ApiVersionsResponse),
    19: _create_topics,
    20: _delete_topics,
    22: _just(k.InitProducerIdResponse),
    32: _describe_configs,
}
