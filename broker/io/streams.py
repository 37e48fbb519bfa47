"""``StreamChannel``: a connection over any trio ``Stream`` -- a TLS stream later, a plain
``SocketStream`` when ``use_sendfile = false``, a memory stream in tests.

Everything goes through the stream's ``receive_some`` and ``send_all``, so file slices are
copied: read from the file (a cached range on the event loop with one ``preadv(RWF_NOWAIT)``,
a cold one in a worker thread, so a cold page never stalls the loop) and sent with the bytes
around them, ``COALESCE_BYTES`` at most at a time. Slower than ``SocketChannel`` (two trips
through the scheduler per call, a copy per byte sent) and the only way through a stream that
transforms the bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import trio
from sluice.broker.io.channel import ChannelStats, OneSender, Piece
from sluice.broker.io.pagecache import read_cached
from sluice.protocol.slices import FileSlice

RECEIVE_BYTES = 256 * 1024
COALESCE_BYTES = 256 * 1024  # bytes handed to one send_all, at most (a slice's chunks too)


class StreamChannel:
    """A ``trio.abc.Stream`` as a ``Channel``."""

    def __init__(
        self, stream: trio.abc.Stream, *, send_timeout_s: float, peer: str = "?",
        stats: ChannelStats | None = None,
    ) -> None:
        self._stream = stream
        self.peer = peer
        self._sender = OneSender(send_timeout_s)
        self.stats = stats if stats is not None else ChannelStats()
        self._received = memoryview(b"")  # received from the stream, not yet taken
        self._eof = False

    # -- receiving ---------------------------------------------------------------------------

    def receive_now(self, view: memoryview) -> int | None:
        if self._received:
            n = min(len(view), len(self._received))
            view[:n] = self._received[:n]
            self._received = self._received[n:]
            return n
        return 0 if self._eof else None

    async def wait_receivable(self) -> None:
        data = await self._stream.receive_some(RECEIVE_BYTES)
        if data:
            self._received = memoryview(data)
        else:
            self._eof = True

    # -- sending -----------------------------------------------------------------------------

    async def send(self, pieces: Iterable[Piece], scope: trio.CancelScope) -> None:
        self._sender.begin(scope)
        try:
            # A stream send may always wait for the peer: the deadline is armed throughout.
            self._sender.arm()
            buffered: list[bytes | bytearray | memoryview] = []
            size = 0
            async for chunk in self._chunks(pieces):
                buffered.append(chunk)
                size += len(chunk)
                if size >= COALESCE_BYTES:
                    await self._send_all(buffered, size)
                    buffered, size = [], 0
            if buffered:
                await self._send_all(buffered, size)
        finally:
            self._sender.end()

    async def _send_all(self, chunks: list[bytes | bytearray | memoryview], size: int) -> None:
        self.stats.bytes_sent += size
        await self._stream.send_all(b"".join(chunks))

    async def _chunks(self, pieces: Iterable[Piece]):
        """The bytes of ``pieces`` in order; file slices read ``COALESCE_BYTES`` at a time."""
        for piece in pieces:
            if not isinstance(piece, FileSlice):
                yield piece
                continue
            for position, length in _spans(piece):
                yield await self._read(piece.file.fileno(), position, length)

    async def _read(self, fd: int, position: int, length: int) -> bytes:
        """``length`` bytes of the file at ``position``: from the page cache on the event loop
        if they are all there, else (a cold read) in a worker thread.
        ``trio.BrokenResourceError`` if the file ends first (the slice promised whole batches)."""
        data = read_cached(fd, position, length)
        if data is None:
            self.stats.cold(length)
            data = await trio.to_thread.run_sync(os.pread, fd, length, position)
        if len(data) != length:
            raise trio.BrokenResourceError(
                f"file ended {length - len(data)} bytes before the slice did")
        self.stats.copied_file_bytes += length
        return data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


def _spans(piece: FileSlice) -> Iterator[tuple[int, int]]:
    end = piece.position + piece.length
    for position in range(piece.position, end, COALESCE_BYTES):
        yield position, min(COALESCE_BYTES, end - position)
