"""Kafka frames, sans-IO: a 4-byte big-endian signed size, then that many bytes.

``KafkaFrameDecoder`` turns received bytes into frames (``memoryview``s of a private
``bytearray``, writable: the broker stamps offsets into produced batches in place). The size
prefix is checked the moment its 4 bytes arrive -- negative, or over ``max_frame_bytes``, is a
``FrameSizeError`` before any of the frame is buffered -- and a frame is allocated whole only
up to ``preallocate_bytes``; a larger one grows as its bytes actually arrive, so a 4-byte
prefix announcing 100 MB commits nothing. Each byte is copied once into its frame (received
straight into it with ``receive_buffer`` once a frame has started).
"""

from __future__ import annotations

from collections import deque

from sluice.protocol.errors import LocalProtocolError, RemoteProtocolError
from sluice.protocol.framing import CLOSED, NEED_DATA, Signal
from sluice.protocol.kafka.errors import FrameSizeError
from sluice.protocol.kafka.primitives import INT32

# Kafka's socket.request.max.bytes is 100 MiB; Sluice's own frames stop at 64 MiB.
MAX_FRAME_BYTES = 64 * 1024 * 1024
PREALLOCATE_BYTES = 1024 * 1024
# At most this much is received at once between frames.
SCRATCH_BYTES = 64 * 1024


class KafkaFrameDecoder:
    """Bytes in, frames out. ``receive_data`` only buffers; ``b""`` is EOF.

    Invariant: bytes are consumed in order and only whole frames leave; after a
    ``RemoteProtocolError`` every ``next_frame`` raises it again.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES,
                 preallocate_bytes: int = PREALLOCATE_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.preallocate_bytes = preallocate_bytes
        self._chunks: deque[memoryview] = deque()  # received, not yet in a frame
        self._buffered = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._frame: bytearray | None = None  # the frame being filled
        self._size = 0
        self._filled = 0
        self._scratch = bytearray(SCRATCH_BYTES)  # receive_buffer's buffer between frames
        self._into_frame = False  # the last receive_buffer view was the frame's tail

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data called after EOF")
        if not data:
            self._eof = True
            return
        data = bytes(data) if type(data) is not bytes else data  # the caller may reuse it
        self._chunks.append(memoryview(data))
        self._buffered += len(data)

    def receive_buffer(self, size_hint: int) -> memoryview:
        """A writable view to receive up to ``size_hint`` bytes into; then call
        ``received(n)`` (0 = EOF). Inside a frame with nothing buffered ahead, the view is the
        frame's own tail (no second copy); else a scratch buffer. Release the view first."""
        if self._frame is not None and not self._chunks and self._error is None:
            want = min(self._size - self._filled, size_hint)
            self._reserve(self._filled + want)
            self._into_frame = True
            return memoryview(self._frame)[self._filled:self._filled + want]
        self._into_frame = False
        return memoryview(self._scratch)[:min(size_hint, SCRATCH_BYTES)]

    def received(self, n: int) -> None:
        """``n`` bytes arrived in the view ``receive_buffer`` returned last."""
        if not n:
            self.receive_data(b"")
        elif self._into_frame:
            self._filled += n
        else:
            self.receive_data(bytes(memoryview(self._scratch)[:n]))

    def next_frame(self) -> memoryview | Signal:
        """The next whole frame (without its size prefix), ``NEED_DATA`` or ``CLOSED``."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            self._chunks.clear()
            self._frame = None
            raise

    def _next_frame(self) -> memoryview | Signal:
        if self._frame is None and not self._start_frame():
            return self._starved()
        self._fill()
        if self._filled < self._size:
            return self._starved()
        frame, self._frame = self._frame, None
        return memoryview(frame)

    def _starved(self) -> Signal:
        if not self._eof:
            return NEED_DATA
        if self._frame is None and not self._buffered:
            return CLOSED
        raise RemoteProtocolError("peer closed the connection in the middle of a frame")

    def _start_frame(self) -> bool:
        if self._buffered < 4:
            return False
        (size,) = INT32.unpack(self._take(4))
        if size < 0 or size > self.max_frame_bytes:
            raise FrameSizeError(size, self.max_frame_bytes)
        self._size = size
        self._filled = 0
        self._frame = bytearray(size if size <= self.preallocate_bytes else 0)
        return True

    def _fill(self) -> None:
        frame, chunks = self._frame, self._chunks
        while self._filled < self._size and chunks:
            chunk = chunks[0]
            n = min(self._size - self._filled, len(chunk))
            self._reserve(self._filled + n)
            frame[self._filled:self._filled + n] = chunk[:n]
            self._filled += n
            self._buffered -= n
            if n < len(chunk):
                chunks[0] = chunk[n:]
            else:
                chunks.popleft()

    def _reserve(self, end: int) -> None:
        """Grow a frame that was not preallocated to hold bytes up to ``end``: geometric
        (amortised linear), never past the announced size."""
        frame = self._frame
        if len(frame) < end:
            frame.extend(bytes(min(self._size, max(end, 2 * len(frame))) - len(frame)))

    def _take(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self._chunks[0]
            need = n - len(out)
            out += chunk[:need]
            if len(chunk) > need:
                self._chunks[0] = chunk[need:]
            else:
                self._chunks.popleft()
        self._buffered -= n
        return out
