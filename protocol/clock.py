"""The wall clock as Sluice stamps things: milliseconds since the Unix epoch.

Record timestamps, commit times, the age of a segment and the last append that retention
looks at are all read from ``wall_clock_ms``; code that must be tested at other times takes a
``now_ms`` callable that defaults to it.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Now, in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000
