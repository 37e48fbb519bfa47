"""``Broker``: the domain layer's root -- what protocol adapters call, and what runs beside them.

It holds the topics (``TopicRegistry``, with every partition), producer ids, the group
coordinator (memberships and committed offsets) and the counters metrics read; adapters
build their requests' work from it (``produce``, ``fetch``, ``init_producer_id``...).

It owns the background tasks that belong to the data rather than to a connection: one
group-commit flusher per partition (started for new partitions too; each ends when its
partition closes), the periodic checkpoint (recovery points and producer state), retention,
and the group coordinator's expiry and compaction. ``close`` checkpoints and closes the logs.

Shutdown: ``begin_shutdown`` marks the broker as stopping and wakes every long poll, which
then answers with what it has; adapters refuse new requests meanwhile. (Counting requests
in flight is the adapters' business: ``adapters.inflight``.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.domain.fetching import Fetch, FetchTarget
from sluice.broker.domain.groups import OFFSETS_TOPIC, GroupCoordinator
from sluice.broker.domain.partition import Partition
from sluice.broker.domain.producers import ProducerIdAllocator
from sluice.broker.domain.producing import Produce, ProduceTarget
from sluice.broker.domain.snapshots import ProducerSnapshots
from sluice.broker.domain.stats import RequestStats
from sluice.broker.domain.topics import TopicRegistry
from sluice.broker.storage import LogStore
from sluice.protocol.errors import StorageError

log = logging.getLogger("sluice.broker")


class Broker:
    """One broker's domain state, and the tasks that maintain it (``run``)."""

    def __init__(self, config: BrokerConfig, store: LogStore) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.store = store
        meta = None if config.in_memory else config.data_dir / "meta"
        self.snapshots = ProducerSnapshots(meta / "producer-state" if meta else None)
        self.topics = TopicRegistry(store, self.snapshots.load())
        self.producer_ids = ProducerIdAllocator(
            meta / "producer-ids" if meta else None, self.topics.max_producer_id() + 1
        )
        if self.topics.topic(OFFSETS_TOPIC) is None:
            self.topics.create(OFFSETS_TOPIC, 1, {}, internal=True)
        self.groups = GroupCoordinator(self.topics, config)
        self.topics.listeners.append(self.groups)
        self.requests = RequestStats()
        self.stopping = False
        self._nursery: trio.Nursery | None = None
        self.topics.listeners.append(self)

    # -- the work adapters ask for ---------------------------------------------------------------

    def produce(self, targets: Sequence[ProduceTarget], acks: int) -> Produce:
        """A produce request's appends (``Produce``: run ``append_inline`` first)."""
        return Produce(self.topics, targets, acks)

    def fetch(
        self, targets: Sequence[FetchTarget], *, max_bytes: int, min_bytes: int, max_wait_ms: int
    ) -> Fetch:
        """A fetch request's reads (``Fetch``: ``poll``, then ``wait`` if it said None)."""
        return Fetch(self.topics, targets, max_bytes=max_bytes, min_bytes=min_bytes,
                     max_wait_ms=max_wait_ms, stopping=lambda: self.stopping)

    def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """``(producer id, epoch)`` for an idempotent producer (``ProducerIdAllocator``)."""
        return self.producer_ids.init_producer(producer_id, producer_epoch)

    # -- lifecycle --------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop waiting for data: every long poll answers now with what it has."""
        self.stopping = True
        for partition in self.topics:
            partition.wake_watchers()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run flushers, checkpoints, retention and the groups' upkeep until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.partitions_added(list(self.topics))
            nursery.start_soon(self._periodic, self.config.checkpoint_interval_s, self.checkpoint)
            nursery.start_soon(
                self._periodic, self.config.retention_check_interval_s, self.enforce_retention
            )
            nursery.start_soon(self.groups.run_expiry)
            nursery.start_soon(self.groups.run_compaction)
            task_status.started()

    def partitions_added(self, partitions: Sequence[Partition]) -> None:
        """(``TopicListener``) Each new partition gets its flusher, once ``run`` runs."""
        if self._nursery is not None:
            for partition in partitions:
                self._nursery.start_soon(partition.run_flusher)

    def topic_deleted(self, name: str) -> None:
        """(``TopicListener``) Nothing to do: a closed partition's flusher ends by itself."""

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
        """Persist producer state and recovery points, so a crash replays only the tail."""
        self.snapshots.save(self.topics)
        self.store.checkpoint_recovery_points()

    def enforce_retention(self) -> None:
        removed = self.store.enforce_retention()
        if removed:
            log.info("retention removed %d segment(s)", removed)

    def close(self) -> None:
        """Checkpoint and close every log; the store writes the clean-shutdown marker."""
        try:
            self.snapshots.save(self.topics)
        except OSError as exc:  # the logs still get flushed and closed
            log.error("producer-state checkpoint failed at shutdown: %s", exc)
        self.store.close()
