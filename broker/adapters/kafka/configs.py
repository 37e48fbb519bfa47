"""Topic and broker settings under Kafka's names, for CreateTopics and DescribeConfigs.

A Sluice topic setting has a Kafka name (``retention_ms`` is ``retention.ms``); a few Kafka
settings describe what Sluice always does (``cleanup.policy=delete``: no compaction) and are
accepted only at that value. Broker settings are shown under the names of Kafka's broker
settings they correspond to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sluice.broker.config import BrokerConfig
from sluice.broker.domain.groups.classic import MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS
from sluice.broker.domain.topics import TopicRegistry
from sluice.protocol.errors import (
    InvalidConfigError,
    InvalidRequestError,
    UnknownTopicOrPartitionError,
)
from sluice.protocol.kafka import messages as k

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
# DescribeConfigs' config_source values and config_type values (Kafka's enums).
SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_LONG = 1, 2, 3, 5

# Kafka topic setting -> Sluice topic setting (TopicConfig field).
TOPIC_SETTINGS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "max.message.bytes": "max_message_bytes",
    "index.interval.bytes": "index_interval_bytes",
}
_INT_SETTINGS = {"segment.bytes", "max.message.bytes", "index.interval.bytes"}
# Kafka topic settings whose one value is what Sluice does.
FIXED_TOPIC_SETTINGS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
}


class Setting(NamedTuple):
    name: str
    value: str
    read_only: bool
    source: int
    kind: int


def topic_overrides(configs: Iterable[tuple[str, str | None]]) -> dict[str, int]:
    """Sluice topic settings from CreateTopics' ``(name, value)`` pairs (``InvalidConfigError``
    naming the first one that has no Sluice meaning or a value it cannot take)."""
    out = {}
    for name, value in configs:
        fixed = FIXED_TOPIC_SETTINGS.get(name)
        if fixed is not None:
            if value not in (None, fixed):
                raise InvalidConfigError(f"{name}={value}: Sluice topics have {name}={fixed} only")
            continue
        field = TOPIC_SETTINGS.get(name)
        if field is None:
            known = ", ".join(sorted([*TOPIC_SETTINGS, *FIXED_TOPIC_SETTINGS]))
            raise InvalidConfigError(f"unknown topic config {name!r}; known: {known}")
        try:
            out[field] = int(value)
        except (TypeError, ValueError):
            raise InvalidConfigError(f"{name}={value!r}: must be an integer") from None
    return out


def topic_settings(topics: TopicRegistry, name: str, config: BrokerConfig) -> list[Setting]:
    """Every setting of topic ``name`` under Kafka's names, with where its value comes from."""
    info = topics.topic(name)
    if info is None:
        raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
    values = info.config.to_mapping()
    defaults = topics.defaults.to_mapping()
    out = []
    for kafka_name, field in TOPIC_SETTINGS.items():
        if values[field] != defaults[field]:
            source = SOURCE_TOPIC
        elif field in config.topic_defaults:
            source = SOURCE_STATIC_BROKER
        else:
            source = SOURCE_DEFAULT
        kind = TYPE_INT if kafka_name in _INT_SETTINGS else TYPE_LONG
        out.append(Setting(kafka_name, str(values[field]), False, source, kind))
    out += [Setting(n, v, True, SOURCE_DEFAULT, TYPE_STRING) for n, v in FIXED_TOPIC_SETTINGS.items()]
    return out


def broker_settings(topics: TopicRegistry, config: BrokerConfig) -> list[Setting]:
    """The broker's settings that Kafka's tools ask about, under Kafka's broker names."""
    defaults = topics.defaults
    static = [
        ("broker.id", config.broker_id, TYPE_INT),
        ("num.partitions", defaults.partitions, TYPE_INT),
        ("log.segment.bytes", defaults.segment_bytes, TYPE_INT),
        ("log.roll.ms", defaults.segment_ms, TYPE_LONG),
        ("log.retention.ms", defaults.retention_ms, TYPE_LONG),
        ("log.retention.bytes", defaults.retention_bytes, TYPE_LONG),
        ("message.max.bytes", defaults.max_message_bytes, TYPE_INT),
        ("log.index.interval.bytes", defaults.index_interval_bytes, TYPE_INT),
        ("socket.request.max.bytes", config.max_frame_bytes, TYPE_INT),
        ("offsets.retention.minutes", config.offsets_retention_ms // 60_000, TYPE_INT),
        ("group.min.session.timeout.ms", MIN_SESSION_TIMEOUT_MS, TYPE_INT),
        ("group.max.session.timeout.ms", MAX_SESSION_TIMEOUT_MS, TYPE_INT),
    ]
    out = [Setting(n, str(v), True, SOURCE_STATIC_BROKER, kind) for n, v, kind in static]
    out += [Setting("auto.create.topics.enable", "false", True, SOURCE_DEFAULT, TYPE_BOOLEAN),
            Setting("log.cleanup.policy", "delete", True, SOURCE_DEFAULT, TYPE_STRING)]
    return out


def described(resource: k.DescribeConfigsRequest.DescribeConfigsResource, topics: TopicRegistry,
              config: BrokerConfig) -> list[Setting]:
    """The settings a DescribeConfigs resource asks for (all, or the keys it names)."""
    if resource.resource_type == RESOURCE_TOPIC:
        settings = topic_settings(topics, resource.resource_name, config)
    elif resource.resource_type == RESOURCE_BROKER:
        if resource.resource_name not in ("", str(config.broker_id)):
            raise InvalidRequestError(f"no broker {resource.resource_name!r}: this is broker "
                                      f"{config.broker_id}")
        settings = broker_settings(topics, config)
    else:
        raise InvalidRequestError(f"resource type {resource.resource_type} is not described "
                                  "(topics: 2, brokers: 4)")
    if resource.configuration_keys is None:
        return settings
    wanted = set(resource.configuration_keys)
    return [s for s in settings if s.name in wanted]
