"""What the broker's domain layer needs of storage, as typed interfaces (``typing.Protocol``).

``PartitionLog`` is one partition's log; ``FileLog`` and ``MemoryLog`` implement it (the
storage tests run one suite against both). ``LogStore`` is a data directory of topics and
their logs; ``LogManager`` implements it, on files or in memory. The domain depends on these
interfaces only, so a log kept elsewhere (a follower's replica, tiered storage) is one more
implementation, not a change to the domain.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sluice.broker.storage.base import AppendResult, ReadResult
from sluice.broker.storage.batches import ValidatedBatches
from sluice.broker.storage.config import TopicConfig
from sluice.protocol.batch import BatchHeader

if TYPE_CHECKING:
    from sluice.broker.storage.manager import TopicInfo

TopicPartition = tuple[str, int]


@runtime_checkable
class PartitionLog(Protocol):
    """One partition: dense offsets from ``log_start_offset`` to ``log_end_offset``
    (exclusive), whole batches, appended one call at a time.

    Thread safety: ``flush`` may run in a worker thread while another thread appends or
    reads; an ``append`` may run in a worker thread while the event loop reads.
    """

    @property
    def config(self) -> TopicConfig: ...
    @property
    def log_start_offset(self) -> int: ...
    @property
    def log_end_offset(self) -> int: ...
    @property
    def flushed_offset(self) -> int:
        """Everything below it is durable (fdatasync'd; the end, in memory)."""
    @property
    def size_bytes(self) -> int: ...
    @property
    def segment_count(self) -> int: ...
    @property
    def closed(self) -> bool: ...

    def append(self, batches: ValidatedBatches) -> AppendResult:
        """Assign the next offsets to ``batches`` (stamped in place) and store them, all or
        nothing (``StorageError``)."""

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` (at least one),
        none reaching past ``max_offset`` (None: the log end). Slices hold file references:
        release them (``files.release_slices``) once sent or dropped."""

    def read_bytes(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """``read``, copied into one ``bytes``."""

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(base offset, max timestamp)`` of the first batch whose max timestamp reaches
        ``timestamp``, or None."""

    def scan_headers(self, from_offset: int) -> Iterator[BatchHeader]: ...
    def flush(self) -> int: ...
    def roll(self) -> None: ...
    def delete_before(self, offset: int) -> int: ...
    def enforce_retention(self, now_ms: int | None = None) -> int: ...
    def reconfigure(self, config: TopicConfig) -> None: ...
    def close(self) -> None: ...
    def delete(self) -> None: ...


@runtime_checkable
class LogStore(Protocol):
    """A data directory: topics (name, config, id) and one ``PartitionLog`` per partition.

    ``topics.json`` is the truth about which topics exist; ``create_topic``,
    ``alter_topic`` and ``delete_topic`` are its only writers. Partitions refused at start
    for corruption are ``offline`` (``get_log`` raises ``StorageError`` saying why)."""

    @property
    def was_clean(self) -> bool: ...
    @property
    def offline(self) -> Mapping[TopicPartition, tuple[int, str]]: ...

    def topics(self) -> dict[str, TopicInfo]: ...
    def topic(self, name: str) -> TopicInfo | None: ...

    def create_topic(
        self, name: str, partitions: int | None = None,
        configs: Mapping[str, int] | None = None, *, internal: bool = False,
    ) -> TopicInfo: ...

    def alter_topic(
        self, name: str, partitions: int | None = None, configs: Mapping[str, int] | None = None
    ) -> int:
        """Returns the partition count the topic had."""

    def delete_topic(self, name: str) -> None: ...
    def get_log(self, topic: str, partition: int) -> PartitionLog: ...
    def logs(self) -> Iterator[tuple[TopicPartition, PartitionLog]]: ...
    def checkpoint_recovery_points(self) -> None: ...
    def enforce_retention(self, now_ms: int | None = None) -> int: ...
    def close(self) -> None: ...
