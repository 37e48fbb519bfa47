"""``ValidatedBatches``: whole record batches on their way into a log, split and checked once.

Whoever receives batches validates them once -- the broker's produce path with
``domain.validation.validate_produce`` (header, CRC and the broker's rules), the broker's own
logs and the tests with ``ValidatedBatches.parse`` (bytes they built) -- and the result
travels into ``append`` as it is, like Kafka's ``LogAppendInfo``: nothing splits the bytes or
parses a header again on the way to the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.protocol.batch import (
    COMPRESSION_MASK,
    LOG_OVERHEAD,
    BatchHeader,
    parse_header,
    split_batches,
)
from sluice.protocol.errors import CorruptRecordError


@dataclass(frozen=True, slots=True)
class ValidatedBatches:
    """``buffer`` holds whole batches back to back; batch ``i`` starts at ``positions[i]`` and
    has header ``headers[i]``.

    Invariants, checked on construction at a cost per batch, never per record: the buffer is
    writable (an append stamps offsets in place); at least one batch; the batches follow one
    another from position 0 to the end of the buffer exactly, each as long as its header says.
    ``built`` skips that check for callers that just established it themselves (splitting the
    buffer by its length fields): every produce pays for the construction.
    """

    buffer: memoryview
    positions: tuple[int, ...]
    headers: tuple[BatchHeader, ...]

    def __post_init__(self) -> None:
        buffer, positions, headers = self.buffer, self.positions, self.headers
        if not isinstance(buffer, memoryview) or buffer.readonly:
            raise TypeError("batches need a writable memoryview: offsets are stamped in place")
        if not headers or len(positions) != len(headers):
            raise ValueError("one position per batch header, and at least one batch")
        end = 0
        for position, header in zip(positions, headers, strict=True):
            if position != end:
                raise ValueError(f"batch at position {position}, expected {end}")
            end += header.batch_length + LOG_OVERHEAD
        if end != len(buffer):
            raise ValueError(f"batches end at {end}, the buffer at {len(buffer)}")

    @classmethod
    def built(
        cls, buffer: memoryview, positions: tuple[int, ...], headers: tuple[BatchHeader, ...]
    ) -> ValidatedBatches:
        """Batches whose positions and headers came from splitting ``buffer`` (a writable
        view) by its length fields: the invariants hold by construction, unchecked."""
        batches = object.__new__(cls)
        for setter, value in zip(_SETTERS, (buffer, positions, headers), strict=True):
            setter(batches, value)
        return batches

    @classmethod
    def parse(cls, data: bytearray | memoryview) -> ValidatedBatches:
        """Batches this process built or already trusts (its own logs, tests): split by their
        length fields, headers read, nothing else checked (no CRC). ``CorruptRecordError`` if
        ``data`` is not whole batches; ``TypeError`` if it is read-only."""
        view = memoryview(data)
        if view.readonly:
            raise TypeError("batches need a writable buffer: offsets are stamped in place")
        spans, end = split_batches(view)
        if not spans or end != len(view):
            raise CorruptRecordError(
                f"expected whole batches; {len(view) - end} bytes after {len(spans)} batch(es)"
            )
        return cls.built(
            view, tuple(p for p, _ in spans), tuple(parse_header(view, p) for p, _ in spans)
        )

    @property
    def size(self) -> int:
        return len(self.buffer)

    @property
    def batch_count(self) -> int:
        return len(self.headers)

    @property
    def record_count(self) -> int:
        return sum(header.record_count for header in self.headers)

    @property
    def max_timestamp(self) -> int:
        return max(header.max_timestamp for header in self.headers)

    @property
    def codecs(self) -> frozenset[int]:
        """The compression codecs of the batches (``protocol.compression``; 0 = none)."""
        return frozenset(header.attributes & COMPRESSION_MASK for header in self.headers)

    def batch(self, i: int) -> ValidatedBatches:
        """Batch ``i`` alone (a view of the same bytes)."""
        position, header = self.positions[i], self.headers[i]
        return ValidatedBatches.built(self.buffer[position : position + header.size], (0,), (header,))


_SETTERS = tuple(ValidatedBatches.__dict__[name].__set__ for name in ("buffer", "positions", "headers"))
