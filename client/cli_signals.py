"""Ctrl-C (SIGINT) and SIGTERM, handled alike by the command line's long-running commands.

The first signal asks the command to stop: ``StopSignals.requested`` turns true and the
command stops at its next safe point -- it delivers what it has accepted, commits what it has
printed, leaves its group -- and exits with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM). While the command waits for input it cannot cut short cleanly otherwise (a blocking
read of stdin) it marks the wait ``interruptible()``, and the signal ends the wait at once. A
second signal stops the command at once, wherever it is.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised by a stop signal where the command cannot wait for a safe point.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM handlers for the duration of a ``with`` block (see the module)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._interruptible = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number once one arrived (the shell's convention), else None."""
        return None if self.signum is None else 128 + self.signum

    def __enter__(self) -> StopSignals:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if self._interruptible or not first:
            raise Interrupted(signum)

    @contextmanager
    def interruptible(self):
        """A wait that a stop signal ends at once (with ``Interrupted``)."""
        if self.signum is not None:
            raise Interrupted(self.signum)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
