"""Sending responses: bytes with ``os.write``, file slices with ``os.sendfile``.

trio has no sendfile, so ``send_file_slice`` drives ``os.sendfile`` on the socket (which trio
already made non-blocking), waiting with ``trio.lowlevel.wait_writable`` on ``EAGAIN`` and
checkpointing between chunks so a fast client can't starve the loop.

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
  blocks on disk *inside* the syscall (Kafka's KAFKA-7504). Before sending a slice, probe it
  with ``preadv(..., RWF_NOWAIT)``; if any probe misses, read the range through in a worker
  thread first so the pages are cached when sendfile runs.
* Small slices (under ``COPY_BELOW`` bytes) are read with one ``preadv(RWF_NOWAIT)`` and sent
  together with the bytes around them in a single ``send``: on loopback a syscall costs far
  more than copying a few KiB (measured on this VM: ~220 us per send, ~380 us per sendfile), so
  a latency-bound fetch of one small batch goes from four syscalls (two probes, send header,
  sendfile) to two. The RWF_NOWAIT read doubles as the page-cache probe: if it would block, the
  slice takes the cold path (warm in a thread, then sendfile).
* ``OSError`` from the socket becomes ``trio.BrokenResourceError`` here, at the edge.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterable

import trio

from protocol.slices import FileSlice

# Probe one byte every PROBE_STRIDE bytes of a slice (and its last byte) for page-cache misses.
PROBE_STRIDE = 128 * 1024
# Read cold ranges through in chunks of this size when warming them in a worker thread.
WARM_CHUNK = 1024 * 1024
# Coalesce small byte pieces into one send; larger ones are sent as they are.
COALESCE_BYTES = 64 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024
# Slices smaller than this are copied into the send buffer instead of sendfile'd.
COPY_BELOW = 64 * 1024

_HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


def is_cached(fd: int, position: int, length: int) -> bool:
    """True if every probed page of ``[position, position+length)`` is in the page cache."""
    if not _HAS_NOWAIT or length <= 0:
        return True
    probe = bytearray(1)
    points = list(range(position, position + length, PROBE_STRIDE))
    points.append(position + length - 1)
    for point in points:
        try:
            os.preadv(fd, [probe], point, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return True  # filesystem can't tell us: assume warm, like a plain sendfile
            raise
    return True


def read_cached(fd: int, position: int, length: int) -> bytes | None:
    """The slice's bytes if they are all in the page cache (never blocks on disk), else None."""
    if not _HAS_NOWAIT:
        return None
    buf = bytearray(length)
    try:
        n = os.preadv(fd, [buf], position, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return bytes(buf) if n == length else None


def warm(fd: int, position: int, length: int) -> None:
    """Read ``[position, position+length)`` through so its pages land in the page cache.

    Blocking: run it in a worker thread.
    """
    buf = bytearray(min(WARM_CHUNK, length))
    end = position + length
    while position < end:
        n = os.preadv(fd, [memoryview(buf)[: min(len(buf), end - position)]], position)
        if n == 0:
            return
        position += n


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
        while position < end:
            try:
                sent = os.sendfile(sock_fd, fd, position, min(end - position, SENDFILE_CHUNK))
            except BlockingIOError:
                await self._wait_writable()
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"sendfile failed: {exc}") from exc
            if sent == 0:
                raise trio.BrokenResourceError(
                    f"file ended {end - position} bytes before the slice did"
                )
            position += sent
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
