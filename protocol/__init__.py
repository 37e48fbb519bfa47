"""Sluice's wire protocol, sans-IO: bytes in, events out; messages in, bytes and file slices out.

See docs/PROTOCOL.md. Nothing here touches a socket, a file descriptor or trio.

The names below are loaded on first use, so importing one submodule (say
``sluice.protocol.errors``) does not pay for building every message class.
"""

from sluice.protocol.lazy import lazy_exports

_EXPORTS = {
    "sluice.protocol.connection": (
        "BadRequest", "ClientConnection", "RequestReceived", "ResponseReceived",
        "ServerConnection",
    ),
    "sluice.protocol.errors": (
        "ApiError", "LocalProtocolError", "OversizedFrameError", "ProtocolError",
        "RemoteProtocolError",
    ),
    "sluice.protocol.framing": (
        "CLOSED", "NEED_DATA", "Frame", "FrameDecoder", "Signal", "encode_frame",
    ),
    "sluice.protocol.messages": (
        "API_VERSIONS", "APIS", "Api", "InvalidFieldError", "decode_request", "decode_response",
        "encode_error", "encode_request", "encode_response", "records_length",
    ),
    "sluice.protocol.slices": ("FileSlice",),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
