"""``Deferred``: a response that can only be built after waiting (a flush, a long poll)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deferred:
    """The session's writer awaits ``complete()`` when this response's turn to be sent comes."""

    complete: Callable[[], Awaitable[object]]
