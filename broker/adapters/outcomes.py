"""``Deferred``: a response that can only be built after waiting (a flush, a long poll).
``Pending``: work a request needs before the next request may be read (an append that waits
its turn, or is written off the event loop)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deferred:
    """The session's writer awaits ``complete()`` when this response's turn to be sent comes."""

    complete: Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Pending:
    """The session's reader awaits ``run()`` before it reads the next request (so what the
    request does stays in request order); ``run()`` returns the outcome a handler would have:
    a response, a ``Deferred``, or None."""

    run: Callable[[], Awaitable[object]]
