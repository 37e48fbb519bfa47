"""What the trio and blocking consumers share, with no I/O: options, positions, seeking.

Both consumers hand out records from ``_records[_index:]`` (one fetched chunk, decoded) and
keep positions in a ``FetchState``. Changing the assignment or a position first *settles* the
buffer -- the partition of the unread rest resumes at its first unread record -- and then tells
the concrete consumer through two hooks: ``_drop_fetched`` (forget chunks fetched but not yet
decoded) and ``_positions_changed`` (e.g. wake a fetch task).

Following a topic across a delete and recreate (``_topics_found``): a consumer whose topic is
deleted waits for it to come back; when it does (a new topic id), its partitions start over by
``auto_offset_reset`` -- in a group too, since the group's committed offsets died with the old
topic. A consumer made with ``topics=`` (no group) follows the new partition count; one
assigned partitions by hand gets ``UnknownTopicOrPartitionError`` for any the new topic lacks;
in a group the broker reassigns them.
"""

from __future__ import annotations

from sluice.client.admin_ops import TopicMeta
from sluice.client.bootstrap import timeout_s
from sluice.client.fetcher import EARLIEST, LATEST, FetchState
from sluice.client.group import GroupMembership
from sluice.client.records import Record
from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError, UnknownTopicOrPartitionError


class ConsumerBase:
    def __init__(
        self,
        *,
        topics=None,
        group_id: str | None = None,
        auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        session_timeout_ms: int = 10_000,
        on_assign=None,
        on_revoke=None,
        auto_offset_reset: str = "latest",
        fetch_max_bytes: int = 50 * 1024 * 1024,
        partition_max_bytes: int = 8 * 1024 * 1024,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        request_timeout_ms: int = 30_000,
        reconnect_timeout_ms: int = 30_000,
    ) -> None:
        # Every request's answer is awaited for ``request_timeout_ms`` at most (a fetch's for
        # ``fetch_max_wait_ms`` more, its long poll): then the connection is closed and
        # reopened, for up to ``reconnect_timeout_ms``.
        self.request_timeout_s = timeout_s("request_timeout_ms", request_timeout_ms)
        self.reconnect_timeout_s = timeout_s("reconnect_timeout_ms", reconnect_timeout_ms, zero=True)
        self.fetch_timeout_s = self.request_timeout_s + fetch_max_wait_ms / 1000
        self.topics = [topics] if isinstance(topics, str) else list(topics or [])
        self._group: GroupMembership | None = None
        if group_id is not None:
            self._group = GroupMembership(
                group_id, self.topics, session_timeout_ms=session_timeout_ms,
                auto_commit=auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
            )
        self.on_assign, self.on_revoke = on_assign, on_revoke
        self._state = FetchState(
            auto_offset_reset=auto_offset_reset,
            fetch_max_bytes=fetch_max_bytes,
            partition_max_bytes=partition_max_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
        )
        self._records: list[Record] = []
        self._index = 0
        self._following: set[str] = set()  # topics whose partition count the assignment follows

    # -- hooks ------------------------------------------------------------------------------

    def _drop_fetched(self) -> None:
        """Forget data fetched but not decoded yet (it was fetched for the old positions)."""

    def _positions_changed(self) -> None:
        """The assignment or a position changed (called after the change)."""

    # -- assignment and positions -----------------------------------------------------------

    def assign(self, partitions) -> None:
        """Consume exactly these ``(topic, partition)`` pairs (replacing any assignment)."""
        if self._group is not None:
            raise ValueError("a group consumer's partitions are assigned by the group")
        self._settle()
        self._following.clear()
        self._state.assign(partitions)
        self._positions_changed()

    def _assign_topics(self, metas: dict[str, TopicMeta]) -> None:
        """Consume every partition of these topics (``topics=`` without a group), following
        each topic's partition count if it is recreated."""
        self.assign([(t, p) for t, meta in metas.items() for p in range(meta.partitions)])
        self._following = set(metas)
        for topic, meta in metas.items():
            self._state.bind(topic, meta.topic_id, meta.partitions)

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions being consumed (in a group: the ones assigned and set up)."""
        return list(self._state.assignment)

    @property
    def member_id(self) -> str:
        """This consumer's member id in its group ("" until joined, or without a group)."""
        return self._group.member_id if self._group is not None else ""

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """The next record returned for this partition will be the one at ``offset``."""
        self._settle()
        self._state.seek((topic, partition), offset)
        self._positions_changed()

    def seek_to_beginning(self, *partitions) -> None:
        """Restart the given partitions (default: all assigned) at their first offset."""
        self._seek_to(partitions, EARLIEST)

    def seek_to_end(self, *partitions) -> None:
        """Skip to the end of the log. As in Kafka the end is looked up lazily, by the next
        fetch round (after the fetch in flight returns: a long poll waits at most
        ``fetch_max_wait_ms``); records produced before that lookup are skipped."""
        self._seek_to(partitions, LATEST)

    def seek_to_time(self, timestamp_ms: int, *partitions) -> None:
        """Start at the first batch holding a record with timestamp >= ``timestamp_ms``.

        The broker looks timestamps up per batch (it does not decode records), so that
        batch's earlier records are returned too."""
        self._seek_to(partitions, timestamp_ms)

    def _seek_to(self, partitions, spec: int) -> None:
        self._settle()
        for tp in partitions or self._state.assignment:
            self._state.seek_to(tuple(tp), spec)
        self._positions_changed()

    def position(self, topic: str, partition: int) -> int | None:
        """The offset of the next record this consumer will return (None: not known yet)."""
        records, index = self._records, self._index
        if index < len(records) and records[0].topic == topic and records[0].partition == partition:
            return records[index].offset
        return self._state.positions.get((topic, partition))

    # -- topic incarnations -------------------------------------------------------------------

    def _topics_found(self, found: dict[str, TopicMeta | ApiError]) -> None:
        """The answer to ``FetchState.metadata_request``: follow each topic to its incarnation.

        A topic never seen before that does not exist raises its error (a typo, most likely);
        one that was being consumed and is gone (deleted) stays unresolved, to be looked up
        again until it comes back."""
        state = self._state
        for topic, meta in found.items():  # first the errors, before anything changes
            if isinstance(meta, ApiError) and topic in state.unresolved and topic not in state.topic_ids:
                raise meta
        for topic, meta in found.items():
            if topic in state.unresolved and not isinstance(meta, ApiError):
                self._follow(topic, meta.topic_id, meta.partitions)

    def _check_assignment(self) -> None:
        """``UnknownTopicOrPartitionError`` if a partition assigned by hand does not exist (in
        a group the broker takes such partitions back; ``topics=`` follows the topic)."""
        if self._group is None:
            for topic, partition in sorted(self._state.absent):
                if topic not in self._following:
                    raise UnknownTopicOrPartitionError(
                        f"{topic}[{partition}] does not exist: topic {topic!r} has fewer partitions")

    def _follow(self, topic: str, topic_id: str, partitions: int | None) -> None:
        """``topic`` is now the incarnation ``topic_id`` (see the module docstring)."""
        state = self._state
        if state.topic_ids.get(topic, topic_id) != topic_id:
            self._settle()  # unread records of the old incarnation are dropped
            if self._group is not None:
                self._group.forget_topic(topic)
        changed = state.bind(topic, topic_id, partitions)
        if topic in self._following and partitions is not None:
            others = [tp for tp in state.assignment if tp[0] != topic]
            if len(state.assignment) - len(others) != partitions:
                state.assign(others + [(topic, p) for p in range(partitions)])
                changed = True
        if changed:
            self._positions_changed()

    def _take_committed(self, new: list[tuple[str, int]], response: m.FetchOffsetsResponse) -> None:
        """Start newly assigned group partitions at the committed offsets of ``response``
        (the answer to ``fetch_offsets`` for them), else by ``auto_offset_reset``."""
        group, state = self._group, self._state
        committed = group.on_fetch_offsets(response)
        state.assign(state.assignment + new)
        for topic, topic_id in {(r.topic, r.topic_id) for r in response.partitions if r.topic_id}:
            self._follow(topic, topic_id, None)  # the offsets are of this incarnation
        for tp in new:
            if tp in committed:
                state.seek(tp, committed[tp])
        group.took(new)

    def _commit_request(self, offsets: dict[tuple[str, int], int]) -> m.CommitOffsetsRequest:
        return self._group.commit_request(offsets, self._state.topic_ids)

    def _start_revoke_positions(self, partitions) -> dict:
        """Stop fetching ``partitions`` (being revoked); their positions are kept, with their
        topic incarnations, for the commit that finishes the revoke."""
        positions = {tp: self.position(*tp) for tp in partitions}
        self._group.start_revoke(positions, self._state.topic_ids)
        self._state.assign([tp for tp in self._state.assignment if tp not in partitions])
        return positions

    def _settle(self) -> None:
        """Drop the unread rest of the current chunk; its partition resumes at the first
        unread record. (A chunk holds one partition's records.)"""
        records, index = self._records, self._index
        if index < len(records):
            first = records[index]
            self._state.consumed((first.topic, first.partition), first.offset)
        self._records, self._index = [], 0
        self._drop_fetched()
