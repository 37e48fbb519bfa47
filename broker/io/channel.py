"""``Channel``: one connection's bytes, whatever carries them.

Two implementations: ``sockets.SocketChannel``, the raw-socket fast path (``readv``,
``os.write``, ``sendfile``: no trip through trio's scheduler while the socket is ready), and
``streams.StreamChannel`` over any trio ``Stream`` (TLS later; memory streams in tests), which
sends file slices by copying them. Protocol adapters drive a channel and never see which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import trio
from sluice.protocol.slices import FileSlice

Piece = bytes | bytearray | memoryview | FileSlice


class Channel(Protocol):
    """A connection as a protocol adapter uses it.

    * ``receive_now(view)`` takes the bytes that are already there, without waiting: how many
      it put in ``view``, 0 once the peer closed, None if there are none yet -- then
      ``wait_receivable`` waits until there are (or the peer closed).
    * ``send(pieces, scope)`` sends one response's pieces (bytes-likes, and ``FileSlice``s of
      files) in order and uninterrupted. One send at a time (a second one meanwhile raises
      ``trio.BusyResourceError``). If it has to wait for the peer to take bytes, ``scope``'s
      deadline is armed, ``send_timeout_s`` from then, until the send is over.
    * Failures of the connection are ``trio.BrokenResourceError`` (or
      ``trio.ClosedResourceError`` after ``aclose``), never ``OSError``.
    """

    peer: str  # who is at the other end, for logs

    def receive_now(self, view: memoryview) -> int | None: ...

    async def wait_receivable(self) -> None: ...

    async def send(self, pieces: Iterable[Piece], scope: trio.CancelScope) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class ChannelStats:
    """What the channels of one listener sent and read, by how: plain counters bumped once per
    system call or file slice, never per record or page (metrics and tests read them).

    ``sendfile_bytes`` is what zero-copy carried; ``copied_file_bytes`` the file slices read
    into memory and sent as bytes (small slices, the stream path). ``cold_reads``: file
    slices whose pages were not all in the page cache, so a worker thread read them from disk
    first (never the event loop: Kafka's KAFKA-7504); ``cold_read_bytes``: their bytes."""

    bytes_sent: int = 0  # every byte written to the connections, however it went
    sendfile_bytes: int = 0
    copied_file_bytes: int = 0
    cold_reads: int = 0
    cold_read_bytes: int = 0

    def cold(self, length: int) -> None:
        self.cold_reads += 1
        self.cold_read_bytes += length


class OneSender:
    """The one-send-at-a-time rule and the send deadline, for channel implementations:
    ``begin(scope)`` / ``end()`` around a send, ``arm()`` before waiting for the peer."""

    __slots__ = ("send_timeout_s", "_scope", "_armed")

    def __init__(self, send_timeout_s: float) -> None:
        self.send_timeout_s = send_timeout_s
        self._scope: trio.CancelScope | None = None  # while a send runs: its deadline's scope
        self._armed = False  # that deadline is set: this send has waited for the peer

    def begin(self, scope: trio.CancelScope) -> None:
        if self._scope is not None:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._scope, self._armed = scope, False

    def arm(self) -> None:
        """The send is about to wait for the peer: from now, it may take ``send_timeout_s``."""
        if not self._armed:
            self._scope.deadline = trio.current_time() + self.send_timeout_s
            self._armed = True

    def end(self) -> None:
        if self._armed:
            self._scope.deadline = float("inf")
        self._scope = None
