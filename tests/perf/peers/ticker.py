"""A periodic tick for trio without trio's sleep: a Linux ``timerfd`` waited on with
``wait_readable``.

Why: in trio every ``sleep`` ends by delivering a ``Cancelled`` exception through the
sleeping task, which costs ~100-150 us of CPU on the 2-core benchmark VM, 5-7x a plain
wake-up. A producer pacing 5,000 records/s with ``sleep_until`` spent most of a core on
that alone, on a machine where the broker and the consumer share the same two cores. The
Redis and NATS harnesses pace with ``time.sleep`` / asyncio timers, which cost a wake-up
only; this gives the Sluice harness the same. (``os.timerfd_create`` is Python 3.13+, so
the two calls go through ctypes.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import trio

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _timespec(seconds: float) -> _Timespec:
    ns = max(1, round(seconds * 1e9))
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


class Ticker:
    """Fires every ``period_s`` seconds; ``await tick()`` returns the ticks since the last."""

    def __init__(self, period_s: float) -> None:
        fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        spec = _Itimerspec(_timespec(period_s), _timespec(period_s))
        if _libc.timerfd_settime(fd, 0, ctypes.byref(spec), None) < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    async def tick(self) -> int:
        while True:
            try:
                return int.from_bytes(os.read(self.fd, 8), "little")
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Ticker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
