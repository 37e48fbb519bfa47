"""``ProducerSnapshots``: the idempotent-producer state of every partition, on disk.

``D/meta/producer-state`` (msgpack, replaced atomically) maps ``"topic-p"`` to ``[log end
offset, producer state, topic id]``: the partition's state as of that offset, taken of that
incarnation of the topic. At startup a partition loads its entry and replays only the batch
headers after it (``ProducerStates.restore``); without a usable entry -- none, unreadable,
of another incarnation of the topic (deleted and recreated since), or from before topic ids
-- it replays its whole log (headers only, per batch). Written at every checkpoint and at
clean shutdown; an in-memory broker keeps none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import msgpack
from sluice.broker.domain.partition import Partition
from sluice.broker.storage.files import atomic_write

log = logging.getLogger("sluice.broker")


class ProducerSnapshots:
    """The snapshot file (``path`` None: nothing is kept)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> dict[str, list]:
        """``"topic-p"`` -> ``[offset, state, topic id]`` (empty if there is no usable file)."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = msgpack.unpackb(self.path.read_bytes(), raw=False, strict_map_key=False)
            return data if isinstance(data, dict) else {}
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            log.warning("producer-state snapshot unreadable; replaying logs instead")
            return {}

    def save(self, partitions: Iterable[Partition]) -> None:
        """Replace the file with the state of ``partitions`` now (a worker thread may call it)."""
        if self.path is None:
            return
        snapshots = {
            f"{p.topic}-{p.index}": [p.log_end_offset, p.producers.snapshot(), p.topic_id]
            for p in partitions
        }
        atomic_write(self.path, msgpack.packb(snapshots, use_bin_type=True))
