"""Kafka's wire protocol, sans-IO: what the Kafka listener speaks (docs/KAFKA-PROTOCOL.md).

Bytes in, events out; messages in, bytes and file slices out. Nothing here touches a socket,
a file descriptor or trio. The APIs and versions are those of ``apis.APIS``; their message
classes are in ``messages``.
"""

from sluice.protocol.kafka.apis import APIS, Api, api_versions_entries
from sluice.protocol.kafka.codec import (
    MAX_ITEMS,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    unsupported_version_response,
)
from sluice.protocol.kafka.connection import KafkaClientConnection, KafkaServerConnection
from sluice.protocol.kafka.errors import (
    SLUICE_TO_KAFKA,
    EncodeError,
    ErrorCode,
    FrameSizeError,
    KafkaRemoteError,
    MalformedMessageError,
    UnknownApiKeyError,
    UnsupportedApiVersionError,
    kafka_error_code,
)
from sluice.protocol.kafka.events import (
    RequestHeader,
    RequestReceived,
    ResponseReceived,
    UnsupportedApiVersionsRequest,
)
from sluice.protocol.kafka.framing import MAX_FRAME_BYTES, KafkaFrameDecoder

__all__ = [
    "APIS",
    "MAX_FRAME_BYTES",
    "MAX_ITEMS",
    "SLUICE_TO_KAFKA",
    "Api",
    "EncodeError",
    "ErrorCode",
    "FrameSizeError",
    "KafkaClientConnection",
    "KafkaFrameDecoder",
    "KafkaRemoteError",
    "KafkaServerConnection",
    "MalformedMessageError",
    "RequestHeader",
    "RequestReceived",
    "ResponseReceived",
    "UnknownApiKeyError",
    "UnsupportedApiVersionError",
    "UnsupportedApiVersionsRequest",
    "api_versions_entries",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "kafka_error_code",
    "unsupported_version_response",
]
