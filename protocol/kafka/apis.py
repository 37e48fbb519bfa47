"""The API table: every Kafka API the listener speaks, its versions, its compiled messages.

``versions`` are the versions with a schema here: requests at them decode, responses encode.
``advertised`` is what ApiVersions announces. Every API advertises a minimum of 0, even where
v0 has no schema (Metadata v0, Produce v0-2, Fetch v0-3, ListOffsets v0: before record batch
v2), because librdkafka before 2.11.1 enables features by matching exact versions
(reference/kafka-wire.md); a client picks the highest version both sides know, so none
sends those. Flexible versions (compact types, tagged fields) are needed by ApiVersions v3
only, which librdkafka and kafka-python open with.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.protocol.kafka import tables_admin as admin
from sluice.protocol.kafka import tables_core as core
from sluice.protocol.kafka import tables_groups as groups
from sluice.protocol.kafka.compiler import CompiledMessage, compile_message
from sluice.protocol.kafka.schema import Struct


@dataclass(frozen=True)
class Api:
    """One Kafka API: key, name, compiled request and response, version ranges."""

    key: int
    name: str
    request: CompiledMessage
    response: CompiledMessage
    advertised: tuple[int, int]

    @property
    def versions(self) -> range:
        return self.request.versions

    def flexible(self, version: int) -> bool:
        return version in self.request.flexible


def _api(key: int, name: str, request: Struct, response: Struct, lo: int, hi: int,
         flexible_from: int | None = None) -> Api:
    versions = range(lo, hi + 1)
    flexible = range(flexible_from, hi + 1) if flexible_from is not None else range(0)
    return Api(key, name, compile_message(request, versions, flexible),
               compile_message(response, versions, flexible), (0, hi))


API_VERSIONS = 18
APIS: dict[int, Api] = {api.key: api for api in (
    _api(0, "Produce", core.PRODUCE_REQUEST, core.PRODUCE_RESPONSE, 3, 8),
    _api(1, "Fetch", core.FETCH_REQUEST, core.FETCH_RESPONSE, 4, 11),
    _api(2, "ListOffsets", core.LIST_OFFSETS_REQUEST, core.LIST_OFFSETS_RESPONSE, 1, 5),
    _api(3, "Metadata", core.METADATA_REQUEST, core.METADATA_RESPONSE, 1, 8),
    _api(8, "OffsetCommit", groups.OFFSET_COMMIT_REQUEST, groups.OFFSET_COMMIT_RESPONSE, 0, 7),
    _api(9, "OffsetFetch", groups.OFFSET_FETCH_REQUEST, groups.OFFSET_FETCH_RESPONSE, 0, 5),
    _api(10, "FindCoordinator", groups.FIND_COORDINATOR_REQUEST,
         groups.FIND_COORDINATOR_RESPONSE, 0, 2),
    _api(11, "JoinGroup", groups.JOIN_GROUP_REQUEST, groups.JOIN_GROUP_RESPONSE, 0, 5),
    _api(12, "Heartbeat", groups.HEARTBEAT_REQUEST, groups.HEARTBEAT_RESPONSE, 0, 3),
    _api(13, "LeaveGroup", groups.LEAVE_GROUP_REQUEST, groups.LEAVE_GROUP_RESPONSE, 0, 3),
    _api(14, "SyncGroup", groups.SYNC_GROUP_REQUEST, groups.SYNC_GROUP_RESPONSE, 0, 3),
    _api(15, "DescribeGroups", groups.DESCRIBE_GROUPS_REQUEST,
         groups.DESCRIBE_GROUPS_RESPONSE, 0, 4),
    _api(16, "ListGroups", groups.LIST_GROUPS_REQUEST, groups.LIST_GROUPS_RESPONSE, 0, 2),
    _api(API_VERSIONS, "ApiVersions", core.API_VERSIONS_REQUEST, core.API_VERSIONS_RESPONSE,
         0, 3, flexible_from=3),
    _api(19, "CreateTopics", admin.CREATE_TOPICS_REQUEST, admin.CREATE_TOPICS_RESPONSE, 0, 4),
    _api(20, "DeleteTopics", admin.DELETE_TOPICS_REQUEST, admin.DELETE_TOPICS_RESPONSE, 0, 3),
    _api(22, "InitProducerId", core.INIT_PRODUCER_ID_REQUEST, core.INIT_PRODUCER_ID_RESPONSE,
         0, 1),
    _api(32, "DescribeConfigs", admin.DESCRIBE_CONFIGS_REQUEST,
         admin.DESCRIBE_CONFIGS_RESPONSE, 0, 3),
)}

_BY_CLASS: dict[type, tuple[Api, bool]] = {}  # message class -> (api, is_request)
for _a in APIS.values():
    _BY_CLASS[_a.request.cls] = (_a, True)
    _BY_CLASS[_a.response.cls] = (_a, False)


def api_of(message: object) -> tuple[Api, bool]:
    """``(api, is_request)`` for a top-level message, or ``KeyError``."""
    return _BY_CLASS[type(message)]


def api_versions_entries() -> list:
    """The ``api_keys`` of an ApiVersions response: every API with its advertised range."""
    entry = APIS[API_VERSIONS].response.cls.ApiVersion
    return [entry(api_key=a.key, min_version=a.advertised[0], max_version=a.advertised[1])
            for a in sorted(APIS.values(), key=lambda a: a.key)]
