"""Sluice error -> Kafka error: the table covers every Sluice code, and the version and API
rules Kafka applies hold."""

import re
from pathlib import Path

import pytest
from sluice.protocol import errors as sluice
from sluice.protocol.kafka.errors import (
    GROUP_APIS,
    SLUICE_TO_KAFKA,
    ErrorCode,
    MalformedMessageError,
    kafka_error_code,
)

PRODUCE, FETCH, METADATA, OFFSET_COMMIT, JOIN_GROUP = 0, 1, 3, 8, 11


def _api_errors(cls=sluice.ApiError):
    for sub in cls.__subclasses__():
        yield sub
        yield from _api_errors(sub)


def test_every_sluice_code_has_a_kafka_code():
    codes = {cls.code for cls in _api_errors()} | {sluice.NONE}
    assert codes <= set(SLUICE_TO_KAFKA), sorted(codes - set(SLUICE_TO_KAFKA))


def test_retriable_sluice_errors_stay_retriable_for_kafka_clients():
    # Kafka's retriable codes among those used (org.apache.kafka.common.errors.Retriable*).
    retriable = {ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT,
                 ErrorCode.KAFKA_STORAGE_ERROR, ErrorCode.REBALANCE_IN_PROGRESS,
                 ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NETWORK_EXCEPTION}
    for cls in _api_errors():
        if cls.retriable:
            assert SLUICE_TO_KAFKA[cls.code] in retriable, cls.__name__


@pytest.mark.parametrize("error, api, version, expected", [
    (sluice.UnknownTopicOrPartitionError(), FETCH, 11, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    (sluice.OffsetOutOfRangeError(), FETCH, 11, ErrorCode.OFFSET_OUT_OF_RANGE),
    (sluice.CorruptRecordError(), PRODUCE, 8, ErrorCode.CORRUPT_MESSAGE),
    (sluice.StorageError(), PRODUCE, 8, ErrorCode.KAFKA_STORAGE_ERROR),
    (sluice.StorageError(), PRODUCE, 3, ErrorCode.NOT_LEADER_OR_FOLLOWER),  # before v4
    (sluice.StorageError(), FETCH, 5, ErrorCode.NOT_LEADER_OR_FOLLOWER),  # before v6
    (sluice.StorageError(), FETCH, 6, ErrorCode.KAFKA_STORAGE_ERROR),
    (sluice.StorageError(), OFFSET_COMMIT, 7, ErrorCode.COORDINATOR_NOT_AVAILABLE),
    (sluice.BrokerShuttingDownError(), JOIN_GROUP, 5, ErrorCode.COORDINATOR_NOT_AVAILABLE),
    (sluice.BrokerShuttingDownError(), METADATA, 8, ErrorCode.NOT_LEADER_OR_FOLLOWER),
    (sluice.FencedMemberEpochError(), OFFSET_COMMIT, 7, ErrorCode.ILLEGAL_GENERATION),
    (sluice.ProducerFencedError(), PRODUCE, 8, ErrorCode.INVALID_PRODUCER_EPOCH),
    (ValueError("a bug"), METADATA, 8, ErrorCode.UNKNOWN_SERVER_ERROR),
    (sluice.InvalidTopicError.code, METADATA, 8, ErrorCode.INVALID_TOPIC_EXCEPTION),
    (999, METADATA, 8, ErrorCode.UNKNOWN_SERVER_ERROR),
    (0, FETCH, 4, ErrorCode.NONE),
])
def test_kafka_error_code(error, api, version, expected):
    assert kafka_error_code(error, api, version) is expected


def test_group_apis_are_the_coordinators():
    assert GROUP_APIS == {8, 9, 10, 11, 12, 13, 14, 15, 16}


def test_malformed_paths_compose():
    inner = MalformedMessageError("name", "string length -2 is negative")
    outer = inner.within("topics[3]").within("MetadataRequest v8")
    assert outer.path == "MetadataRequest v8.topics[3].name"
    assert str(outer) == "MetadataRequest v8.topics[3].name: string length -2 is negative"
    assert MalformedMessageError("", "x").within("a").path == "a"
    assert MalformedMessageError("[2]", "x").within("a").path == "a[2]"


def test_the_documented_table_is_the_code():
    doc = (Path(__file__).parents[2] / "docs" / "KAFKA-PROTOCOL.md").read_text()
    section = doc.split("## Sluice error -> Kafka error")[1].split("\n## ")[0]
    rows = re.findall(r"^\| \w+ \((-?\d+)\) \| (\w+) \((-?\d+)\) \|$", section, re.M)
    documented = {int(sluice_code): (name, int(code)) for sluice_code, name, code in rows}
    assert documented == {k: (v.name, int(v)) for k, v in SLUICE_TO_KAFKA.items()}
