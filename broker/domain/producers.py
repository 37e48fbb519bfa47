"""Idempotent-producer state: which batches each producer already wrote to a partition.

A producer with id P and epoch E numbers its batches per partition with consecutive sequence
numbers. For every (partition, P) the broker keeps E and the last ``RETAINED_BATCHES`` batches
(first/last sequence, first/last offset). On produce:

* same epoch, batch identical to a retained one -> a retry of something already written:
  answer with the original offsets, write nothing (``Duplicate``);
* same epoch, first sequence == last sequence + 1 (wrapping at 2^31) -> new, write it;
* same epoch, anything else -> ``OutOfOrderSequenceError`` (a gap, or a duplicate too old
  to recognise);
* older epoch -> ``ProducerFencedError``; newer epoch -> must start at sequence 0.

The state is derived from the log: ``rebuild`` replays batch headers (per batch, never per
record), so it survives restarts without its own durable file; ``snapshot``/``load`` let a
restart replay only the tail after the last snapshot (``restore``; the snapshots' file is
``snapshots.ProducerSnapshots``).

Producer ids come from ``ProducerIdAllocator``: never handed out twice, even across crashes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sluice.broker.storage import PartitionLog
from sluice.broker.storage.files import atomic_write
from sluice.protocol.batch import NO_PRODUCER_ID, BatchHeader
from sluice.protocol.errors import (
    OutOfOrderSequenceError,
    ProducerFencedError,
    UnknownProducerIdError,
)

RETAINED_BATCHES = 5
SEQUENCE_WRAP = 2**31
EPOCH_WRAP = 2**15
PRODUCER_ID_BLOCK = 1000


class WrittenBatch(NamedTuple):
    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retried batch that is already in the log, at these offsets."""

    first_offset: int
    last_offset: int


class ProducerEntry:
    """One producer's epoch and its last few batches on one partition."""

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[WrittenBatch] = deque(maxlen=RETAINED_BATCHES)

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1


class ProducerStates:
    """All producers' state for one partition."""

    def __init__(self) -> None:
        self._entries: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, header: BatchHeader) -> Duplicate | None:
        """Decide what to do with a batch before it is appended (no state changes)."""
        if header.producer_id == NO_PRODUCER_ID:
            return None
        entry = self._entries.get(header.producer_id)
        if entry is None:
            if header.base_sequence != 0:
                raise OutOfOrderSequenceError(
                    f"producer {header.producer_id} is unknown here and its first batch "
                    f"starts at sequence {header.base_sequence}, not 0"
                )
            return None
        if header.producer_epoch < entry.epoch:
            raise ProducerFencedError(
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than "
                f"the current epoch {entry.epoch}"
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise OutOfOrderSequenceError(
                    f"producer {header.producer_id} started epoch {header.producer_epoch} "
                    f"at sequence {header.base_sequence}, not 0"
                )
            return None
        for written in entry.batches:
            if (written.first_sequence, written.last_sequence) == (
                header.base_sequence,
                header.last_sequence,
            ):
                return Duplicate(written.first_offset, written.last_offset)
        expected = (entry.last_sequence + 1) % SEQUENCE_WRAP
        if header.base_sequence != expected:
            raise OutOfOrderSequenceError(
                f"producer {header.producer_id} sent sequence {header.base_sequence}, "
                f"expected {expected}"
            )
        return None

    def record(self, header: BatchHeader, first_offset: int) -> None:
        """Remember a batch that was just appended at ``first_offset``."""
        if header.producer_id == NO_PRODUCER_ID:
            return
        entry = self._entries.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = self._entries[header.producer_id] = ProducerEntry(header.producer_epoch)
        entry.batches.append(
            WrittenBatch(
                header.base_sequence,
                header.last_sequence,
                first_offset,
                first_offset + header.last_offset_delta,
            )
        )

    def rebuild(self, headers: Iterable[BatchHeader]) -> None:
        """Replay batch headers read from the log (their base offsets are final)."""
        for header in headers:
            self.record(header, header.base_offset)

    def snapshot(self) -> dict:
        """A msgpack-able copy of the state."""
        return {
            pid: [entry.epoch, [list(batch) for batch in entry.batches]]
            for pid, entry in self._entries.items()
        }

    @classmethod
    def restore(cls, log: PartitionLog, snapshot: list | None, topic_id: str) -> ProducerStates:
        """A partition's state at startup: its snapshot ``[log end offset, state, topic id]``
        if it was taken of this incarnation of the topic and lies within the log, plus the
        batch headers after it; else the whole log's headers."""
        start = log.log_start_offset
        states = cls()
        if snapshot is not None and len(snapshot) == 3 and snapshot[2] == topic_id:
            offset, data, _ = snapshot
            if start <= offset <= log.log_end_offset:
                states = cls.load(data)
                start = offset
        states.rebuild(h for h in log.scan_headers(start) if h.base_offset >= start)
        return states

    @classmethod
    def load(cls, data: dict) -> ProducerStates:
        states = cls()
        for pid, (epoch, batches) in data.items():
            entry = states._entries[int(pid)] = ProducerEntry(epoch)
            for fields in batches:
                entry.batches.append(WrittenBatch(*fields))
        return states

    def max_producer_id(self) -> int:
        return max(self._entries, default=-1)


class ProducerIdAllocator:
    """Hands out producer ids that are never reused, even across crashes.

    Ids are reserved in blocks: the end of the current block is written (atomically) before
    any id of it is handed out, so after a restart allocation resumes past every id issued.
    Invariant: every id this broker (and its data directory) ever issued is below ``next_id``.
    """

    def __init__(self, path: Path | None, floor: int = 0) -> None:
        self._path = path
        self._next = floor
        self._limit = floor
        if path is not None and path.exists():
            self._next = self._limit = max(floor, int(path.read_text().strip() or 0))

    @property
    def next_id(self) -> int:
        return self._next

    def allocate(self) -> int:
        if self._next >= self._limit:
            self._limit = self._next + PRODUCER_ID_BLOCK
            if self._path is not None:
                atomic_write(self._path, str(self._limit).encode())
        pid = self._next
        self._next += 1
        return pid

    def init_producer(self, producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """``(producer id, epoch)`` for a producer starting up: a new id at epoch 0, or -- for
        a known producer re-initialising (e.g. after a sequence error) -- its id with the
        epoch bumped, which fences any older instance still using the id.
        ``UnknownProducerIdError`` for an id this broker never issued."""
        if producer_id < 0:
            return self.allocate(), 0
        if producer_id >= self._next:
            raise UnknownProducerIdError(
                f"producer id {producer_id} was never issued by this broker; ask for a new one"
            )
        return producer_id, (producer_epoch + 1) % EPOCH_WRAP
