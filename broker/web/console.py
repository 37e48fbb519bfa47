"""The console's JSON API (``/api/...``): the broker, topics and groups as JSON, and the two
writes the console offers -- create a topic, produce a test record -- through the same domain
operations the protocol adapters use.

Every input is checked before anything happens (``HttpError`` 400 naming the field); the
domain's own refusals keep their message, with a status saying whose fault it is: 404 for a
topic or partition that does not exist, 409 for a topic that does, 503 for what the broker
cannot do now (no descriptor left, a storage error, shutting down), 400 for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sluice.broker.domain.partition import Partition
from sluice.broker.domain.producing import ACKS_ALL, ProduceTarget
from sluice.broker.web.health import health
from sluice.broker.web.http import HttpError, HttpRequest, HttpResponse
from sluice.broker.web.metrics import VERSION
from sluice.broker.web.view import BrokerView
from sluice.protocol.batch import build_batch
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.errors import (
    ApiError,
    BrokerShuttingDownError,
    GroupIdNotFoundError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)

PRODUCE_TIMEOUT_MS = 10_000


def status_of(error: ApiError) -> int:
    """The HTTP status a domain refusal is answered with."""
    if isinstance(error, UnknownTopicOrPartitionError | UnknownTopicIdError | GroupIdNotFoundError):
        return 404
    if isinstance(error, TopicAlreadyExistsError):
        return 409
    if isinstance(error, StorageError | BrokerShuttingDownError):
        return 503
    return 400


def refused(error: ApiError) -> HttpError:
    return HttpError(status_of(error), error.message)


class ConsoleApi:
    """The ``/api`` endpoints over one ``BrokerView``."""

    def __init__(self, view: BrokerView) -> None:
        self._view = view
        self._broker = view.broker

    # -- reading -----------------------------------------------------------------------------

    def broker(self, request: HttpRequest) -> HttpResponse:
        view, broker = self._view, self._broker
        return HttpResponse.of_json({
            "broker_id": broker.broker_id, "version": VERSION, "listeners": view.listeners,
            "uptime_s": round(time.time() - view.started, 3), "health": health(view),
            "connections": view.connections(), "topics": len(broker.topics.names()),
            "read_only": view.config.http_read_only, "now_ms": wall_clock_ms(),
        })

    def topics(self, request: HttpRequest) -> HttpResponse:
        """Every user topic with its partitions (offline ones with the reason)."""
        topics = self._broker.topics
        out = []
        for name in topics.names():
            info = topics.topic(name)
            if info is None:  # deleted since it was listed
                continue
            partitions = [self._partition(name, index) for index in range(info.config.partitions)]
            out.append({"name": name, "topic_id": info.topic_id,
                        "configs": info.config.to_mapping(), "partitions": partitions})
        return HttpResponse.of_json({"now_ms": wall_clock_ms(), "topics": out})

    def _partition(self, topic: str, index: int) -> dict:
        partition = self._broker.topics.find(topic, index)
        if partition is None:
            offline = self._broker.store.offline.get((topic, index))
            return {"partition": index, "offline": offline[1] if offline else "not open"}
        return partition_json(partition)

    def groups(self, request: HttpRequest) -> HttpResponse:
        """Every group: members with their assignments, committed offsets with their lag."""
        coordinator = self._broker.groups
        out = []
        for summary in coordinator.list_groups():
            try:
                group = coordinator.describe(summary.group_id)
            except GroupIdNotFoundError:  # gone since it was listed
                continue
            offsets = [{"topic": o.topic, "partition": o.partition, "committed": o.offset,
                        "log_end_offset": o.log_end_offset, "lag": o.lag} for o in group.offsets]
            out.append({
                "group_id": group.group_id, "kind": group.kind, "state": group.state,
                "epoch": group.epoch,
                "members": [{"member_id": member.member_id, "client_id": member.client_id,
                             "assignment": sorted([t, p] for t, p in member.assignment)}
                            for member in group.members],
                "offsets": offsets,
                "total_lag": sum(o["lag"] for o in offsets if o["lag"] > 0),
            })
        return HttpResponse.of_json({"now_ms": wall_clock_ms(), "groups": out})

    # -- writing -----------------------------------------------------------------------------

    def create_topic(self, request: HttpRequest) -> HttpResponse:
        """``{"name": ..., "partitions": N?, "configs": {key: int}?}`` -> 201."""
        body = fields_of(request, required={"name"}, optional={"partitions", "configs"})
        name = text_field(body, "name")
        partitions = body.get("partitions")
        if partitions is not None and not is_int(partitions):
            raise HttpError(400, f"partitions must be an integer, got {partitions!r}")
        configs = body.get("configs") or {}
        if not isinstance(configs, dict) or not all(
                isinstance(k, str) and is_int(v) for k, v in configs.items()):
            raise HttpError(400, "configs must be an object of integer settings, e.g. "
                                 '{"retention_ms": 3600000}')
        self._check_serving()
        try:
            info = self._broker.topics.create(name, partitions, configs)
        except ApiError as exc:
            raise refused(exc) from None
        return HttpResponse.of_json(
            {"name": name, "topic_id": info.topic_id, "partitions": info.config.partitions}, 201)

    async def produce(self, request: HttpRequest, name: str) -> HttpResponse:
        """``{"value": str|null, "key": str|null?, "headers": [[str, str]]?, "partition":
        N?}`` -> 201 with its partition and offset, once written with ``acks=all``."""
        body = fields_of(request, required={"value"}, optional={"key", "headers", "partition"})
        value = optional_text(body, "value")
        key = optional_text(body, "key")
        headers = body.get("headers") or []
        if not isinstance(headers, list) or not all(
                isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
                for h in headers):
            raise HttpError(400, 'headers must be a list of [name, value] strings, e.g. [["source", "console"]]')
        partition = body.get("partition", 0)
        if not is_int(partition) or partition < 0:
            raise HttpError(400, f"partition must be an integer >= 0, got {partition!r}")
        self._check_serving()
        batch = build_batch([(key, value, [(k, v.encode()) for k, v in headers], wall_clock_ms())])
        produce = self._broker.produce([ProduceTarget(name, partition, batch)], ACKS_ALL)
        if not produce.append_inline():
            await produce.append_rest()
        if produce.must_wait:
            await produce.wait_committed(PRODUCE_TIMEOUT_MS)
        [result] = produce.results
        if result.error is not None:
            raise refused(result.error)
        return HttpResponse.of_json(
            {"topic": name, "partition": partition, "offset": result.base_offset}, 201)

    def _check_serving(self) -> None:
        if self._broker.stopping:
            raise refused(BrokerShuttingDownError("the broker is shutting down"))


def partition_json(partition: Partition) -> dict:
    stats = partition.stats
    return {
        "partition": partition.index, "log_start_offset": partition.log_start_offset,
        "log_end_offset": partition.high_watermark, "size_bytes": partition.size_bytes,
        "segments": partition.segment_count, "records_in": stats.records_in,
        "bytes_in": stats.bytes_in, "records_out": stats.offsets_out, "bytes_out": stats.bytes_out,
    }


# -- checking input -------------------------------------------------------------------------------


def fields_of(request: HttpRequest, *, required: set[str], optional: set[str]) -> Mapping:
    """The request's JSON object, with every required field and no unknown one."""
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    missing = sorted(required - body.keys())
    if missing:
        raise HttpError(400, f"missing field(s): {', '.join(missing)}")
    unknown = sorted(body.keys() - required - optional)
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(required | optional))})")
    return body


def is_int(value: object) -> bool:
    return type(value) is int


def text_field(body: Mapping, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"{name} must be a non-empty string, got {value!r}")
    return value


def optional_text(body: Mapping, name: str) -> bytes | None:
    """A string field as UTF-8 bytes, or None (absent or null)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpError(400, f"{name} must be a string or null, got {value!r}")
    return value.encode()
