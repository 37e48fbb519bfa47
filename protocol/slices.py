"""``FileSlice``: a byte range of an open file that the I/O layer sends with ``os.sendfile``.

The protocol describes *what* to send (header bytes, then file ranges) without doing any
I/O; the broker's transport does the sending. ``file`` is any object with ``fileno()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FileSlice:
    """``length`` bytes of ``file`` starting at ``position``; always whole record batches."""

    file: Any
    position: int
    length: int

    def __post_init__(self) -> None:
        if self.position < 0 or self.length < 0:
            raise ValueError(f"invalid file slice position={self.position} length={self.length}")
