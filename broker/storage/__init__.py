"""Sluice's segmented log storage (synchronous; see docs/STORAGE.md)."""

from sluice.broker.storage.base import AppendResult, ReadResult
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import SegmentFile
from sluice.broker.storage.log import FileLog
from sluice.broker.storage.manager import LogManager, TopicInfo, validate_topic_name
from sluice.broker.storage.memory import MemoryLog

__all__ = [
    "AppendResult",
    "FileLog",
    "LogManager",
    "MemoryLog",
    "ReadResult",
    "SegmentFile",
    "TopicConfig",
    "TopicInfo",
    "validate_topic_name",
]
