"""``BrokerState``: what every session shares -- the logs, the partitions, producer ids.

Owns the background tasks that belong to the data rather than to a connection: one
group-commit flusher per partition, the periodic checkpoint (recovery points and producer
state) and retention. ``close`` stops them and closes the logs cleanly.

Producer-state snapshots live in ``D/meta/producer-state`` (msgpack, atomic writes): each
partition's state as of a log end offset, with the id of the topic incarnation it was taken
from. At startup a partition loads its snapshot and replays only the batch headers after it;
without a usable snapshot -- none, unreadable, of another incarnation of the topic (deleted and
recreated since), or from before topic ids -- it replays its whole log (headers only, per
batch).

Topic lifecycle: ``create_topic`` and ``delete_topic`` are the only ways a topic comes and
goes, and each tells every holder of per-topic state (the logs, the partitions with their
producer state and flushers, the group coordinator's committed offsets). Requests may name the
incarnation they mean (``topic_id``); ``partition`` refuses a stale one with
``UnknownTopicIdError``, so nothing meant for a deleted topic lands in its successor.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.descriptors import DescriptorBudget
from sluice.broker.domain.groups import OFFSETS_TOPIC, GroupCoordinator
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.producers import ProducerStates
from sluice.broker.storage.files import atomic_write
from sluice.broker.storage.manager import LogManager
from sluice.protocol.errors import (
    InvalidRequestError,
    StorageError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger("sluice.broker")

PRODUCER_ID_BLOCK = 1000


class ProducerIdAllocator:
    """Hands out producer ids that are never reused, even across crashes.

    Ids are reserved in blocks: the end of the current block is written (atomically) before
    any id of it is handed out, so after a restart allocation resumes past every id issued.
    """

    def __init__(self, path: Path | None, floor: int = 0) -> None:
        self._path = path
        self._next = floor
        self._limit = floor
        if path is not None and path.exists():
            self._next = self._limit = max(floor, int(path.read_text().strip() or 0))

    def allocate(self) -> int:
        if self._next >= self._limit:
            self._limit = self._next + PRODUCER_ID_BLOCK
            if self._path is not None:
                atomic_write(self._path, str(self._limit).encode())
        pid = self._next
        self._next += 1
        return pid


class BrokerState:
    """The logs and partitions of one broker, plus the tasks that maintain them."""

    def __init__(
        self, config: BrokerConfig, manager: LogManager, descriptors: DescriptorBudget | None = None
    ) -> None:
        self.config = config
        self.manager = manager
        # What holds open files (partitions, connections) against RLIMIT_NOFILE.
        self.descriptors = descriptors or DescriptorBudget.from_rlimit(config.max_connections)
        self.partitions: dict[tuple[str, int], Partition] = {}
        self._scopes: dict[tuple[str, int], trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self.draining = False
        self._in_flight = 0
        self._drained = trio.Event()
        self._drained.set()
        self.advertised_host = config.host
        self.advertised_port = config.port
        meta = None if config.in_memory else config.data_dir / "meta"
        self._snapshot_path = meta / "producer-state" if meta else None
        snapshots = self._load_snapshots()
        topics = manager.topics()
        floor = 0
        for (topic, index), plog in manager.logs():
            topic_id = topics[topic].topic_id
            producers = self._restore_producers(plog, snapshots.get(f"{topic}-{index}"), topic_id)
            floor = max(floor, producers.max_producer_id() + 1)
            self.partitions[(topic, index)] = Partition(topic, index, plog, producers, topic_id=topic_id)
        self.producer_ids = ProducerIdAllocator(meta / "producer-ids" if meta else None, floor)
        if OFFSETS_TOPIC not in topics:
            info = manager.create_topic(OFFSETS_TOPIC, 1, {}, internal=True)
            self.partitions[(OFFSETS_TOPIC, 0)] = Partition(
                OFFSETS_TOPIC, 0, manager.get_log(OFFSETS_TOPIC, 0), topic_id=info.topic_id
            )
        self.groups = GroupCoordinator(self, self.partition(OFFSETS_TOPIC, 0))

    @property
    def open_connections(self) -> int:
        return self.descriptors.connections

    # -- request accounting (for draining at shutdown) ------------------------------------------

    def request_started(self) -> None:
        if self._in_flight == 0:
            self._drained = trio.Event()
        self._in_flight += 1

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._drained.set()

    async def wait_drained(self) -> None:
        """Wait until no request is being served; wakes long polls so they answer now."""
        self.draining = True
        for partition in self.partitions.values():
            partition.wake_watchers()
        await self._drained.wait()

    # -- startup -----------------------------------------------------------------------------

    def _load_snapshots(self) -> dict:
        if self._snapshot_path is None or not self._snapshot_path.exists():
            return {}
        try:
            data = msgpack.unpackb(self._snapshot_path.read_bytes(), raw=False, strict_map_key=False)
            return data if isinstance(data, dict) else {}
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            log.warning("producer-state snapshot unreadable; replaying logs instead")
            return {}

    @staticmethod
    def _restore_producers(plog, snapshot, topic_id: str) -> ProducerStates:
        """The partition's producer state: its snapshot (if taken of this incarnation of the
        topic and within the log) plus the batch headers after it."""
        start = plog.log_start_offset
        states = ProducerStates()
        if snapshot is not None and len(snapshot) == 3 and snapshot[2] == topic_id:
            offset, data, _ = snapshot
            if start <= offset <= plog.log_end_offset:
                states = ProducerStates.load(data)
                start = offset
        states.rebuild(h for h in plog.scan_headers(start) if h.base_offset >= start)
        return states

    # -- background tasks --------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run flushers, checkpoints and retention until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for key, partition in self.partitions.items():
                self._start_flusher(key, partition)
            nursery.start_soon(self._periodic, self.config.checkpoint_interval_s, self.checkpoint)
            nursery.start_soon(
                self._periodic, self.config.retention_check_interval_s, self.enforce_retention
            )
            nursery.start_soon(self.groups.run_expiry)
            nursery.start_soon(self.groups.run_compaction)
            task_status.started()

    def _start_flusher(self, key: tuple[str, int], partition: Partition) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._scopes[key] = scope

        async def flusher() -> None:
            with scope:
                await partition.run_flusher()

        self._nursery.start_soon(flusher)

    @staticmethod
    async def _periodic(interval: float, job) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await trio.to_thread.run_sync(job)
            except (OSError, StorageError) as exc:  # e.g. disk full: keep serving, try again
                log.error("%s failed: %s", job.__name__, exc)
            except Exception:  # a bug: log it, keep serving, try again next time
                log.exception("%s failed unexpectedly", job.__name__)

    def checkpoint(self) -> None:
        """Persist recovery points and producer state, so a crash replays only the tail."""
        if self._snapshot_path is None:
            return
        snapshots = {
            f"{topic}-{index}": [p.log.log_end_offset, p.producers.snapshot(), p.topic_id]
            for (topic, index), p in list(self.partitions.items())
        }
        atomic_write(self._snapshot_path, msgpack.packb(snapshots, use_bin_type=True))
        self.manager.checkpoint_recovery_points()

    def enforce_retention(self) -> None:
        removed = self.manager.enforce_retention()
        if removed:
            log.info("retention removed %d segment(s)", removed)

    # -- topics ------------------------------------------------------------------------------

    def partition(self, topic: str, index: int, topic_id: str = "") -> Partition:
        """The partition, if it exists -- and, when ``topic_id`` is given, belongs to that
        incarnation of the topic (else ``UnknownTopicIdError``)."""
        try:
            partition = self.partitions[(topic, index)]
        except KeyError:
            if (topic, index) in self.manager.offline:  # refused at startup: say why
                self.manager.get_log(topic, index)
            raise UnknownTopicOrPartitionError(
                f"unknown topic or partition {topic}[{index}]"
            ) from None
        if topic_id and topic_id != partition.topic_id:
            raise UnknownTopicIdError(
                f"topic {topic} with id {topic_id} no longer exists: it was deleted, and the "
                f"topic of that name now has id {partition.topic_id}; refresh metadata"
            )
        return partition

    def topic_id(self, name: str) -> str | None:
        """The id of the topic's current incarnation (None if there is no such topic)."""
        info = self.manager.topic(name)
        return info.topic_id if info is not None else None

    def create_topic(self, name: str, partitions: int | None, configs: dict[str, int]):
        info = self.manager.create_topic(name, partitions, configs)
        self._add_partitions(name, range(info.config.partitions))
        self.groups.topics_changed()
        log.info("created topic %s (id %s) with %d partition(s)", name, info.topic_id, info.config.partitions)
        return info

    def alter_topic(self, name: str, partitions: int | None, configs: dict[str, int]) -> str:
        """Set configs and/or add partitions (see ``LogManager.alter_topic``); returns the
        topic's id."""
        if name.startswith("__"):
            raise InvalidRequestError(f"internal topic {name} cannot be altered")
        before = self.manager.alter_topic(name, partitions, configs)
        after = self.manager.topics()[name].config.partitions
        self._add_partitions(name, range(before, after))
        if after != before:
            self.groups.topics_changed()
        log.info("altered topic %s: %d partition(s)%s", name, after,
                 "".join(f", {k}={v}" for k, v in sorted(configs.items())))
        return self.manager.topics()[name].topic_id

    def _add_partitions(self, name: str, indexes: range) -> None:
        topic_id = self.manager.topics()[name].topic_id
        for index in indexes:
            key = (name, index)
            partition = Partition(name, index, self.manager.get_log(name, index), topic_id=topic_id)
            self.partitions[key] = partition
            if self._nursery is not None:
                self._start_flusher(key, partition)

    def delete_topic(self, name: str) -> str:
        """Delete the topic and everything kept for it; returns the id it had."""
        if name.startswith("__"):
            raise InvalidRequestError(f"internal topic {name} cannot be deleted")
        topic_id = self.topic_id(name)
        self.manager.delete_topic(name)  # the commit point: topics.json no longer names it
        for key in [k for k in self.partitions if k[0] == name]:
            partition = self.partitions.pop(key)
            partition.close()
            scope = self._scopes.pop(key, None)
            if scope is not None:
                scope.cancel()
        self.groups.topic_deleted(name)
        log.info("deleted topic %s (id %s)", name, topic_id)
        return topic_id

    def close(self) -> None:
        """Checkpoint and close every log; the manager writes the clean-shutdown marker."""
        try:
            self.checkpoint()
        except OSError as exc:  # the logs still get flushed and closed
            log.error("producer-state checkpoint failed at shutdown: %s", exc)
        self.manager.close()
