"""Sluice's wire protocol, sans-IO: bytes in, events out; messages in, bytes and file slices out.

See docs/PROTOCOL.md. Nothing here touches a socket, a file descriptor or trio.
"""

from sluice.protocol.connection import (
    BadRequest,
    ClientConnection,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
)
from sluice.protocol.errors import (
    ApiError,
    LocalProtocolError,
    OversizedFrameError,
    ProtocolError,
    RemoteProtocolError,
)
from sluice.protocol.framing import CLOSED, NEED_DATA, Frame, FrameDecoder, Signal, encode_frame
from sluice.protocol.messages import (
    API_VERSIONS,
    APIS,
    Api,
    InvalidFieldError,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    records_length,
)
from sluice.protocol.slices import FileSlice

__all__ = [
    "API_VERSIONS",
    "APIS",
    "CLOSED",
    "NEED_DATA",
    "Api",
    "ApiError",
    "BadRequest",
    "ClientConnection",
    "FileSlice",
    "Frame",
    "FrameDecoder",
    "InvalidFieldError",
    "LocalProtocolError",
    "OversizedFrameError",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "ServerConnection",
    "Signal",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_frame",
    "encode_request",
    "encode_response",
    "records_length",
]
