"""Bootstrap addresses, what to say when none answers, and connection time options: shared by
the trio and blocking clients, so it imports neither trio nor the protocol."""

from __future__ import annotations

import math

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"h1:p1,h2:p2"`` -> ``[(h1, p1), (h2, p2)]``; ``ValueError`` with a clear message."""
    out = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap address must be HOST:PORT, got {item.strip()!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def describe_connect_error(exc: BaseException) -> str:
    """The useful part of a connect failure ("Connection refused", not trio's summary)."""
    cause = exc.__cause__
    causes = list(cause.exceptions) if isinstance(cause, BaseExceptionGroup) else [cause]
    for candidate in (*causes, exc):
        reason = getattr(candidate, "strerror", None)
        if reason:
            return reason
    return str(exc)


def timeout_s(name: str, ms, *, zero: bool = False) -> float:
    """A ``*_ms`` option in seconds: a positive number (or 0 if ``zero``); else ``ValueError``
    or ``TypeError`` naming the option."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, not {ms!r}")
    if not (ms >= 0 if zero else ms > 0) or not math.isfinite(ms):
        raise ValueError(f"{name} must be {'at least 0' if zero else 'positive'}, not {ms!r}")
    return ms / 1000
