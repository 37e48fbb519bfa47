"""Sluice's segmented log storage (synchronous; see docs/STORAGE.md).

The domain layer uses it through the interfaces in ``interfaces`` (``PartitionLog``,
``LogStore``); appends take ``ValidatedBatches``. The names below are loaded on first use,
so importing one submodule (the broker's settings need ``storage.config``) costs only that
submodule.
"""

from sluice.protocol.lazy import lazy_exports

_HOMES = {
    "AppendResult": "sluice.broker.storage.base",
    "FileLog": "sluice.broker.storage.log",
    "LogManager": "sluice.broker.storage.manager",
    "LogStore": "sluice.broker.storage.interfaces",
    "MemoryLog": "sluice.broker.storage.memory",
    "PartitionLog": "sluice.broker.storage.interfaces",
    "ReadResult": "sluice.broker.storage.base",
    "SegmentFile": "sluice.broker.storage.files",
    "TopicConfig": "sluice.broker.storage.config",
    "TopicInfo": "sluice.broker.storage.manager",
    "ValidatedBatches": "sluice.broker.storage.batches",
    "release_slices": "sluice.broker.storage.files",
    "validate_topic_name": "sluice.broker.storage.manager",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
