"""Whole Kafka messages: request/response headers around the compiled bodies.

A request frame is ``api_key i16 | api_version i16 | correlation_id i32 | client_id
nullable string | (tagged fields, flexible versions) | body``; a response frame is
``correlation_id i32 | (tagged fields, flexible versions except ApiVersions) | body``.
Encoders return ``list[Piece]``: the size prefix and encoded bytes, with the record pieces
(bytes-likes, ``FileSlice``s) of each RECORDS field in their place, never copied.
"""

from __future__ import annotations

import struct

from sluice.protocol.errors import LocalProtocolError
from sluice.protocol.kafka.apis import API_VERSIONS, APIS, Api, api_of
from sluice.protocol.kafka.errors import (
    EncodeError,
    ErrorCode,
    KafkaRemoteError,
    MalformedMessageError,
    UnknownApiKeyError,
    UnsupportedApiVersionError,
)
from sluice.protocol.kafka.events import (
    RequestHeader,
    RequestReceived,
    UnsupportedApiVersionsRequest,
    header_from_wire,
)
from sluice.protocol.kafka.primitives import (
    BYTES_MAX,
    INT16,
    INT32,
    read_string,
    skip_tagged_fields,
    write_string,
)
from sluice.protocol.messages import Piece, piece_length

_REQUEST_PREFIX = struct.Struct(">hhi")  # api_key, api_version, correlation_id
# A request carries at most this many array items in all (checked before any is built):
# enough for a Fetch or OffsetCommit naming 10,000 partitions of 10 topics over, not for a
# frame of tiny items that would keep the event loop busy for seconds.
MAX_ITEMS = 100_000


def _tag(exc: KafkaRemoteError, correlation_id: int, api_key: int,
         api_version: int) -> KafkaRemoteError:
    """``exc`` with the header it concerns attached, for the listener's log line."""
    exc.correlation_id, exc.api_key, exc.api_version = correlation_id, api_key, api_version
    return exc


def response_version(api: Api, request_version: int) -> int:
    """The version a response to ``request_version`` is encoded at: the same, except an
    ApiVersions request at a version this side does not know, answered at v0."""
    if api.key == API_VERSIONS and request_version not in api.versions:
        return 0
    return request_version


# -- server side: requests in, responses out ----------------------------------------------------


def decode_request(
    frame: memoryview, max_items: int = MAX_ITEMS
) -> RequestReceived | UnsupportedApiVersionsRequest:
    """Decode one request frame (without its size prefix).

    Raises ``UnknownApiKeyError``, ``UnsupportedApiVersionError`` or
    ``MalformedMessageError`` (all ``KafkaRemoteError``: close the connection), with what
    could be read of the header attached. Records are views of ``frame``.
    """
    if len(frame) < _REQUEST_PREFIX.size:
        raise MalformedMessageError("request header", f"a frame of {len(frame)} bytes cannot "
                                                      "hold one")
    api_key, version, cid = _REQUEST_PREFIX.unpack_from(frame, 0)
    api = APIS.get(api_key)
    if api is None:
        raise UnknownApiKeyError(f"unknown API key {api_key} (v{version}, cid {cid})",
                                 correlation_id=cid, api_key=api_key, api_version=version)
    try:
        client_id, pos = read_string(frame, _REQUEST_PREFIX.size, nullable=True)
    except MalformedMessageError as exc:
        raise _tag(exc.within("client_id"), cid, api_key, version) from None
    header = header_from_wire(api_key, version, cid, client_id)
    decoder = api.request.decoders.get(version)
    if decoder is None:
        if api_key == API_VERSIONS:
            return UnsupportedApiVersionsRequest(header=header)
        advertised = api.advertised[0] <= version <= api.advertised[1]
        raise UnsupportedApiVersionError(
            f"{api.name} v{version} is not supported (v{api.versions[0]}-v{api.versions[-1]}"
            f"{'; older versions need message formats before record batch v2' if advertised else ''})",
            advertised=advertised, correlation_id=cid, api_key=api_key, api_version=version)
    try:
        if version in api.request.flexible:
            pos = skip_tagged_fields(frame, pos)
        request, pos = decoder(frame, pos, [max_items])
        if pos != len(frame):
            raise MalformedMessageError("", f"{len(frame) - pos} bytes left over after the body")
    except MalformedMessageError as exc:
        raise _tag(exc.within(f"{api.name}Request v{version}"), cid, api_key, version) from None
    return RequestReceived(header=header, request=request)


def encode_response(header: RequestHeader, response: object) -> list[Piece]:
    """The frame answering the request ``header`` with ``response`` (at the request's
    version; see ``response_version``). ``LocalProtocolError`` if it is not that API's
    response or cannot be encoded at that version."""
    api = api_for(response, want_request=False)
    if api.key != header.api_key:
        raise LocalProtocolError(f"a {type(response).__name__} cannot answer API "
                                 f"{header.api_key}")
    version = response_version(api, header.api_version)
    out = bytearray(8)
    INT32.pack_into(out, 4, header.correlation_id)
    if api.flexible(version) and api.key != API_VERSIONS:  # response header v1
        out.append(0)
    return _encode_body(api.response.encoders[version], response, out, version)


def unsupported_version_response(api_keys: list) -> object:
    """The ApiVersions response for ``UnsupportedApiVersionsRequest``: error 35 and the APIs
    (Kafka since 2.4 lists at least ApiVersions itself; clients retry at its max)."""
    return APIS[API_VERSIONS].response.cls(
        error_code=int(ErrorCode.UNSUPPORTED_VERSION), api_keys=api_keys)


# -- client side: requests out, responses in ----------------------------------------------------


def encode_request(header: RequestHeader, request: object) -> list[Piece]:
    """The frame of ``request`` under ``header`` (request header v1, v2 if flexible)."""
    api = api_for(request, want_request=True)
    if api.key != header.api_key or header.api_version not in api.versions:
        raise LocalProtocolError(f"{type(request).__name__} cannot travel as API "
                                 f"{header.api_key} v{header.api_version}")
    out = bytearray(4)
    out += _REQUEST_PREFIX.pack(header.api_key, header.api_version, header.correlation_id)
    try:
        write_string(out, header.client_id, nullable=True)
    except ValueError as exc:
        raise EncodeError("client_id", str(exc)) from None
    if api.flexible(header.api_version):
        out.append(0)
    return _encode_body(api.request.encoders[header.api_version], request, out,
                        header.api_version)


def decode_response(frame: memoryview, header: RequestHeader) -> tuple[int, object]:
    """``(correlation_id, response)`` from a frame answering the request ``header``.
    ``MalformedMessageError`` (the broker's fault) if it does not decode."""
    api = APIS[header.api_key]
    version = header.api_version
    try:
        if len(frame) < 4:
            raise MalformedMessageError("response header", f"a frame of {len(frame)} bytes "
                                                           "cannot hold one")
        (cid,) = INT32.unpack_from(frame, 0)
        pos = 4
        if api.key == API_VERSIONS:
            # An UNSUPPORTED_VERSION answer comes at v0, whatever was asked.
            if len(frame) >= 6 and INT16.unpack_from(frame, 4)[0] == ErrorCode.UNSUPPORTED_VERSION:
                version = 0
        elif api.flexible(version):
            pos = skip_tagged_fields(frame, pos)
        response, pos = api.response.decoders[version](frame, pos, [float("inf")])
        if pos != len(frame):
            raise MalformedMessageError("", f"{len(frame) - pos} bytes left over after the body")
    except MalformedMessageError as exc:
        raise _tag(exc.within(f"{api.name}Response v{version}"), header.correlation_id,
                   header.api_key, header.api_version) from None
    return cid, response


# -- shared ---------------------------------------------------------------------------------------


def api_for(message: object, want_request: bool) -> Api:
    """The API of a top-level request (``want_request``) or response; else
    ``LocalProtocolError``."""
    try:
        api, is_request = api_of(message)
    except KeyError:
        raise LocalProtocolError(f"{type(message).__name__} is not a Kafka message") from None
    if is_request != want_request:
        raise LocalProtocolError(f"{type(message).__name__} is a "
                                 f"{'request' if is_request else 'response'}")
    return api


def _encode_body(encoder, message: object, out: bytearray, version: int) -> list[Piece]:
    """Append ``message`` to ``out`` (4 bytes reserved for the size, then the header), set
    the size, and cut the bytes at each record hole."""
    holes: list = []
    try:
        encoder(message, out, holes)
    except EncodeError as exc:
        raise exc.within(f"{type(message).__name__} v{version}") from None
    size = len(out) - 4 + sum(piece_length(p) for _, pieces in holes for p in pieces)
    if size > BYTES_MAX:
        raise EncodeError(type(message).__name__, f"a frame of {size} bytes exceeds {BYTES_MAX}")
    INT32.pack_into(out, 0, size)
    if not holes:
        return [out]
    view = memoryview(out)
    frame: list[Piece] = []
    start = 0
    for offset, pieces in holes:
        frame.append(view[start:offset])
        frame.extend(p for p in pieces if piece_length(p))
        start = offset
    if start < len(out):
        frame.append(view[start:])
    return frame
