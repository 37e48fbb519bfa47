"""Per-topic storage settings: one frozen, self-validating value shared by log and manager."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.protocol.batch import HEADER_SIZE, MAX_BATCH_BYTES
from sluice.protocol.errors import InvalidConfigError, InvalidPartitionsError
from sluice.protocol.limits import MAX_PARTITIONS  # one documented maximum, wire and disk

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DAY_MS = 24 * 60 * 60 * 1000
# Index entries store file positions as u32; a segment may overshoot segment_bytes by one
# batch, so both limits together must stay below 2**32.
MAX_SEGMENT_BYTES = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """A topic's settings. Validated on construction; ``-1`` means "no limit" where allowed."""

    partitions: int = 1
    segment_bytes: int = GIB
    segment_ms: int = 7 * DAY_MS
    retention_ms: int = 7 * DAY_MS
    retention_bytes: int = -1
    max_message_bytes: int = 8 * MIB
    index_interval_bytes: int = 4 * KIB

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if type(value) is not int:
                raise InvalidConfigError(f"{field.name} must be an integer, got {value!r}")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise InvalidPartitionsError(
                f"partitions must be in [1, {MAX_PARTITIONS}], got {self.partitions}"
            )
        _check_range("segment_bytes", self.segment_bytes, 1, MAX_SEGMENT_BYTES)
        _check_range("segment_ms", self.segment_ms, 1, 2**63 - 1)
        _check_range("retention_ms", self.retention_ms, -1, 2**63 - 1)
        _check_range("retention_bytes", self.retention_bytes, -1, 2**63 - 1)
        _check_range("max_message_bytes", self.max_message_bytes, HEADER_SIZE, MAX_BATCH_BYTES)
        _check_range("index_interval_bytes", self.index_interval_bytes, 0, MAX_SEGMENT_BYTES)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, int], base: TopicConfig | None = None) -> TopicConfig:
        """``base`` (default: the defaults) with ``mapping``'s overrides; unknown keys raise."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in mapping if key not in names)
        if unknown:
            raise InvalidConfigError(
                f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(base if base is not None else cls(), **mapping)

    def to_mapping(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidConfigError(f"{name} must be in [{low}, {high}], got {value}")
