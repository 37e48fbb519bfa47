"""Consumer positions and fetch bookkeeping, sans-IO (shared by the trio and blocking consumers).

Two positions per partition: ``positions`` is what the application has consumed up to (the
next offset it will see, what ``position()`` reports); ``fetch_positions`` runs ahead by the
data fetched but not yet consumed. ``seek`` and friends bump ``generation``: data fetched
under an older generation is dropped, and fetching restarts from ``positions``. Partitions
with no usable position wait in ``resets`` for a list_offsets lookup (earliest, latest or a
timestamp). Records are not decoded here: ``on_fetch`` returns raw chunks, and the consumer
decodes them when the application gets to them, while the next fetch is in flight.

Topic incarnations: positions mean something only in one incarnation of their topic (a topic
deleted and created again under its name starts over at offset 0), so every position belongs
to the incarnation in ``topic_ids``, and fetches name it (``topic_id``). A topic is fetched
only once its incarnation is known: newly assigned topics, and topics whose fetch or lookup
found them deleted (``UnknownTopicIdError`` / ``UnknownTopicOrPartitionError``) or led by
another broker (``NotLeaderError``), wait in ``unresolved`` for the consumer to look up their
metadata and ``bind`` them. Binding a new
incarnation drops the old one's positions: its partitions reset by ``auto_offset_reset``.
Partitions the incarnation lacks wait in ``absent`` and are not fetched.
"""

from __future__ import annotations

from sluice.client.errors import NoOffsetError
from sluice.client.records import next_offset_after
from sluice.protocol import messages as m
from sluice.protocol.errors import (
    NotLeaderError,
    OffsetOutOfRangeError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

EARLIEST, LATEST = m.EARLIEST, m.LATEST  # list_offsets' positions (defined by the protocol)
RESET_POLICIES = {"earliest": EARLIEST, "latest": LATEST, "error": None}

TopicPartition = tuple[str, int]


class Chunk:
    """Fetched, still-encoded batches of one partition; records from ``start`` on count."""

    __slots__ = ("topic", "partition", "data", "start", "end")

    def __init__(self, topic: str, partition: int, data, start: int, end: int) -> None:
        self.topic, self.partition, self.data, self.start, self.end = (
            topic, partition, data, start, end
        )


class FetchState:
    """One consumer's positions and fetch plan (see the module docstring)."""

    def __init__(
        self,
        *,
        auto_offset_reset: str,
        fetch_max_bytes: int,
        partition_max_bytes: int,
        fetch_max_wait_ms: int,
        fetch_min_bytes: int,
    ) -> None:
        """The settings are ``ConsumerBase``'s (the defaults live there, once)."""
        if auto_offset_reset not in RESET_POLICIES:
            raise ValueError(
                f"auto_offset_reset must be one of {', '.join(RESET_POLICIES)}, "
                f"got {auto_offset_reset!r}"
            )
        self.reset_policy = RESET_POLICIES[auto_offset_reset]
        self.fetch_max_bytes = fetch_max_bytes
        self.partition_max_bytes = partition_max_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.assignment: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.fetch_positions: dict[TopicPartition, int] = {}
        self.resets: dict[TopicPartition, int] = {}  # tp -> EARLIEST, LATEST or a timestamp
        self.generation = 0
        self.topic_ids: dict[str, str] = {}  # the incarnation each topic's positions belong to
        self.unresolved: set[str] = set()  # assigned topics whose incarnation must be looked up
        self.absent: set[TopicPartition] = set()  # assigned, but its topic has no such partition

    # -- application side ---------------------------------------------------------------

    def assign(self, partitions) -> None:
        self.assignment = list(dict.fromkeys((t, int(p)) for t, p in partitions))
        keep = set(self.assignment)
        topics = {t for t, _ in self.assignment}
        self.positions = {tp: o for tp, o in self.positions.items() if tp in keep}
        self.resets = {tp: r for tp, r in self.resets.items() if tp in keep}
        self.topic_ids = {t: i for t, i in self.topic_ids.items() if t in topics}
        self.unresolved = {t for t in topics if t not in self.topic_ids or t in self.unresolved}
        self.absent &= keep
        for tp in self.assignment:
            if tp not in self.positions and tp not in self.resets and self.reset_policy is not None:
                self.resets[tp] = self.reset_policy
        self._restart()

    def check_positions(self) -> None:
        """``NoOffsetError`` if a partition has no position and none will be looked up."""
        for tp in self.assignment:
            if tp not in self.positions and tp not in self.resets and tp not in self.absent:
                self._reset_by_policy(tp, None)

    # -- topic incarnations ---------------------------------------------------------------

    def metadata_request(self) -> m.MetadataRequest | None:
        """The lookup of the topics in ``unresolved``, if any."""
        return m.MetadataRequest(topics=sorted(self.unresolved)) if self.unresolved else None

    def bind(self, topic: str, topic_id: str, partitions: int | None = None) -> bool:
        """``topic`` is (now) the incarnation ``topic_id``, with ``partitions`` partitions if
        known; whether that replaced another incarnation, whose positions are then dropped
        (the partitions reset by ``auto_offset_reset``, or wait for a ``seek`` if 'error')."""
        self.unresolved.discard(topic)
        changed = self.topic_ids.get(topic, topic_id) != topic_id
        self.topic_ids[topic] = topic_id
        mine = [tp for tp in self.assignment if tp[0] == topic]
        if partitions is not None:
            self.absent = {tp for tp in self.absent if tp[0] != topic}
            self.absent.update(tp for tp in mine if tp[1] >= partitions)
        if changed:
            for tp in mine:
                self.positions.pop(tp, None)
                self.resets.pop(tp, None)
                if self.reset_policy is not None and tp not in self.absent:
                    self.resets[tp] = self.reset_policy
            self._restart()
        return changed

    def _lost_topic(self, tp: TopicPartition, error: Exception) -> bool:
        """Whether ``error`` says ``tp``'s topic must be looked up again: it is gone (deleted,
        maybe recreated), or another broker leads the partition now. If so, the topic waits
        in ``unresolved`` for a lookup."""
        if isinstance(error, NotLeaderError) or (
            tp[0] in self.topic_ids and isinstance(error, (UnknownTopicIdError, UnknownTopicOrPartitionError))
        ):
            self.unresolved.add(tp[0])
            return True
        return False

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_assigned(tp)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.resets.pop(tp, None)
        self.positions[tp] = offset
        self._restart()

    def seek_to(self, tp: TopicPartition, spec: int) -> None:
        """Look the position up: ``EARLIEST``, ``LATEST`` or the first record at/after a time."""
        self._check_assigned(tp)
        self.positions.pop(tp, None)
        self.resets[tp] = spec
        self._restart()

    def consumed(self, tp: TopicPartition, next_offset: int) -> None:
        """The application has seen everything before ``next_offset``."""
        self.positions[tp] = next_offset

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self.assignment:
            raise ValueError(f"{tp[0]}[{tp[1]}] is not assigned to this consumer")

    def _restart(self) -> None:
        self.generation += 1
        self.fetch_positions = dict(self.positions)

    def _reset_by_policy(self, tp: TopicPartition, error: Exception | None) -> None:
        if self.reset_policy is None:
            reason = f": {error}" if error else ""
            raise NoOffsetError(
                f"{tp[0]}[{tp[1]}] has no valid position and auto_offset_reset is 'error'"
                f"{reason}; seek() first"
            )
        self.resets[tp] = self.reset_policy

    # -- offset lookups ---------------------------------------------------------------------

    def list_offsets_request(self) -> m.ListOffsetsRequest | None:
        parts = [
            m.ListOffsetsPartition(topic=t, partition=p, timestamp=spec)
            for (t, p), spec in self.resets.items()
            if t not in self.unresolved and (t, p) not in self.absent
        ]
        return m.ListOffsetsRequest(partitions=parts) if parts else None

    def on_list_offsets(self, response: m.ListOffsetsResponse, generation: int) -> None:
        if generation != self.generation:
            return
        for result in response.partitions:
            tp = (result.topic, result.partition)
            if tp not in self.resets:
                continue
            if result.error:
                error = error_for_code(result.error, result.message or f"{tp[0]}[{tp[1]}]: offset lookup failed")
                if self._lost_topic(tp, error):
                    continue
                raise error
            if result.offset < 0:  # no record that late: start at the end
                self.resets[tp] = LATEST
                continue
            del self.resets[tp]
            self.positions[tp] = self.fetch_positions[tp] = result.offset

    # -- fetching ---------------------------------------------------------------------------

    def fetch_request(self) -> m.FetchRequest | None:
        parts = [
            m.FetchPartition(
                topic=t, partition=p, offset=self.fetch_positions[(t, p)],
                max_bytes=self.partition_max_bytes, topic_id=self.topic_ids.get(t, ""),
            )
            for t, p in self.assignment
            if (t, p) in self.fetch_positions and t not in self.unresolved and (t, p) not in self.absent
        ]
        if not parts:
            return None
        return m.FetchRequest(
            max_wait_ms=self.fetch_max_wait_ms,
            min_bytes=self.fetch_min_bytes,
            max_bytes=self.fetch_max_bytes,
            partitions=parts,
        )

    def on_fetch(self, response: m.FetchResponse, generation: int) -> list[Chunk]:
        """Advance fetch positions past the data returned; the chunks to hand out."""
        if generation != self.generation:
            return []
        chunks = []
        for part in response.partitions:
            tp = (part.topic, part.partition)
            if tp not in self.fetch_positions:
                continue
            if part.error:
                error = error_for_code(part.error, part.message)
                if isinstance(error, OffsetOutOfRangeError):
                    self.positions.pop(tp, None)
                    del self.fetch_positions[tp]
                    self._reset_by_policy(tp, error)
                    continue
                if self._lost_topic(tp, error) or error.retriable:
                    continue
                raise error
            data = part.records
            if not len(data):
                continue
            end = next_offset_after(data)
            if end is None:
                continue
            start = self.fetch_positions[tp]
            self.fetch_positions[tp] = end
            chunks.append(Chunk(tp[0], tp[1], data, start, end))
        return chunks
