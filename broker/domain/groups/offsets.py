"""``CommittedOffsets``: every group's committed offsets, kept in the internal topic
``__consumer_offsets`` -- whatever kind of group committed them.

Each commit appends one batch whose records are ``key = [group, topic, partition]``, ``value
= [offset, metadata, commit_time_ms, topic_id]`` (msgpack); a nil value deletes the offset.
A commit is durable once the offsets partition commits it (``wait_durable``: fdatasync on
one broker). At startup the topic is replayed into memory.

Committed offsets belong to one incarnation of their topic (its ``topic_id``): deleting the
topic drops them (``topic_deleted`` appends a nil-valued record for each, so the log forgets
them too), and the replay at startup keeps only offsets whose id is the topic's current one --
so a crash between the topic's deletion and those records, or a recreate before they were
flushed, can never hand an old topic's offsets to a new topic of the same name. A commit may
name the incarnation it means (``topic_id``) and is refused with ``UnknownTopicIdError`` if
that is no longer the current one. Records written before topic ids (three fields) are taken
as the current incarnation's and rewritten with its id.

So that the replay stays proportional to the live offsets rather than to every commit ever
made, the log is compacted (at startup and every ``COMPACT_INTERVAL_S``) once it holds
``COMPACT_RATIO`` times more records than live offsets: roll a segment, write every live
offset into it, commit, then delete the older segments whole. A crash in between leaves both
copies; replaying them gives the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgpack
import trio
from sluice.broker.domain.topics import TopicRegistry
from sluice.broker.storage import ValidatedBatches
from sluice.protocol.batch import build_batch, decode_records, iter_batches, parse_header
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.errors import InvalidRequestError, UnknownTopicOrPartitionError

log = logging.getLogger("sluice.groups")

OFFSETS_TOPIC = "__consumer_offsets"
MAX_METADATA_CHARS = 4096
COMPACT_MIN_RECORDS = 10_000
COMPACT_RATIO = 4
COMPACT_INTERVAL_S = 60.0
SNAPSHOT_BATCH_RECORDS = 1_000
REPLAY_READ_BYTES = 4 << 20

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """One offset a group asks to commit."""

    topic: str
    partition: int
    offset: int
    metadata: str = ""
    topic_id: str = ""  # the incarnation meant ("": whichever exists)


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed offset, and the incarnation of its topic it belongs to."""

    offset: int
    metadata: str
    topic_id: str


class CommittedOffsets:
    """Group id -> (topic, partition) -> ``Committed``, mirrored by the offsets log."""

    def __init__(self, topics: TopicRegistry) -> None:
        self._topics = topics
        self._partition = topics.partition(OFFSETS_TOPIC, 0)
        self._groups: dict[str, dict[TopicPartition, Committed]] = {}
        self._replay()
        log.info("loaded committed offsets of %d group(s)", len(self._groups))
        self._keep_current_incarnations()
        snapshot_start = self._write_snapshot_if_due()
        if snapshot_start is not None:  # before serving: nothing else appends meanwhile
            self._partition.log.flush()
            self._partition.log.delete_before(snapshot_start)

    # -- reading ------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """The groups that have committed offsets."""
        return list(self._groups)

    def of(self, group_id: str) -> Mapping[TopicPartition, Committed]:
        """A group's committed offsets (empty if it has none)."""
        return self._groups.get(group_id, {})

    def count(self) -> int:
        return sum(len(offsets) for offsets in self._groups.values())

    # -- writing ------------------------------------------------------------------------------

    def check(self, commit: OffsetCommit) -> str:
        """The id of the topic incarnation ``commit`` is for; raises why it can't be taken."""
        if commit.offset < 0:
            raise InvalidRequestError(f"offset {commit.offset} must be >= 0")
        if len(commit.metadata) > MAX_METADATA_CHARS:
            raise InvalidRequestError(f"metadata longer than {MAX_METADATA_CHARS} characters")
        if self._topics.find(commit.topic, commit.partition) is None:
            raise UnknownTopicOrPartitionError(
                f"unknown topic or partition {commit.topic}[{commit.partition}]")
        return self._topics.partition(commit.topic, commit.partition, commit.topic_id).topic_id

    def commit(self, group_id: str, commits: Iterable[tuple[OffsetCommit, str]]) -> int:
        """Record checked commits (each with its topic id, from ``check``); returns the
        offsets log's offset to ``wait_durable`` for."""
        stamp = wall_clock_ms()
        commits = list(commits)
        last_offset = self._append([
            _offset_record(group_id, c.topic, c.partition, c.offset, c.metadata, topic_id, stamp)
            for c, topic_id in commits
        ])
        offsets = self._groups.setdefault(group_id, {})
        for c, topic_id in commits:
            offsets[(c.topic, c.partition)] = Committed(c.offset, c.metadata, topic_id)
        return last_offset

    def drop_group(self, group_id: str) -> int | None:
        """Forget every offset of ``group_id``; the offset to ``wait_durable`` for (None: it
        had none)."""
        offsets = self._groups.pop(group_id, None)
        if not offsets:
            return None
        stamp = wall_clock_ms()
        return self._append([_tombstone(group_id, t, p, stamp) for (t, p) in offsets])

    def topic_deleted(self, topic: str) -> None:
        """Forget every group's offsets of ``topic`` (a nil-valued record each, so the log
        forgets them too)."""
        stamp = wall_clock_ms()
        records = []
        for group_id, offsets in list(self._groups.items()):
            for tp in [tp for tp in offsets if tp[0] == topic]:
                del offsets[tp]
                records.append(_tombstone(group_id, *tp, stamp))
            if not offsets:
                del self._groups[group_id]
        self._append_all(records)

    async def wait_durable(self, offset: int) -> None:
        """Wait until the offsets log has committed everything up to ``offset``."""
        await self._partition.wait_committed(offset)

    def _append(self, records: list) -> int:
        return self._partition.append(ValidatedBatches.parse(build_batch(records))).last_offset

    def _append_all(self, records: list) -> None:
        for i in range(0, len(records), SNAPSHOT_BATCH_RECORDS):
            self._append(records[i : i + SNAPSHOT_BATCH_RECORDS])

    # -- startup ------------------------------------------------------------------------------

    def _replay(self) -> None:
        plog = self._partition.log
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            batches = list(iter_batches(plog.read_bytes(offset, REPLAY_READ_BYTES)))
            if not batches:
                break
            for batch in batches:
                for record in decode_records(batch):
                    if record.offset >= offset:
                        self._apply(record.key, record.value)
                offset = max(offset, parse_header(batch).next_offset)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        group_id, topic, partition = msgpack.unpackb(key, raw=False)
        if value is None:
            offsets = self._groups.get(group_id)
            if offsets is not None:
                offsets.pop((topic, partition), None)
                if not offsets:
                    del self._groups[group_id]
            return
        fields = msgpack.unpackb(value, raw=False)
        topic_id = fields[3] if len(fields) > 3 else None  # None: written before topic ids
        self._groups.setdefault(group_id, {})[(topic, partition)] = Committed(fields[0], fields[1], topic_id)

    def _keep_current_incarnations(self) -> None:
        """After the replay: drop (and record the drop of) offsets of topics deleted since --
        recreated or not -- and give offsets from before topic ids the current id."""
        dropped, adopted = [], []
        for group_id, offsets in list(self._groups.items()):
            for (topic, partition), committed in list(offsets.items()):
                current = self._topics.topic_id(topic)
                if current is not None and committed.topic_id in (current, None):
                    if committed.topic_id is None:
                        offsets[(topic, partition)] = Committed(committed.offset, committed.metadata, current)
                        adopted.append((group_id, topic, partition, committed.offset,
                                        committed.metadata, current))
                    continue
                del offsets[(topic, partition)]
                dropped.append((group_id, topic, partition))
            if not offsets:
                del self._groups[group_id]
        stamp = wall_clock_ms()
        records = [_tombstone(*gtp, stamp) for gtp in dropped]
        records += [_offset_record(*row, stamp) for row in adopted]
        self._append_all(records)
        if records:
            log.info("dropped %d committed offset(s) of deleted topics; gave %d a topic id",
                     len(dropped), len(adopted))

    # -- compaction ---------------------------------------------------------------------------

    def _write_snapshot_if_due(self) -> int | None:
        """If the log is mostly superseded commits, append every live offset to a fresh
        segment and return where that snapshot starts (everything before it may go)."""
        plog = self._partition.log
        records = plog.log_end_offset - plog.log_start_offset
        live = self.count()
        if records < COMPACT_MIN_RECORDS or records < COMPACT_RATIO * live:
            return None
        plog.roll()
        start = plog.log_end_offset
        stamp = wall_clock_ms()
        self._append_all([
            _offset_record(group_id, t, p, c.offset, c.metadata, c.topic_id, stamp)
            for group_id, offsets in self._groups.items()
            for (t, p), c in offsets.items()
        ])
        log.info("compacting %s: %d records -> %d live offsets", OFFSETS_TOPIC, records, live)
        return start

    async def run_compaction(self) -> None:
        """Compact the offsets log now and then (see the module docstring)."""
        while True:
            await trio.sleep(COMPACT_INTERVAL_S)
            start = self._write_snapshot_if_due()
            if start is not None:
                await self._partition.wait_committed(self._partition.log_end_offset - 1)
                self._partition.log.delete_before(start)


def _offset_record(group_id: str, topic: str, partition: int, offset: int, metadata: str,
                   topic_id: str, stamp: int) -> tuple:
    """The ``__consumer_offsets`` record of one committed offset."""
    key = msgpack.packb([group_id, topic, partition])
    return key, msgpack.packb([offset, metadata, stamp, topic_id]), [], stamp


def _tombstone(group_id: str, topic: str, partition: int, stamp: int) -> tuple:
    """The ``__consumer_offsets`` record that drops one committed offset."""
    return msgpack.packb([group_id, topic, partition]), None, [], stamp
