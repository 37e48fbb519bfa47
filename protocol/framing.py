"""Length-prefixed frames, sans-IO: bytes in, ``Frame``s out (docs/PROTOCOL.md, "Frames").

A frame is ``frame_length u32 | header_length u32 | header | body``. The decoder checks
``frame_length`` as soon as its 4 bytes arrive, so an oversized frame is refused before any of
it is buffered; it then fills one ``bytearray`` preallocated to exactly the frame's size, or,
for a frame over ``PREALLOCATE_BYTES``, one that grows as its bytes arrive: an 8-byte prefix
announcing a huge frame must not make the receiver commit that much memory up front (a peer
could do it on every connection). So each received byte is copied once into place (twice if
the caller hands in a mutable buffer; a growing frame grows ``GROW_STEP_BYTES`` at a time),
a 64 MiB frame costs the same however it is chunked, and the body is a writable
view the broker stamps offsets into in place. The scratch buffer between frames, and on a
client large frame buffers, are reused once nothing views them any more: fresh pages cost
more than the copy into them (``REUSE_MIN_BYTES``). The header stays packed here: a header that is not
valid msgpack leaves the framing intact, so it is ``protocol.messages``' business, not a
``RemoteProtocolError``.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass

import msgpack
from sluice.protocol.errors import LocalProtocolError, OversizedFrameError, RemoteProtocolError

PREFIX = struct.Struct(">II")  # frame_length, header_length
FRAME_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
# Frames up to this size are allocated whole when their prefix arrives; larger ones grow with
# the bytes actually received (memory follows what the peer sent, not what it announced).
PREALLOCATE_BYTES = 1024 * 1024
# A growing frame grows by at most this much at a time (doubling up to it), so that no single
# receive pays for zeroing and faulting in megabytes at once: a broker lets other connections
# run between receives, and doubling spent ~10 ms in the last step of an 8 MiB frame on the
# benchmark VM. Also cheaper in all: 8 MiB frames took ~0.8 ms each to grow this way vs ~9.8
# doubling (steps this small are served from malloc's heap, not fresh mmap'd pages).
GROW_STEP_BYTES = 256 * 1024
# At most this much is received at once between frames (before a frame's size is known).
SCRATCH_BYTES = 64 * 1024
# A decoder made with keep_frames=N keeps up to N buffers of frames this large or larger and
# reuses them once nothing views them any more. glibc serves such sizes with fresh pages from
# the kernel each time (its mmap threshold), and on the benchmark VM the first touch of every
# page costs ~2.5 us: receiving 1 MiB into a fresh buffer took ~1.4 ms, into a reused one
# ~0.27 ms. Smaller allocations come from malloc's heap, already faulted in.
REUSE_MIN_BYTES = 128 * 1024
_U32_MAX = 2**32 - 1


class Signal(enum.Enum):
    """What ``next_frame`` / ``next_event`` return when they have nothing else to give."""

    NEED_DATA = "NEED_DATA"  # call receive_data with more bytes, then ask again
    CLOSED = "CLOSED"  # the peer closed cleanly between frames; nothing more will come

    def __repr__(self) -> str:
        return self.value


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


@dataclass(frozen=True, slots=True)
class Frame:
    """One received frame: the packed msgpack ``header`` and the raw ``body``.

    Both are views of the same private bytearray; ``body`` is writable.
    """

    header: memoryview
    body: memoryview


class FrameDecoder:
    """Turns received bytes into ``Frame``s. ``receive_data`` only buffers; ``b""`` is EOF.

    After it raises ``RemoteProtocolError`` once, ``next_frame`` raises the same error forever.
    """

    def __init__(
        self,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        preallocate_bytes: int = PREALLOCATE_BYTES,
        keep_frames: int = 0,
    ) -> None:
        """``keep_frames``: how many large frame buffers to keep for reuse (see
        ``REUSE_MIN_BYTES``). They stay allocated while the connection idles, so only a peer
        whose frames the receiver trusts (a client reading its broker) should keep any."""
        self.max_frame_bytes = max_frame_bytes
        self.max_header_bytes = max_header_bytes
        self.preallocate_bytes = preallocate_bytes
        self.keep_frames = keep_frames
        self._scratch: bytearray | None = None  # receive_buffer's buffer between frames
        self._into_frame = False  # the last receive_buffer was the current frame's tail
        self._chunks: deque[memoryview] = deque()  # received, not yet consumed
        self._buffered = 0  # bytes in _chunks
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._frame: bytearray | None = None  # header + body of the frame being filled
        self._spares: list[bytearray] = []  # large frame buffers to reuse when unviewed
        self._size = 0  # the frame's full size (header + body)
        self._filled = 0
        self._header_length = 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data called after EOF")
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse a mutable buffer; keep our own
        if not data:
            self._eof = True
            return
        self._chunks.append(memoryview(data))
        self._buffered += len(data)

    def receive_buffer(self, size_hint: int) -> memoryview:
        """A writable view to receive up to ``size_hint`` bytes into (``recv_into``); then
        report how many arrived with ``received(n)`` (0 = EOF).

        While a frame is being filled and nothing is buffered ahead of it, the view is the
        frame's own unfilled tail, so a large body lands in place with the kernel's copy only;
        otherwise it is a reused scratch buffer, taken like ``receive_data``. Release the view
        (``with decoder.receive_buffer(n) as view:``) before calling ``received``.
        """
        if self._frame is not None and not self._chunks and self._error is None:
            want = min(self._size - self._filled, size_hint)
            self._reserve(self._filled + want)
            self._into_frame = True
            return memoryview(self._frame)[self._filled : self._filled + want]
        # Between frames: the scratch buffer, whose received part becomes the chunk itself
        # (no copy). It is reused once no chunk still points into it -- the usual case, as
        # small requests are copied out into their frames -- since allocating and zeroing
        # 64 KiB for every small request cost more than decoding it (and flushed the L1).
        size = min(size_hint, SCRATCH_BYTES)
        scratch = self._scratch
        if scratch is None or len(scratch) < size or not _unviewed(scratch):
            scratch = self._scratch = bytearray(size)
        self._into_frame = False
        return memoryview(scratch)[:size]

    def received(self, n: int) -> None:
        """``n`` bytes arrived in the view ``receive_buffer`` returned last (0 means EOF)."""
        if not n:
            self.receive_data(b"")
        elif self._into_frame:
            self._filled += n
        else:
            self._chunks.append(memoryview(self._scratch)[:n])
            self._buffered += n

    def next_frame(self) -> Frame | Signal:
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            self._chunks.clear()
            self._frame = None
            raise

    def _next_frame(self) -> Frame | Signal:
        if self._frame is None and not self._start_frame():
            return self._starved()
        frame = self._fill()
        if self._filled < self._size:
            return self._starved()
        self._frame = None
        assert len(frame) >= self._size, "a complete frame holds its announced size"
        view = memoryview(frame)[: self._size]
        if self.keep_frames and self._size >= REUSE_MIN_BYTES:
            self._spares = [frame, *self._spares[: self.keep_frames - 1]]
        return Frame(header=view[: self._header_length], body=view[self._header_length :])

    def _spare_for(self, size: int) -> bytearray | None:
        """A kept buffer that can hold ``size`` bytes and that no view of an earlier frame
        still uses (the caller may hold a frame as long as it likes), or None."""
        if size < REUSE_MIN_BYTES:
            return None
        for i, buf in enumerate(self._spares):
            if len(buf) >= size and _unviewed(buf):
                del self._spares[i]
                return buf
        return None

    def _starved(self) -> Signal:
        if not self._eof:
            return NEED_DATA
        if self._frame is None and not self._buffered:
            return CLOSED
        raise RemoteProtocolError("peer closed the connection in the middle of a frame")

    def _start_frame(self) -> bool:
        """Read and check the prefix; allocate the frame. False if the prefix is incomplete."""
        if self._buffered < FRAME_LENGTH.size:
            return False
        (frame_length,) = FRAME_LENGTH.unpack(self._peek(FRAME_LENGTH.size))
        if frame_length > self.max_frame_bytes:
            raise OversizedFrameError(frame_length, self.max_frame_bytes)
        if self._buffered < PREFIX.size:
            return False
        frame_length, header_length = PREFIX.unpack(self._take(PREFIX.size))
        if header_length > frame_length - 4:
            raise RemoteProtocolError(
                f"header_length {header_length} does not fit in frame_length {frame_length}"
            )
        if header_length > self.max_header_bytes:
            raise RemoteProtocolError(
                f"header of {header_length} bytes exceeds max_header_bytes={self.max_header_bytes}"
            )
        self._size = frame_length - 4
        self._frame = self._spare_for(self._size) or bytearray(
            self._size if self._size <= self.preallocate_bytes else 0
        )
        self._filled = 0
        self._header_length = header_length
        return True

    def _fill(self) -> bytearray:
        """Move buffered bytes into the current frame, consuming whole or partial chunks."""
        frame = self._frame
        assert frame is not None
        filled, size, chunks = self._filled, self._size, self._chunks
        while filled < size and chunks:
            chunk = chunks[0]
            n = min(size - filled, len(chunk))
            self._reserve(filled + n)
            frame[filled : filled + n] = chunk[:n]
            filled += n
            if n < len(chunk):
                chunks[0] = chunk[n:]
            else:
                chunks.popleft()
        self._buffered -= filled - self._filled
        self._filled = filled
        return frame

    def _reserve(self, end: int) -> None:
        """Grow a frame that was not preallocated so it can hold bytes up to ``end``.

        Never past the announced size (memory follows what arrived, not what the prefix
        claimed), and by at most ``GROW_STEP_BYTES`` beyond ``end`` at a time.
        """
        frame = self._frame
        if len(frame) < end:
            target = min(self._size, max(end, len(frame) + min(len(frame), GROW_STEP_BYTES)))
            frame.extend(bytes(target - len(frame)))

    def _peek(self, n: int) -> bytes:
        out = b""
        for chunk in self._chunks:
            out += chunk[: n - len(out)]
            if len(out) == n:
                break
        return out

    def _take(self, n: int) -> bytes:
        out = self._peek(n)
        left = n
        while left:
            chunk = self._chunks[0]
            if len(chunk) > left:
                self._chunks[0] = chunk[left:]
                break
            self._chunks.popleft()
            left -= len(chunk)
        self._buffered -= n
        return out


def _unviewed(buf: bytearray) -> bool:
    """True if no memoryview of ``buf`` is alive: CPython refuses to resize a bytearray while
    any view exports its buffer, so a one-byte grow-and-shrink answers without side effects."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


def encode_frame(header: dict, body_length: int, max_header_bytes: int = MAX_HEADER_BYTES) -> bytes:
    """The prefix and packed ``header`` of a frame whose body (sent after) is ``body_length``.

    Raises ``LocalProtocolError`` if the header cannot be packed or the frame would be one the
    peer must refuse.
    """
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot pack frame header: {exc}") from exc
    if len(packed) > max_header_bytes:
        raise LocalProtocolError(f"header of {len(packed)} bytes exceeds {max_header_bytes}")
    frame_length = 4 + len(packed) + body_length
    if body_length < 0 or frame_length > _U32_MAX:
        raise LocalProtocolError(f"impossible frame: body_length {body_length}")
    return PREFIX.pack(frame_length, len(packed)) + packed
