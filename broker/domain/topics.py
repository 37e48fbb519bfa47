"""``TopicRegistry``: the broker's topics and their partitions, and the only way topics come
and go.

Invariant: ``partition(topic, p)`` finds exactly the online partitions of the topics the
store holds, each bound to its topic's current incarnation (``topic_id``). ``create``,
``alter`` and ``delete`` change the store first (``topics.json`` is the commit point), then
the partitions, then tell every ``TopicListener`` (the group coordinator rebalances and drops
committed offsets; the broker starts and stops flushers), so whatever is kept per topic is
told of every change. Requests may name the incarnation they mean (``topic_id``);
``partition`` refuses a stale one with ``UnknownTopicIdError``, so nothing meant for a
deleted topic lands in its successor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from sluice.broker.domain.partition import Partition
from sluice.broker.domain.producers import ProducerStates
from sluice.broker.storage import LogStore, TopicInfo
from sluice.broker.storage.manager import INTERNAL_PREFIX
from sluice.protocol.errors import (
    InvalidRequestError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger("sluice.broker")


def is_internal(name: str) -> bool:
    """Internal topics (``__consumer_offsets``) are hidden from listings, never altered or
    deleted by a request."""
    return name.startswith(INTERNAL_PREFIX)


class TopicListener(Protocol):
    """Told of every change to the set of partitions, after it happened."""

    def partitions_added(self, partitions: Sequence[Partition]) -> None:
        """New partitions: of a topic created, or added to one by ``alter``."""

    def topic_deleted(self, name: str) -> None:
        """Every partition of ``name`` is gone (closed: its waiters woken)."""


class TopicRegistry:
    """Topics by name, partitions by ``(topic, index)``."""

    def __init__(self, store: LogStore, snapshots: Mapping[str, list] | None = None) -> None:
        """Bind every log of ``store`` to a partition, restoring its producer state from
        ``snapshots`` (``ProducerSnapshots.load``) plus the headers after it."""
        self.store = store
        self.listeners: list[TopicListener] = []
        self._partitions: dict[tuple[str, int], Partition] = {}
        topics = store.topics()
        snapshots = snapshots or {}
        for (topic, index), plog in store.logs():
            topic_id = topics[topic].topic_id
            producers = ProducerStates.restore(plog, snapshots.get(f"{topic}-{index}"), topic_id)
            self._partitions[(topic, index)] = Partition(topic, index, plog, producers, topic_id=topic_id)

    # -- lookups -----------------------------------------------------------------------------

    def topic(self, name: str) -> TopicInfo | None:
        """The topic's name, config and id, or None."""
        return self.store.topic(name)

    def topic_id(self, name: str) -> str | None:
        """The id of the topic's current incarnation (None if there is no such topic)."""
        info = self.store.topic(name)
        return info.topic_id if info is not None else None

    def names(self, *, internal: bool = False) -> list[str]:
        """Every topic's name, sorted; internal ones only if asked for."""
        return sorted(name for name in self.store.topics() if internal or not is_internal(name))

    def partition(self, topic: str, index: int, topic_id: str = "") -> Partition:
        """The partition, if it exists -- and, when ``topic_id`` is given, belongs to that
        incarnation of the topic (else ``UnknownTopicIdError``). A partition refused at
        startup raises ``StorageError`` saying why."""
        try:
            partition = self._partitions[(topic, index)]
        except KeyError:
            if (topic, index) in self.store.offline:
                self.store.get_log(topic, index)  # raises the reason
            raise UnknownTopicOrPartitionError(
                f"unknown topic or partition {topic}[{index}]"
            ) from None
        if topic_id and topic_id != partition.topic_id:
            raise UnknownTopicIdError(
                f"topic {topic} with id {topic_id} no longer exists: it was deleted, and the "
                f"topic of that name now has id {partition.topic_id}; refresh metadata"
            )
        return partition

    def find(self, topic: str, index: int) -> Partition | None:
        """The online partition, or None."""
        return self._partitions.get((topic, index))

    def __iter__(self) -> Iterator[Partition]:
        """Every online partition (a snapshot: safe while topics change)."""
        return iter(list(self._partitions.values()))

    def max_producer_id(self) -> int:
        """The largest producer id any partition remembers (-1 if none)."""
        return max((p.producers.max_producer_id() for p in self._partitions.values()), default=-1)

    # -- lifecycle ---------------------------------------------------------------------------

    def create(
        self, name: str, partitions: int | None, configs: Mapping[str, int], *, internal: bool = False
    ) -> TopicInfo:
        info = self.store.create_topic(name, partitions, configs, internal=internal)
        self._add_partitions(name, range(info.config.partitions))
        log.info("created topic %s (id %s) with %d partition(s)", name, info.topic_id, info.config.partitions)
        return info

    def alter(self, name: str, partitions: int | None, configs: Mapping[str, int]) -> str:
        """Set configs and/or add partitions (``LogStore.alter_topic``); returns the topic's id."""
        if is_internal(name):
            raise InvalidRequestError(f"internal topic {name} cannot be altered")
        before = self.store.alter_topic(name, partitions, configs)
        info = self.store.topics()[name]
        self._add_partitions(name, range(before, info.config.partitions))
        log.info("altered topic %s: %d partition(s)%s", name, info.config.partitions,
                 "".join(f", {k}={v}" for k, v in sorted(configs.items())))
        return info.topic_id

    def delete(self, name: str) -> str:
        """Delete the topic and everything kept for it; returns the id it had."""
        if is_internal(name):
            raise InvalidRequestError(f"internal topic {name} cannot be deleted")
        topic_id = self.topic_id(name)
        self.store.delete_topic(name)  # the commit point: topics.json no longer names it
        for key in [k for k in self._partitions if k[0] == name]:
            self._partitions.pop(key).close()
        for listener in self.listeners:
            listener.topic_deleted(name)
        log.info("deleted topic %s (id %s)", name, topic_id)
        return topic_id

    def _add_partitions(self, name: str, indexes: range) -> None:
        if not indexes:
            return
        topic_id = self.store.topics()[name].topic_id
        added = []
        for index in indexes:
            partition = Partition(name, index, self.store.get_log(name, index), topic_id=topic_id)
            self._partitions[(name, index)] = partition
            added.append(partition)
        for listener in self.listeners:
            listener.partitions_added(added)
