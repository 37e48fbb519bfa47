"""Is a file range in the page cache? Asked before ``sendfile``, which would otherwise block
the event loop on disk inside the syscall for pages that are not (Kafka's KAFKA-7504).

Two ways to ask, the same answer:

* ``cachestat(2)`` (Linux 6.5+): one syscall counts the cached pages of the whole range, ~5 us
  for an 8 MiB fetch on the benchmark VM. Python has no binding for it (3.11), so it is called
  through ctypes' ``syscall``.
* Elsewhere, probing: ``preadv(..., RWF_NOWAIT)`` of one byte every ``PROBE_STRIDE`` bytes and
  of the last byte, which fails with ``EAGAIN`` instead of reading from disk. ~80 us for the
  same 8 MiB, and it samples one page in 32 rather than counting them all.

Without either (not Linux, or a filesystem that can't tell) a range counts as cached: the
behaviour of a plain ``sendfile``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Probe one byte every PROBE_STRIDE bytes of a range (and its last byte) for page-cache misses.
PROBE_STRIDE = 128 * 1024
# Read cold ranges through in chunks of this size when warming them in a worker thread.
WARM_CHUNK = 1024 * 1024
_SYS_CACHESTAT = 451  # the same number on every Linux architecture (it is newer than 5.1)

_HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


def _load_syscall():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_syscall = _load_syscall()
_cachestat_works = _syscall is not None  # cleared the first time the kernel says ENOSYS


def cached_pages(fd: int, position: int, length: int) -> int | None:
    """How many pages of the range are in the page cache (``cachestat``), or None if the
    kernel or filesystem can't tell."""
    global _cachestat_works
    if not _cachestat_works:
        return None
    span, stat = _Range(position, length), _Stat()
    if _syscall(_SYS_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) == 0:
        return stat.nr_cache
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter refusing it
        _cachestat_works = False
        return None
    if err in (errno.EOPNOTSUPP, errno.EINVAL):  # this file can't tell (e.g. hugetlbfs)
        return None
    raise OSError(err, f"cachestat failed: {os.strerror(err)}")


def pages_spanned(position: int, length: int) -> int:
    """The number of pages ``[position, position+length)`` touches (length > 0)."""
    return (position + length - 1) // PAGE - position // PAGE + 1


def is_cached(fd: int, position: int, length: int) -> bool:
    """True if ``[position, position+length)`` is in the page cache (see the module doc)."""
    if length <= 0:
        return True
    cached = cached_pages(fd, position, length)
    if cached is not None:
        return cached >= pages_spanned(position, length)
    return probe_cached(fd, position, length)


def probe_cached(fd: int, position: int, length: int) -> bool:
    """The fallback: True if every probed page of the range is in the page cache."""
    if not _HAS_NOWAIT or length <= 0:
        return True
    probe = bytearray(1)
    points = list(range(position, position + length, PROBE_STRIDE))
    points.append(position + length - 1)
    for point in points:
        try:
            os.preadv(fd, [probe], point, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return True  # filesystem can't tell us: assume warm, like a plain sendfile
            raise
    return True


def read_cached(fd: int, position: int, length: int) -> bytes | None:
    """The range's bytes if they are all in the page cache (never blocks on disk), else None."""
    if not _HAS_NOWAIT:
        return None
    buf = bytearray(length)
    try:
        n = os.preadv(fd, [buf], position, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return bytes(buf) if n == length else None


def warm(fd: int, position: int, length: int) -> None:
    """Read ``[position, position+length)`` through so its pages land in the page cache.

    Blocking: run it in a worker thread.
    """
    buf = bytearray(min(WARM_CHUNK, length))
    end = position + length
    while position < end:
        n = os.preadv(fd, [memoryview(buf)[: min(len(buf), end - position)]], position)
        if n == 0:
            return
        position += n
