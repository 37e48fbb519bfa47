"""Kafka frames, sans-IO: a 4-byte big-endian signed size, then that many bytes.

``KafkaFrameDecoder`` is Sluice's ``FrameDecoder`` with Kafka's prefix: the buffering is the
same (each byte copied once into its frame, received straight into it with
``receive_buffer`` once a frame has started; a frame over ``preallocate_bytes`` grows as its
bytes arrive, so an announced size commits no memory; sticky remote errors; ``b""`` = EOF),
only the prefix differs. The size is checked the moment its 4 bytes arrive -- negative, or
over ``max_frame_bytes``, is a ``FrameSizeError`` before any of the frame is buffered. Frames
come out as writable ``memoryview``s of their own buffer (the broker stamps offsets into
produced batches in place).
"""

from __future__ import annotations

from sluice.protocol.framing import PREALLOCATE_BYTES, Frame, FrameDecoder, Signal
from sluice.protocol.kafka.errors import FrameSizeError
from sluice.protocol.kafka.primitives import INT32

# Kafka's socket.request.max.bytes is 100 MiB; Sluice's own frames stop at 64 MiB.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class KafkaFrameDecoder(FrameDecoder):
    """Bytes in, Kafka frames out (see ``FrameDecoder`` for ``receive_data``,
    ``receive_buffer`` and ``received``).

    Invariant: bytes are consumed in order and only whole frames leave; after a
    ``RemoteProtocolError`` every ``next_frame`` raises it again.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES,
                 preallocate_bytes: int = PREALLOCATE_BYTES) -> None:
        super().__init__(max_frame_bytes, max_header_bytes=0,
                         preallocate_bytes=preallocate_bytes)

    def next_frame(self) -> memoryview | Signal:
        """The next whole frame (without its size prefix), ``NEED_DATA`` or ``CLOSED``."""
        frame = super().next_frame()
        return frame.body if isinstance(frame, Frame) else frame

    def _start_frame(self) -> bool:
        """Read and check Kafka's prefix, then allocate the frame as ``FrameDecoder`` does (a
        Kafka frame has no separate header: it is all body here)."""
        if self._buffered < INT32.size:
            return False
        (size,) = INT32.unpack(self._take(INT32.size))
        if size < 0 or size > self.max_frame_bytes:
            raise FrameSizeError(size, self.max_frame_bytes)
        self._size = size
        self._frame = self._spare_for(size) or bytearray(
            size if size <= self.preallocate_bytes else 0)
        self._filled = 0
        self._header_length = 0
        return True
