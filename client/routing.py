"""What a client knows of the cluster, sans-IO: brokers, topics, each partition's leader.

``ClusterMetadata`` is filled from metadata answers (``update``) and from handshakes
(``found``), and answers the routing questions: which broker leads a partition, where a
broker is reached.

A broker is reached at the address the client found it at, if any -- the bootstrap address
whose handshake named that broker id -- else at the address the broker advertises. Behind a
proxy, NAT or port mapping the advertised address may not be reachable from the client at
all, while the one it bootstrapped through is known to work; a handshake that names another
broker than the one expected (a load balancer that now routes elsewhere) makes the client
forget that address and use the advertised one (``Network``).
"""

from __future__ import annotations

from typing import NamedTuple

from sluice.protocol import messages as m
from sluice.protocol.errors import ApiError, error_for_code

Address = tuple[str, int]


class TopicMeta(NamedTuple):
    """What clients route by: a topic's partition count, the id of its incarnation and the
    broker leading each partition (-1: none now)."""

    partitions: int
    topic_id: str
    leaders: tuple[int, ...] = ()


def topic_metas(response: m.MetadataResponse) -> dict[str, TopicMeta | ApiError]:
    """Each topic of a metadata answer: its ``TopicMeta``, or the error it has (unknown...)."""
    return {
        t.name: error_for_code(t.error, t.message or f"unknown topic {t.name!r}") if t.error
        else TopicMeta(len(t.partitions), t.topic_id,
                       tuple(p.leader for p in sorted(t.partitions, key=_partition_number)))
        for t in response.topics
    }


def _partition_number(meta: m.PartitionMetadata) -> int:
    return meta.partition


class ClusterMetadata:
    """Brokers by id, where each was found, and the last known ``TopicMeta`` of each topic."""

    def __init__(self) -> None:
        self.brokers: dict[int, Address] = {}  # as advertised in metadata answers
        self.found_at: dict[int, Address] = {}  # as reached through a bootstrap address
        self.topics: dict[str, TopicMeta] = {}

    def update(self, response: m.MetadataResponse) -> dict[str, TopicMeta | ApiError]:
        """Take a metadata answer: its brokers, and each topic's partitions and leaders (a
        topic it says does not exist is forgotten). Returns what it says of each topic."""
        if response.brokers:
            self.brokers = {b.id: (b.host, b.port) for b in response.brokers}
        found = topic_metas(response)
        for topic, meta in found.items():
            if isinstance(meta, ApiError):
                self.topics.pop(topic, None)
            else:
                self.topics[topic] = meta
        return found

    def found(self, node: int, address: Address) -> None:
        """A handshake at ``address`` named broker ``node``."""
        self.found_at[node] = address

    def address_of(self, node: int) -> Address | None:
        return self.found_at.get(node) or self.brokers.get(node)

    def leader(self, topic: str, partition: int) -> int | None:
        """The broker leading the partition, if known (None: look the topic up)."""
        meta = self.topics.get(topic)
        if meta is None or partition >= len(meta.leaders):
            return None
        node = meta.leaders[partition]
        return node if node >= 0 else None

    def nodes(self) -> list[int]:
        """Every broker known, by id."""
        return sorted({*self.brokers, *self.found_at})
