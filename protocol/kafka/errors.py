"""Kafka's error codes, the Kafka port's protocol errors, and Sluice code -> Kafka code.

Two families, as in h11 and ``sluice.protocol.errors``:

* ``KafkaRemoteError`` (a ``RemoteProtocolError``): the peer broke the wire rules -- a frame
  size out of bounds, a field cut short, an unknown API key, a version outside the advertised
  range. Kafka answers none of these: it closes the connection (``RequestContext.parseRequest``
  turns any parse failure into ``InvalidRequestException``, and the socket server closes the
  channel; librdkafka's mock broker does the same). The one exception is ApiVersions at a
  version the broker does not know, which is answered (see ``codec``), so it is an event,
  not an error.
* ``LocalProtocolError`` (from ``sluice.protocol.errors``): this side tried to encode
  something the schema cannot carry, or to answer out of turn.

``ErrorCode`` lists the Kafka codes the listener needs. ``kafka_error_code`` maps a Sluice
``ApiError`` (or its wire code) to the code a Kafka client understands for a given API and
version; ``SLUICE_TO_KAFKA`` is the table behind it (docs/KAFKA-PROTOCOL.md shows it).
"""

from __future__ import annotations

import enum

from sluice.protocol import errors as sluice
from sluice.protocol.errors import LocalProtocolError, RemoteProtocolError


class ErrorCode(enum.IntEnum):
    """Kafka's wire error codes (``org.apache.kafka.common.protocol.Errors``), the subset a
    broker serving the APIs of docs/KAFKA-PROTOCOL.md answers with."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_SASL_MECHANISM = 33
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    UNSUPPORTED_COMPRESSION_TYPE = 76
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87
    PRODUCER_FENCED = 90
    UNKNOWN_TOPIC_ID = 100


def join_path(prefix: str, path: str) -> str:
    """``prefix`` and the field ``path`` below it: ``topics`` + ``[0].name``, ``a`` + ``b``."""
    if not path:
        return prefix
    return f"{prefix}{'' if path[0] == '[' else '.'}{path}"


# -- the peer broke the wire rules: Kafka closes the connection ------------------------------


class KafkaRemoteError(RemoteProtocolError):
    """The Kafka peer broke the wire rules; close the connection.

    ``correlation_id``, ``api_key`` and ``api_version`` are what could be read of the request
    header (-1 when not), for the log line the listener writes before closing.
    """

    def __init__(
        self, message: str, *, correlation_id: int = -1, api_key: int = -1, api_version: int = -1
    ) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.api_version = api_version


class FrameSizeError(KafkaRemoteError):
    """A frame's 4-byte size prefix is negative or larger than ``max_frame_bytes``.

    Raised as soon as the prefix arrives, before any of the frame is buffered.
    """

    def __init__(self, size: int, limit: int) -> None:
        problem = "is negative" if size < 0 else f"exceeds max_frame_bytes={limit}"
        super().__init__(f"frame size {size} {problem}")
        self.size = size
        self.limit = limit


class UnknownApiKeyError(KafkaRemoteError):
    """The request names an API key this broker does not implement."""


class UnsupportedApiVersionError(KafkaRemoteError):
    """The request's version is outside what this broker decodes for its API.

    ``advertised`` tells whether ApiVersions announced the version (Sluice advertises a
    minimum of 0 for every API, for librdkafka's feature checks, but has no schema for the
    versions before v2 record batches; a client that really sends one is closed on).
    """

    def __init__(self, message: str, *, advertised: bool, **header: int) -> None:
        super().__init__(message, **header)
        self.advertised = advertised


class MalformedMessageError(KafkaRemoteError):
    """A frame does not decode against its schema: a field cut short, a length or count out
    of bounds, invalid UTF-8, a null where none is allowed, bytes left over. ``path`` locates
    the field (``topic_data[0].partition_data[2].records``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem

    def within(self, prefix: str) -> MalformedMessageError:
        """The same error seen from the enclosing field ``prefix``."""
        return MalformedMessageError(join_path(prefix, self.path), self.problem)


# -- Sluice error -> Kafka error --------------------------------------------------------------

_E = ErrorCode
# Every Sluice ApiError code and the Kafka code a Kafka client reacts to in the same way
# (retriable ones stay retriable). tests/protocol/test_kafka_errors.py checks every code of
# sluice.protocol.errors has an entry.
SLUICE_TO_KAFKA: dict[int, ErrorCode] = {
    sluice.NONE: _E.NONE,
    sluice.UnknownServerError.code: _E.UNKNOWN_SERVER_ERROR,
    sluice.CorruptRecordError.code: _E.CORRUPT_MESSAGE,
    sluice.UnknownTopicOrPartitionError.code: _E.UNKNOWN_TOPIC_OR_PARTITION,
    sluice.OffsetOutOfRangeError.code: _E.OFFSET_OUT_OF_RANGE,
    sluice.RecordTooLargeError.code: _E.MESSAGE_TOO_LARGE,
    sluice.InvalidTopicError.code: _E.INVALID_TOPIC_EXCEPTION,
    sluice.TopicAlreadyExistsError.code: _E.TOPIC_ALREADY_EXISTS,
    sluice.InvalidRequestError.code: _E.INVALID_REQUEST,
    sluice.UnsupportedVersionError.code: _E.UNSUPPORTED_VERSION,
    # Kafka has no "unknown API" code (it closes the connection); as an answer, this is it.
    sluice.UnknownApiError.code: _E.UNSUPPORTED_VERSION,
    sluice.InvalidConfigError.code: _E.INVALID_CONFIG,
    sluice.OutOfOrderSequenceError.code: _E.OUT_OF_ORDER_SEQUENCE_NUMBER,
    # An idempotent (non-transactional) producer's stale epoch: what Kafka's Produce answers.
    sluice.ProducerFencedError.code: _E.INVALID_PRODUCER_EPOCH,
    sluice.UnknownProducerIdError.code: _E.UNKNOWN_PRODUCER_ID,
    sluice.StorageError.code: _E.KAFKA_STORAGE_ERROR,
    sluice.RequestTimedOutError.code: _E.REQUEST_TIMED_OUT,
    # Retriable and makes clients refresh metadata, as when a Kafka leader shuts down.
    sluice.BrokerShuttingDownError.code: _E.NOT_LEADER_OR_FOLLOWER,
    sluice.InvalidPartitionsError.code: _E.INVALID_PARTITIONS,
    sluice.InvalidTimestampError.code: _E.INVALID_TIMESTAMP,
    # Kafka closes the connection for both; as an answer, the nearest codes (the second
    # retriable, as Sluice's is: "disconnected, try again").
    sluice.FrameTooLargeError.code: _E.MESSAGE_TOO_LARGE,
    sluice.TooManyConnectionsError.code: _E.NETWORK_EXCEPTION,
    sluice.NotLeaderError.code: _E.NOT_LEADER_OR_FOLLOWER,
    # A request naming a deleted incarnation of a topic (KIP-516's error, retriable).
    sluice.UnknownTopicIdError.code: _E.UNKNOWN_TOPIC_ID,
    sluice.UnknownMemberIdError.code: _E.UNKNOWN_MEMBER_ID,
    # The classic protocol fences stale members by generation.
    sluice.FencedMemberEpochError.code: _E.ILLEGAL_GENERATION,
    sluice.InvalidGroupIdError.code: _E.INVALID_GROUP_ID,
    sluice.GroupIdNotFoundError.code: _E.GROUP_ID_NOT_FOUND,
    sluice.GroupNotEmptyError.code: _E.NON_EMPTY_GROUP,
}

# API keys whose errors come from the group coordinator: there, "this broker cannot serve it
# now" is COORDINATOR_NOT_AVAILABLE, which makes clients look the coordinator up again.
GROUP_APIS = frozenset({8, 9, 10, 11, 12, 13, 14, 15, 16})
_COORDINATOR_UNAVAILABLE = frozenset(
    {_E.NOT_LEADER_OR_FOLLOWER, _E.KAFKA_STORAGE_ERROR, _E.NETWORK_EXCEPTION}
)


def kafka_error_code(error: BaseException | int, api_key: int, api_version: int) -> ErrorCode:
    """The Kafka code to answer ``error`` (an exception or a Sluice wire code) with, in a
    response of ``api_key`` at ``api_version``.

    Anything that is not a Sluice ``ApiError`` is UNKNOWN_SERVER_ERROR. Version rules as in
    Kafka: Produce before v4 and Fetch before v6 predate KAFKA_STORAGE_ERROR and get
    NOT_LEADER_OR_FOLLOWER instead; group APIs get COORDINATOR_NOT_AVAILABLE for "this broker
    cannot serve it now".
    """
    code = error if isinstance(error, int) else sluice.code_for_error(error)
    kafka = SLUICE_TO_KAFKA.get(code, _E.UNKNOWN_SERVER_ERROR)
    if api_key in GROUP_APIS and kafka in _COORDINATOR_UNAVAILABLE:
        return _E.COORDINATOR_NOT_AVAILABLE
    if kafka is _E.KAFKA_STORAGE_ERROR and (
        (api_key == 0 and api_version < 4) or (api_key == 1 and api_version < 6)
    ):
        return _E.NOT_LEADER_OR_FOLLOWER
    return kafka


# -- this side tried to encode what the schema cannot carry ----------------------------------


class EncodeError(LocalProtocolError):
    """A message cannot be encoded at the requested version (a null where that version allows
    none, a string over 32,767 bytes, an int out of range); ``path`` locates the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem

    def within(self, prefix: str) -> EncodeError:
        return EncodeError(join_path(prefix, self.path), self.problem)
