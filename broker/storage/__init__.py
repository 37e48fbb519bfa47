"""Sluice's segmented log storage (synchronous; see docs/STORAGE.md).

The domain layer uses it through the interfaces in ``interfaces`` (``PartitionLog``,
``LogStore``); appends take ``ValidatedBatches``.
"""

from sluice.broker.storage.base import AppendResult, ReadResult
from sluice.broker.storage.batches import ValidatedBatches
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import SegmentFile, release_slices
from sluice.broker.storage.interfaces import LogStore, PartitionLog
from sluice.broker.storage.log import FileLog
from sluice.broker.storage.manager import LogManager, TopicInfo, validate_topic_name
from sluice.broker.storage.memory import MemoryLog

__all__ = [
    "AppendResult",
    "FileLog",
    "LogManager",
    "LogStore",
    "MemoryLog",
    "PartitionLog",
    "ReadResult",
    "SegmentFile",
    "TopicConfig",
    "TopicInfo",
    "ValidatedBatches",
    "release_slices",
    "validate_topic_name",
]
