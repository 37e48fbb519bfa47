"""Sending responses: bytes with ``os.write``, file slices with ``os.sendfile``.

trio has no sendfile, so ``_sendfile`` drives ``os.sendfile`` on the socket (which trio
already made non-blocking), waiting with ``trio.lowlevel.wait_writable`` on ``EAGAIN``.

Invariants:
* One sender per connection: the session sends from one task at a time (its reader while
  nothing is queued, else its writer); ``send`` checks it and raises ``BusyResourceError``
  on overlap, so response bytes never interleave.
* A send that fits in the socket buffer costs one syscall and no trip through the scheduler:
  bytes go out with ``os.write`` on the (non-blocking) socket, and only ``EAGAIN`` waits with
  ``wait_writable``. trio's ``send_all`` would add two checkpoints per response (~25 us on
  this VM, a tenth of a small request's whole cost). The send deadline is armed only while
  waiting, on the scope the caller passes in.
* Cold pages never stall the event loop: ``sendfile`` on pages that are not in the page cache
  blocks on disk *inside* the syscall (Kafka's KAFKA-7504). Before sending a slice, ask
  whether it is cached (``broker.pagecache``); if not, read the range through in a worker
  thread first so the pages are cached when sendfile runs.
* Fair, without a trip through the scheduler per chunk: a large slice goes out in as many
  ``sendfile`` calls as the socket takes (on loopback ~320 KiB each, the peer's receive
  window); each ``EAGAIN`` waits, which lets other tasks run. Only a peer that reads so fast
  that ``SENDFILE_CHUNK`` bytes went out without a wait gets an explicit checkpoint.
* Small slices (under ``COPY_BELOW`` bytes) are read with one ``preadv(RWF_NOWAIT)`` and sent
  together with the bytes around them in a single ``send``: on loopback a syscall costs far
  more than copying a few KiB (measured on this VM: ~220 us per send, ~380 us per sendfile), so
  a latency-bound fetch of one small batch goes from four syscalls (two probes, send header,
  sendfile) to two. The RWF_NOWAIT read doubles as the page-cache probe: if it would block, the
  slice takes the cold path (warm in a thread, then sendfile).
* ``OSError`` from the socket becomes ``trio.BrokenResourceError`` here, at the edge.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import trio
from sluice.broker.io.pagecache import is_cached, read_cached, warm
from sluice.protocol.slices import FileSlice

# Coalesce small byte pieces into one send; larger ones are sent as they are.
COALESCE_BYTES = 64 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024
# Slices smaller than this are copied into the send buffer instead of sendfile'd.
COPY_BELOW = 64 * 1024


class Transport:
    """One connection's sending half: one send at a time, each waiting at most
    ``send_timeout_s`` for the socket to take its bytes."""

    def __init__(
        self, stream: trio.SocketStream, *, use_sendfile: bool = True,
        send_timeout_s: float = math.inf,
    ) -> None:
        self._sock = stream.socket
        self.use_sendfile = use_sendfile
        self.send_timeout_s = send_timeout_s
        # While a send runs: the scope whose deadline bounds it (None: no send running).
        self._scope: trio.CancelScope | None = None
        self._armed = False  # that deadline is set: this send has waited for the socket

    async def send(
        self, pieces: Iterable[bytes | bytearray | memoryview | FileSlice],
        scope: trio.CancelScope,
    ) -> None:
        """Send ``pieces`` in order as one uninterrupted response. If the socket is full,
        ``scope``'s deadline is armed (``send_timeout_s``) while waiting for it to drain."""
        if self._scope is not None:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._scope, self._armed = scope, False
        try:
            pending: list[bytes | bytearray | memoryview] = []
            for piece in pieces:
                if isinstance(piece, FileSlice) and self.use_sendfile and piece.length < COPY_BELOW:
                    data = read_cached(piece.file.fileno(), piece.position, piece.length)
                    if data is not None:
                        piece = data
                if isinstance(piece, FileSlice):
                    if pending:
                        await self._send_bytes(pending)
                        pending = []
                    await self._send_slice(piece)
                elif len(piece) >= COALESCE_BYTES:
                    if pending:
                        await self._send_bytes(pending)
                        pending = []
                    await self._send_bytes([piece])
                else:
                    pending.append(piece)
            if pending:
                await self._send_bytes(pending)
        finally:
            if self._armed:
                scope.deadline = math.inf
            self._scope = None

    async def _send_bytes(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        view = memoryview(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        while view:
            try:
                view = view[os.write(self._sock.fileno(), view):]
            except BlockingIOError:
                await self._wait_writable()
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc}") from exc

    async def _send_slice(self, piece: FileSlice) -> None:
        fd = piece.file.fileno()
        if not is_cached(fd, piece.position, piece.length):
            await trio.to_thread.run_sync(warm, fd, piece.position, piece.length)
        if self.use_sendfile:
            await self._sendfile(fd, piece.position, piece.length)
        else:
            await self._copy(fd, piece.position, piece.length)

    async def _sendfile(self, fd: int, position: int, length: int) -> None:
        sock_fd = self._sock.fileno()
        end = position + length
        unyielded = 0  # bytes sent since this task last let others run
        while position < end:
            try:
                sent = os.sendfile(sock_fd, fd, position, min(end - position, SENDFILE_CHUNK))
            except BlockingIOError:
                await self._wait_writable()
                unyielded = 0
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"sendfile failed: {exc}") from exc
            if sent == 0:
                raise trio.BrokenResourceError(
                    f"file ended {end - position} bytes before the slice did"
                )
            position += sent
            unyielded += sent
            if unyielded >= SENDFILE_CHUNK:
                unyielded = 0
                await trio.lowlevel.checkpoint()

    async def _wait_writable(self) -> None:
        if not self._armed:
            self._scope.deadline = trio.current_time() + self.send_timeout_s
            self._armed = True
        try:
            await trio.lowlevel.wait_writable(self._sock)
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError("connection closed while sending") from exc

    async def _copy(self, fd: int, position: int, length: int) -> None:
        """The fallback where sendfile can't work (e.g. TLS later): pread, then send."""
        end = position + length
        while position < end:
            chunk = os.pread(fd, min(end - position, SENDFILE_CHUNK), position)
            if not chunk:
                raise trio.BrokenResourceError("file ended before the slice did")
            await self._send_bytes([chunk])
            await trio.lowlevel.checkpoint()
            position += len(chunk)
