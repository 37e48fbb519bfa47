"""Choosing a partition: CRC-32C of the key for keyed records, sticky for keyless ones.

The key hash must give the same partition in every process, on every Python version and
machine, forever -- so it is CRC-32C (a fixed, specified function with a C implementation),
never Python's salted ``hash``. Keyless records stick to one partition until its batch is
sealed, then move to the next: full batches without giving up spreading load.
"""

from __future__ import annotations

import random

from crc32c import crc32c


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a key always maps to, given the topic's partition count."""
    return crc32c(key) % partitions


class StickyPartitioner:
    """Keyless records: one partition per topic until ``batch_sealed`` moves it on."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def partition(self, topic: str, partitions: int) -> int:
        current = self._current.get(topic)
        if current is None or current >= partitions:
            # Start somewhere random so that many producers don't all pile onto partition 0.
            current = self._current[topic] = random.randrange(partitions)
        return current

    def batch_sealed(self, topic: str, partition: int, partitions: int) -> None:
        """The batch of ``partition`` was sealed: keyless records move to the next one."""
        if self._current.get(topic) == partition:
            self._current[topic] = (partition + 1) % partitions
