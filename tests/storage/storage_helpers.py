"""Builders and checks shared by the storage tests (imported by module name: no package)."""

from __future__ import annotations

import threading

from sluice.broker.storage.batches import ValidatedBatches
from sluice.broker.storage.files import write_all
from sluice.protocol.batch import build_batch, decode_records, iter_batches, parse_header


def make_batch(first_value: int, count: int = 1, *, ts: int = 1_000, size: int = 10) -> bytearray:
    """``count`` records whose values encode ``first_value + i`` (padded to ``size`` bytes)."""
    return build_batch(
        [(b"k", str(first_value + i).zfill(size).encode(), [], ts + i) for i in range(count)]
    )


def values(data: bytes) -> list[tuple[int, int]]:
    """``[(offset, encoded value), ...]`` for every record of the whole batches in ``data``."""
    return [
        (record.offset, int(record.value))
        for batch in iter_batches(data)
        for record in decode_records(batch)
    ]


def headers(data: bytes) -> list:
    return [parse_header(batch) for batch in iter_batches(data)]


def fill(log, batches: int, *, records: int = 3, ts: int = 1_000, size: int = 10) -> None:
    """Append ``batches`` batches of ``records`` records; record values equal their offsets."""
    for _ in range(batches):
        start = log.log_end_offset
        log.append(ValidatedBatches.parse(make_batch(start, records, ts=ts + start, size=size)))


class GatedWrite:
    """Stand-in for ``files.write_all`` (patch ``sluice.broker.storage.log.write_all``): a
    write of ``min_bytes`` or more records ``"write started"`` in ``events``, sets ``started``,
    waits for ``release`` (at most ``limit_s``: a test that never releases fails, not hangs),
    writes, and records ``"write done"``. Smaller writes go straight through."""

    def __init__(self, min_bytes: int, events: list[str], limit_s: float = 10.0) -> None:
        self.min_bytes = min_bytes
        self.events = events
        self.limit_s = limit_s
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int, data) -> None:
        if len(data) < self.min_bytes:
            write_all(fd, data)
            return
        self.events.append("write started")
        self.started.set()
        self.release.wait(self.limit_s)
        write_all(fd, data)
        self.events.append("write done")


def crash(manager) -> None:
    """What a crash leaves of an open ``LogManager``: its files as they are, and its data
    directory's lock dropped (the kernel releases a dead process's ``flock``)."""
    manager._dir_lock.release()
