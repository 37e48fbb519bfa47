"""Sluice's segmented log storage (synchronous; see docs/STORAGE.md)."""

from broker.storage.base import AppendResult, ReadResult
from broker.storage.config import TopicConfig
from broker.storage.files import SegmentFile
from broker.storage.log import FileLog
from broker.storage.manager import LogManager, TopicInfo, validate_topic_name
from broker.storage.memory import MemoryLog

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
