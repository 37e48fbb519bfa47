"""Every error Sluice can name, and the one table mapping wire error codes to exceptions.

Two families, as in h11:

* ``ProtocolError`` -- the framing or message rules were broken. ``LocalProtocolError`` means
  *we* broke them (a bug or misuse on this side); ``RemoteProtocolError`` means the *peer* did
  (garbage on the socket, an oversized frame). A protocol error ends the connection.
* ``ApiError`` -- a request was well formed but could not be served (unknown topic, offset out
  of range, corrupt batch...). Each subclass has a stable wire ``code``; the broker answers
  with the code and the connection carries on. ``retriable`` tells clients whether trying the
  same request again can succeed.

``error_for_code(code, message)`` turns a wire code back into the matching exception, so a
client raises exactly the class the broker raised.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base class of every error raised by Sluice code."""


class ProtocolError(SluiceError):
    """The framing or message rules were broken; the connection cannot continue."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids (a bug or misuse here)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (garbage, oversized frame, bad prefix)."""


class OversizedFrameError(RemoteProtocolError):
    """The peer announced a frame larger than this side's ``max_frame_bytes``.

    Raised as soon as the length prefix arrives, before any of the frame is buffered; ``size``
    is the announced ``frame_length`` so the broker can answer with ``FrameTooLargeError``.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds max_frame_bytes={limit}")
        self.size = size
        self.limit = limit


class ApiError(SluiceError):
    """A request could not be served; carries a stable wire ``code``."""

    code: int = -1
    retriable: bool = False
    # Set by protocol.messages.decode_request on an error about a request whose header it could
    # partly read, so the error response echoes them; -1 means unreadable.
    correlation_id: int = -1
    api: int = -1

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.default_message())
        self.message = message or self.default_message()

    @classmethod
    def default_message(cls) -> str:
        return cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__


class UnknownServerError(ApiError):
    """The broker hit an unexpected error while serving the request."""

    code = 1


class CorruptRecordError(ApiError):
    """A record batch failed validation (CRC, lengths, header fields)."""

    code = 2


class UnknownTopicOrPartitionError(ApiError):
    """The topic or partition does not exist on this broker."""

    code = 3


class OffsetOutOfRangeError(ApiError):
    """The requested offset is outside the partition's [log start, log end] range."""

    code = 4


class RecordTooLargeError(ApiError):
    """A batch is larger than the topic's max_message_bytes."""

    code = 5


class InvalidTopicError(ApiError):
    """The topic name is not valid (allowed: 1-249 chars of [A-Za-z0-9._-], not '.' or '..')."""

    code = 6


class TopicAlreadyExistsError(ApiError):
    """A topic with that name already exists."""

    code = 7


class InvalidRequestError(ApiError):
    """The request is malformed: missing or mistyped fields, bad values."""

    code = 8


class UnsupportedVersionError(ApiError):
    """The broker does not support this version of the API."""

    code = 9


class UnknownApiError(ApiError):
    """The broker does not know this API key."""

    code = 10


class InvalidConfigError(ApiError):
    """A topic or broker configuration value is invalid."""

    code = 11


class OutOfOrderSequenceError(ApiError):
    """An idempotent producer's batch sequence leaves a gap after the last one written."""

    code = 12


class ProducerFencedError(ApiError):
    """The producer epoch is older than the broker's: a newer instance took over this id."""

    code = 13


class UnknownProducerIdError(ApiError):
    """The broker holds no state for this producer id (never issued, or expired)."""

    code = 14


class StorageError(ApiError):
    """The broker could not write or read its log files (disk full, I/O error)."""

    code = 15
    retriable = True


class RequestTimedOutError(ApiError):
    """The request did not complete within its timeout."""

    code = 16
    retriable = True


class BrokerShuttingDownError(ApiError):
    """The broker is shutting down and no longer takes requests."""

    code = 17
    retriable = True


class InvalidPartitionsError(ApiError):
    """The partition count is invalid (must be 1..10000)."""

    code = 18


class InvalidTimestampError(ApiError):
    """A batch's timestamps are out of the accepted range."""

    code = 19


class FrameTooLargeError(ApiError):
    """A frame is larger than the receiver's max_frame_bytes."""

    code = 20


class TooManyConnectionsError(ApiError):
    """The broker is at its connection limit."""

    code = 21
    retriable = True


class NotLeaderError(ApiError):
    """This broker does not lead the partition: look its leader up again (clients do, and
    retry there)."""

    code = 22
    retriable = True


class UnknownTopicIdError(ApiError):
    """The topic id named is not the current one: that topic was deleted (and maybe recreated).

    Requests that carry a ``topic_id`` (produce, fetch, commit_offsets) name the incarnation
    of the topic they mean; a topic deleted and created again under the same name has a new
    id, so nothing meant for the old one is applied to the new one. Refresh metadata.
    """

    code = 23


class UnknownMemberIdError(ApiError):
    """The group coordinator does not know this member (left, expired or never joined)."""

    code = 30


class FencedMemberEpochError(ApiError):
    """The member epoch is stale: the member was fenced and must rejoin."""

    code = 31


class InvalidGroupIdError(ApiError):
    """The group id is empty or otherwise invalid."""

    code = 32


class GroupIdNotFoundError(ApiError):
    """No group with this id exists."""

    code = 33


class GroupNotEmptyError(ApiError):
    """The group has members; stop them before deleting the group."""

    code = 35


NONE = 0
# Codes retired, never to be given another meaning:
# 34 UnreleasedInstanceError -- server-side assignment revokes a partition before it assigns
#    it elsewhere, so no commit or assignment ever meets one still owned by another member.
# (22 NotLeaderError was retired while one broker led every partition; the clients' leader
# routing brought it back: they look the leaders up again when a broker answers it.)
RETIRED_CODES = frozenset({34})


def _build_table() -> dict[int, type[ApiError]]:
    """Codes belong to the direct subclasses of ApiError; finer subclasses share their parent's."""
    table: dict[int, type[ApiError]] = {}
    for cls in ApiError.__subclasses__():
        if cls.code in table or cls.code in RETIRED_CODES:
            raise AssertionError(f"error code {cls.code} of {cls.__name__} is taken or retired")
        table[cls.code] = cls
    return table


_BY_CODE = _build_table()


def error_for_code(code: int, message: str = "") -> ApiError:
    """Return the exception instance for a wire error ``code`` (never for ``NONE``)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return UnknownServerError(message or f"unknown error code {code}")
    return cls(message)


def code_for_error(exc: BaseException) -> int:
    """The wire code for an exception; anything that is not an ``ApiError`` is code 1."""
    return exc.code if isinstance(exc, ApiError) else UnknownServerError.code
