"""``SocketChannel``: the raw-socket fast path -- ``readv`` in, ``os.write`` and ``sendfile``
out. The only module that calls ``os.readv`` or ``os.sendfile`` on a socket.

trio has no sendfile, and its ``recv_into``/``send_all`` take one or two trips through the
scheduler per call even when the socket is ready (~12 us each on the benchmark VM, half of a
small request's cost with a lock and a deadline; docs/DESIGN-NOTES.md). So this channel calls
the system first on the socket trio already made non-blocking, and only ``EAGAIN`` waits
(``wait_readable`` / ``wait_writable``).

Invariants:
* One sender per connection (``OneSender``), so response bytes never interleave.
* A send that fits in the socket buffer costs one syscall and no trip through the scheduler;
  the send deadline is armed only while waiting.
* Cold pages never stall the event loop: ``sendfile`` on pages that are not in the page cache
  blocks on disk *inside* the syscall (Kafka's KAFKA-7504). Before sending a slice, ask
  whether it is cached (``pagecache``); if not, read the range through in a worker thread
  first so the pages are cached when sendfile runs.
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
* ``stats`` (a ``ChannelStats``, shared by a listener's channels) counts the bytes sent, and how
  many of them ``sendfile`` carried.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import trio
from sluice.broker.io.channel import ChannelStats, OneSender, Piece
from sluice.broker.io.pagecache import is_cached, read_cached, warm
from sluice.protocol.slices import FileSlice

# Coalesce small byte pieces into one send; larger ones are sent as they are.
COALESCE_BYTES = 64 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024
# Slices smaller than this are copied into the send buffer instead of sendfile'd.
COPY_BELOW = 64 * 1024


class SocketChannel:
    """A TCP connection accepted by trio, driven with raw system calls (see the module doc)."""

    def __init__(
        self, stream: trio.SocketStream, *, send_timeout_s: float, peer: str = "?",
        stats: ChannelStats | None = None,
    ) -> None:
        self._stream = stream
        self._sock = stream.socket
        self.peer = peer
        self._sender = OneSender(send_timeout_s)
        self.stats = stats if stats is not None else ChannelStats()

    # -- receiving ---------------------------------------------------------------------------

    def receive_now(self, view: memoryview) -> int | None:
        try:
            return os.readv(self._sock.fileno(), [view])
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"receive failed: {exc}") from exc

    async def wait_receivable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError("connection closed while receiving") from exc

    # -- sending -----------------------------------------------------------------------------

    async def send(self, pieces: Iterable[Piece], scope: trio.CancelScope) -> None:
        self._sender.begin(scope)
        try:
            pending: list[bytes | bytearray | memoryview] = []
            for piece in pieces:
                if isinstance(piece, FileSlice) and piece.length < COPY_BELOW:
                    data = read_cached(piece.file.fileno(), piece.position, piece.length)
                    if data is not None:
                        self.stats.copied_file_bytes += len(data)
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
            self._sender.end()

    async def _send_bytes(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        view = memoryview(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        self.stats.bytes_sent += len(view)
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
            self.stats.cold(piece.length)
            await trio.to_thread.run_sync(warm, fd, piece.position, piece.length)
        sock_fd = self._sock.fileno()
        position, end = piece.position, piece.position + piece.length
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
            stats = self.stats
            stats.sendfile_bytes += sent
            stats.bytes_sent += sent
            if unyielded >= SENDFILE_CHUNK:
                unyielded = 0
                await trio.lowlevel.checkpoint()

    async def _wait_writable(self) -> None:
        self._sender.arm()
        try:
            await trio.lowlevel.wait_writable(self._sock)
        except trio.ClosedResourceError as exc:
            raise trio.BrokenResourceError("connection closed while sending") from exc

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)
