"""``InFlight``: how many requests every connection of every protocol is serving, for an
orderly shutdown.

A request counts from when its work starts (or its response is queued) until its response
is sent or dropped, so the count never touches zero between a request's work and its answer.
``wait_drained`` only waits; stopping the broker's long polls is ``Broker.begin_shutdown``.
"""

from __future__ import annotations

import trio


class InFlight:
    """A counter with an event set whenever it is zero."""

    def __init__(self) -> None:
        self._count = 0
        self._drained = trio.Event()
        self._drained.set()

    @property
    def count(self) -> int:
        return self._count

    def started(self) -> None:
        if self._count == 0:
            self._drained = trio.Event()
        self._count += 1

    def finished(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._drained.set()

    async def wait_drained(self) -> None:
        """Wait until no request is being served."""
        await self._drained.wait()
