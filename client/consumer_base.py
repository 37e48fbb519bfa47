"""The consumer engine, with no I/O: options, positions and seeking, fetching from each
partition's leader with prefetch, offset and metadata lookups, and the group's sequences --
shared by the trio and the blocking ``Consumer``, whose drivers run it.

Fetching (``tick``): one fetch at a time per broker, for the partitions it leads, while fewer
than ``PREFETCH_CHUNKS`` fetched chunks wait to be handed out; answers are queued in
``_ready`` as ``(generation, chunk)`` and decoded only when the application reaches them.
Lookups go first for what needs them: topic metadata (``FetchState.unresolved``; a broker
that says it does not lead a partition, or a lost connection, puts its topics there too) and
offsets (``FetchState.resets``, asked of each partition's leader). A retriable failure (a
lost connection, a broker restarting) is retried after ``RETRY_BACKOFF_S``; any other error
is queued for the application, which raises it, and fetching stops until the assignment or
a position changes.

Both consumers hand out records from ``_records[_index:]`` (one fetched chunk, decoded) and
keep positions in a ``FetchState``. Changing the assignment or a position first *settles* the
buffer -- the partition of the unread rest resumes at its first unread record -- and drops
the chunks fetched for the old positions.

In a group (``client.group``) the sequences are procedures (``client.procedure``) both
drivers run: a heartbeat and what its answer plans -- a revoke stops fetching the revoked
partitions at once, and once the application holds none of their records, commits them
(auto-commit), calls ``on_revoke`` and reports them released; new partitions get their
committed offsets fetched, then ``on_assign`` -- an auto-commit, a commit, the leave.

Following a topic across a delete and recreate (``_topics_found``): a consumer whose topic is
deleted waits for it to come back; when it does (a new topic id), its partitions start over by
``auto_offset_reset`` -- in a group too, since the group's committed offsets died with the old
topic. A consumer made with ``topics=`` (no group) follows the new partition count; one
assigned partitions by hand gets ``UnknownTopicOrPartitionError`` for any the new topic lacks;
in a group the broker reassigns them.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from functools import partial

from sluice.client import admin_ops as ops
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP, timeout_s
from sluice.client.errors import SluiceError, is_retriable, raise_for_error
from sluice.client.fetcher import EARLIEST, LATEST, FetchState
from sluice.client.group import REJOIN_ERRORS, GroupMembership, normalize_offsets
from sluice.client.network import Call, Channel, Network
from sluice.client.procedure import CONNECT, Callback, Connect
from sluice.client.records import Record, decode_batches
from sluice.client.routing import TopicMeta
from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError, UnknownTopicOrPartitionError

log = logging.getLogger("sluice.consumer")

RETRY_BACKOFF_S = 0.1  # after a retriable failure (a lost connection, a broker restarting)
TOPIC_LOOKUP_INTERVAL_S = 0.5  # how often to look whether a deleted topic is back
PREFETCH_CHUNKS = 2  # the next fetch is sent while fewer fetched chunks than this wait
GROUP = Connect("group")  # group requests: their own connection, never behind a long poll
PROCEDURES = ("partitions_for", "offsets_for_times", "beginning_offsets", "end_offsets",
              "commit", "committed")


class ConsumerBase:
    """The consumer engine (see the module docstring); options as the README lists them."""

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str,
        clock,
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
        self.bootstrap = bootstrap
        self.client_id = client_id
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
        self.net = Network(bootstrap, client_id=client_id, clock=clock,
                           request_timeout_s=self.request_timeout_s,
                           reconnect_timeout_s=self.reconnect_timeout_s)
        self.net.watchers.append(self._channel_down)
        self._records: list[Record] = []
        self._index = 0
        self._following: set[str] = set()  # topics whose partition count the assignment follows
        # Fetching: chunks (or an error for the application) in arrival order, as
        # ``(generation, chunk or exception)``; the fetch in flight per broker, with its
        # partitions; the lookups in flight; when fetching may go on after a failure.
        self._fetching = False  # between start and close
        self._ready: deque = deque()
        self._fetches: dict[int, set] = {}
        self._lookup: Call | None = None
        self._offset_lookups: set[int | None] = set()
        self._retry_at = 0.0
        self._next_topic_lookup = 0.0  # when to look again for a deleted topic's return
        self._stopped = -1  # the generation an error stopped fetching for
        self._failure: Exception | None = None  # that error, once the application saw it
        self._hold = False  # the application takes ready chunks before the next fetch goes
        self._wake_at = math.inf
        self._claimed: set = set()  # revoked partitions a revoke sequence is finishing
        self._kick = _nothing  # the driver's: new work for the engine

    # -- the engine's turn --------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Look up what must be, and fetch while there is room for what comes back."""
        self._wake_at = math.inf
        state = self._state
        generation = state.generation
        if not self._fetching or self._stopped == generation:
            return
        if now < self._retry_at:
            self._wake_at = self._retry_at
            return
        try:
            state.check_positions()
            self._check_assignment()
        except SluiceError as exc:
            self._stop(generation, exc)
            return
        net = self.net
        lookup = state.metadata_request()
        if lookup is not None and self._lookup is None:
            if now >= self._next_topic_lookup:
                self._lookup = net.submit(Call(lookup, partial(self._looked_up, generation)))
            else:
                self._wake_at = self._next_topic_lookup
        if state.resets:
            request = state.list_offsets_request()
            if request is not None:
                for node, parts in self._by_leader(request.partitions).items():
                    if node not in self._offset_lookups:
                        self._offset_lookups.add(node)
                        net.submit(Call(m.ListOffsetsRequest(partitions=parts),
                                        partial(self._offsets_found, node, generation)),
                                   self._channel(node))
        if len(self._ready) < PREFETCH_CHUNKS and not (self._hold and self._ready) and (
            not self._fetches or sum(map(len, self._fetches.values())) < len(state.assignment)
        ):  # (not when every assigned partition is being fetched already)
            request = state.fetch_request()
            if request is not None:
                self._fetch(request, generation)

    def wake_time(self) -> float:
        return self._wake_at

    def _fetch(self, request: m.FetchRequest, generation: int) -> None:
        """Send each broker with none in flight a fetch of the partitions it leads."""
        fetches = self._fetches
        if fetches:
            busy = set().union(*fetches.values())
            parts = [p for p in request.partitions if (p.topic, p.partition) not in busy]
        else:
            parts = request.partitions
        for node, mine in self._by_leader(parts).items():
            if node in fetches or node is None:
                continue
            channel = self._channel(node)
            if not channel.ready:
                self.net.use(channel)
                continue
            fetches[node] = {(p.topic, p.partition) for p in mine}
            sent = request
            if len(mine) != len(request.partitions):
                sent = m.FetchRequest(max_wait_ms=request.max_wait_ms, min_bytes=request.min_bytes,
                                      max_bytes=request.max_bytes, partitions=mine)
            self.net.submit(Call(sent, partial(self._fetched, node, generation),
                                 self.fetch_timeout_s), channel)

    def _by_leader(self, parts: list) -> dict[int | None, list]:
        """``parts`` (of a fetch or an offset lookup) by their partition's leader; a
        partition without a known leader has its topic looked up (under None)."""
        leader = self.net.metadata.leader
        out: dict[int | None, list] = {}
        for part in parts:
            node = leader(part.topic, part.partition)
            if node is None:
                self._state.unresolved.add(part.topic)
            out.setdefault(node, []).append(part)
        return out

    def _channel(self, node: int | None) -> Channel:
        return self.net.any_channel() if node is None else self.net.channel(node)

    def _fetched(self, node: int, generation: int, response, error) -> None:
        """A fetch answer, from the driver's reader: its chunks join ``_ready``."""
        del self._fetches[node]
        if error is None:
            try:
                raise_for_error(response)
                chunks = self._state.on_fetch(response, generation)
            except Exception as exc:
                error = exc
            else:
                if chunks:
                    self._ready.extend([(generation, chunk) for chunk in chunks])
                    self.net.bump()
                return
        self._failed(generation, error)

    def _offsets_found(self, node: int | None, generation: int, response, error) -> None:
        self._offset_lookups.discard(node)
        if error is None:
            try:
                raise_for_error(response)
                self._state.on_list_offsets(response, generation)
                return
            except Exception as exc:
                error = exc
        self._failed(generation, error)

    def _looked_up(self, generation: int, response, error) -> None:
        """Metadata for the topics in doubt: follow each to its incarnation and leaders."""
        self._lookup = None
        if error is None:
            try:
                raise_for_error(response)
                self._topics_found(self.net.metadata.update(response))
            except Exception as exc:
                error = exc
            else:
                if self._state.unresolved:  # deleted: look again later, fetching the others
                    self._next_topic_lookup = self.net.clock() + TOPIC_LOOKUP_INTERVAL_S
                return
        self._failed(generation, error)

    def _failed(self, generation: int, error: BaseException) -> None:
        """Retriable: fetch again after a backoff. Else the application gets the error."""
        if is_retriable(error):
            self._retry_at = self.net.clock() + RETRY_BACKOFF_S
        else:
            self._stop(generation, error)

    def _stop(self, generation: int, error: BaseException) -> None:
        """Fetching stops until the positions change; the application raises ``error``."""
        if generation == self._state.generation:
            self._stopped = generation
            self._ready.append((generation, error))
            self.net.bump()

    def _channel_down(self, channel: Channel, error: BaseException, unreachable: bool) -> None:
        """A connection was lost: its partitions' leaders are looked up again; one that
        cannot be reopened is an error for the application (fetches of it failed already)."""
        if unreachable:
            if not channel.purpose:
                self._stop(self._state.generation, error)
            return
        leader = self.net.metadata.leader
        for topic, partition in self._state.assignment:
            if channel.node is not None and leader(topic, partition) == channel.node:
                self._state.unresolved.add(topic)

    def _start_fetching(self) -> None:
        self._fetching = True
        self._kick()

    def _stop_fetching(self) -> None:
        self._fetching = False
        self.net.bump()  # an application task waiting for records learns it is closed
        self._kick()

    # -- records --------------------------------------------------------------------------------

    def _next_records(self) -> list[Record] | None:
        """The records of the next ready chunk of the current positions (None: none ready);
        raises the error that stopped fetching, once and then until positions change."""
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        ready, state = self._ready, self._state
        while ready:
            generation, chunk = ready.popleft()
            if len(ready) < PREFETCH_CHUNKS:
                self._kick()  # room for the next fetch
            if generation != state.generation:
                continue  # fetched, or failed, for positions the application has changed since
            if isinstance(chunk, Exception):
                self._failure = chunk
                raise chunk.with_traceback(None)
            records = decode_batches(chunk.topic, chunk.partition, chunk.data, chunk.start)
            state.consumed((chunk.topic, chunk.partition), chunk.end)
            if records:
                return records
        return None

    def _positions_changed(self) -> None:
        """The assignment or a position changed (called after the change): what was fetched
        for the old positions is dropped, and fetching goes on (so may the application)."""
        generation = self._state.generation
        self._ready = deque(item for item in self._ready if item[0] == generation)
        self._failure = None
        self._kick()

    # -- procedures (the trio and blocking consumers run them: ``PROCEDURES``) ------------------

    def _start_procedure(self):
        """Connect; an unknown topic fails here, clearly; a group consumer opens its group
        connection, without a group the topics' partitions are assigned."""
        yield CONNECT
        metas = {}
        for topic in self.topics:
            metas[topic] = yield from self.net.look_up(topic)
        if self._group is not None:
            yield GROUP
        elif metas:
            self._assign_topics(metas)

    def partitions_for(self, topic: str):
        """The topic's partition count, asked now (``UnknownTopicOrPartitionError`` if there
        is no such topic)."""
        return (yield from self.net.look_up(topic)).partitions

    def offsets_for_times(self, timestamps: dict):
        """``{(topic, partition): ts}`` -> ``{(topic, partition): (offset, ts) or None}``: the
        base offset and max timestamp of the first batch whose max timestamp is >= ``ts``."""
        return (yield from ops.offsets_from_leaders(self.net, timestamps))

    def beginning_offsets(self, partitions):
        found = yield from ops.offsets_from_leaders(self.net, {tuple(tp): EARLIEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    def end_offsets(self, partitions):
        found = yield from ops.offsets_from_leaders(self.net, {tuple(tp): LATEST for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    def commit(self, offsets=None):
        """Commit group offsets; returns once the broker has fsync'd them.

        ``offsets``: ``{(topic, partition): offset}``, the offset being the next one to read.
        Default: the position of every partition this member owns, i.e. everything handed
        out so far counts as processed -- call it after processing.
        """
        if self._group is None:
            raise ValueError("commit() needs a consumer with a group_id")
        if offsets is None:
            offsets = {tp: o for tp, o in self._owned_positions().items() if o is not None}
        else:
            offsets = normalize_offsets(offsets)
        if offsets:
            yield from self._commit(offsets)

    def committed(self, partitions=None):
        """The group's committed offsets: ``{(topic, partition): offset or None}``."""
        if self._group is None:
            raise ValueError("committed() needs a consumer with a group_id")
        wanted = sorted(self._owned_positions() if partitions is None else map(tuple, partitions))
        response = yield (Call(self._group.fetch_offsets_request(wanted)), self._coordinator())
        found = self._group.on_fetch_offsets(response)
        return {tp: found.get(tp) for tp in wanted}

    # -- group procedures ---------------------------------------------------------------------

    def _coordinator(self) -> Channel:
        return self.net.any_channel(GROUP.purpose)

    def _group_work(self, safe: bool):
        """What is due: heartbeats; and, if ``safe`` (the application holds no records),
        the rest of a revoke and an auto-commit."""
        group = self._group
        while self.net.clock() >= group.next_heartbeat:
            yield from self._heartbeat(safe)
        if safe:
            yield from self._finish_revokes()
            if group.auto_commit_due(self.net.clock()):
                yield from self._auto_commit()

    def _heartbeat(self, safe: bool):
        group = self._group
        try:
            response = yield (Call(group.heartbeat_request(self.net.clock())), self._coordinator())
        except REJOIN_ERRORS as exc:
            log.info("group %s: %s; rejoining", group.group_id, exc)
            yield from self._lose_all()
            return
        except SluiceError as exc:
            if not is_retriable(exc):
                raise
            group.next_heartbeat = self.net.clock() + RETRY_BACKOFF_S
            return
        plan = group.on_heartbeat(response, self.net.clock())
        if plan.revoke:
            self._start_revoke(plan.revoke)
            if safe:
                yield from self._finish_revokes()
        if plan.assign:
            yield from self._take(plan.assign)

    def _start_revoke(self, partitions) -> None:
        """Stop fetching ``partitions`` at once, keeping their positions for the commit that
        finishes the revoke (``_finish_revokes``)."""
        records, index = self._records, self._index
        if index < len(records) and (records[0].topic, records[0].partition) in partitions:
            self._settle()  # unread records of it are dropped: its position is the first one
        positions = {tp: self.position(*tp) for tp in partitions}
        self._group.start_revoke(positions, self._state.topic_ids)
        self._state.assign([tp for tp in self._state.assignment if tp not in partitions])
        self._positions_changed()

    def _finish_revokes(self):
        """Commit (auto-commit mode), ``on_revoke``, and report released (the broker may then
        give them to their new owner: the next heartbeat goes at once)."""
        group = self._group
        todo = {tp: o for tp, o in group.revoking.items() if tp not in self._claimed}
        if not todo:
            return
        self._claimed.update(todo)
        try:
            if group.auto_commit:
                yield from self._commit_quietly(group.uncommitted(todo), "revoke")
            yield Callback(self.on_revoke, sorted(todo))
        finally:
            self._claimed.difference_update(todo)
        group.released(todo)

    def _take(self, partitions):
        """New partitions: start at their committed offsets (else ``auto_offset_reset``)."""
        new = sorted(partitions)
        response = yield (Call(self._group.fetch_offsets_request(new)), self._coordinator())
        self._take_committed(new, response)
        yield Callback(self.on_assign, new)
        self._positions_changed()

    def _lose_all(self):
        """The broker forgot or fenced us: drop every partition (no commit), rejoin."""
        lost = self._group.reset()
        self._settle()
        self._state.assign([])
        self._positions_changed()
        if lost:
            yield Callback(self.on_revoke, lost)

    def _auto_commit(self):
        group = self._group
        group.auto_committed(self.net.clock())
        positions = {tp: self.position(*tp) for tp in self._state.assignment}
        yield from self._commit_quietly(group.uncommitted(positions), "auto")

    def _commit(self, offsets: dict):
        response = yield (Call(self._commit_request(offsets)), self._coordinator())
        self._group.on_commit(response, offsets)

    def _commit_quietly(self, offsets: dict, why: str):
        """Background commits (auto, on revoke, on close) log failures instead of raising."""
        if not offsets:
            return
        try:
            yield from self._commit(offsets)
        except SluiceError as exc:
            log.warning("group %s: %s commit failed: %s", self._group.group_id, why, exc)

    def _leave(self, clean: bool):
        """Leaving: after a clean exit a final commit (auto-commit) and ``on_revoke`` of
        every owned partition; then the leave heartbeat, and fetching stops."""
        group = self._group
        try:
            owned = sorted(group.owned)
            if clean and group.auto_commit and group.joined:
                yield from self._commit_quietly(group.uncommitted(self._owned_positions()), "final")
            if clean and owned:
                yield Callback(self.on_revoke, owned)
            self._state.assign([])
            self._positions_changed()
            leave = group.leave_request()
            if leave is not None:
                yield (Call(leave), self._coordinator())
        except SluiceError as exc:
            log.info("group %s: leave failed: %s", group.group_id, exc)
        finally:
            group.reset()

    def _owned_positions(self) -> dict:
        """Positions of every partition this member owns, including ones being revoked."""
        out = {tp: self.position(*tp) for tp in self._state.assignment}
        out.update(self._group.revoking)
        return out

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

    def _settle(self) -> None:
        """Drop the unread rest of the current chunk; its partition resumes at the first
        unread record. (A chunk holds one partition's records.)"""
        records, index = self._records, self._index
        if index < len(records):
            first = records[index]
            self._state.consumed((first.topic, first.partition), first.offset)
        self._records, self._index = [], 0


def _nothing() -> None:
    """No driver yet: nothing to kick."""
