"""What the trio and blocking consumers share, with no I/O: options, positions, seeking.

Both consumers hand out records from ``_records[_index:]`` (one fetched chunk, decoded) and
keep positions in a ``FetchState``. Changing the assignment or a position first *settles* the
buffer -- the partition of the unread rest resumes at its first unread record -- and then tells
the concrete consumer through two hooks: ``_drop_fetched`` (forget chunks fetched but not yet
decoded) and ``_positions_changed`` (e.g. wake a fetch task).
"""

from __future__ import annotations

from sluice.client.connection import timeout_s
from sluice.client.fetcher import EARLIEST, LATEST, FetchState
from sluice.client.group import GroupMembership
from sluice.client.records import Record


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
        self._state.assign(partitions)
        self._positions_changed()

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

    def _settle(self) -> None:
        """Drop the unread rest of the current chunk; its partition resumes at the first
        unread record. (A chunk holds one partition's records.)"""
        records, index = self._records, self._index
        if index < len(records):
            first = records[index]
            self._state.consumed((first.topic, first.partition), first.offset)
        self._records, self._index = [], 0
        self._drop_fetched()
