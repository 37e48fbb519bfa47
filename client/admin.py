"""The trio ``Admin``: topics and offsets. Request building and result checking live in
``client.admin_ops`` so the blocking ``client.sync.Admin`` shares them."""

from __future__ import annotations

from client import admin_ops as ops
from client.connection import DEFAULT_BOOTSTRAP
from client.lifecycle import ClientLifecycle


class Admin(ClientLifecycle):
    """``async with Admin(bootstrap) as admin: await admin.create_topic("orders", 3)``."""

    def __init__(self, bootstrap: str = DEFAULT_BOOTSTRAP, *, client_id: str = "sluice-admin"):
        self.bootstrap = bootstrap
        self.client_id = client_id

    async def create_topic(self, name: str, partitions: int = 1, configs=None) -> None:
        """Create a topic (``TopicAlreadyExistsError``, ``InvalidTopicError``...)."""
        await self.create_topics([(name, partitions, configs or {})])

    async def create_topics(self, specs) -> None:
        """``specs``: ``(name, partitions, configs)`` triples; raises the first error."""
        ops.check_topic_results(await self._cluster.request(ops.create_topics(specs)))

    async def delete_topic(self, name: str) -> None:
        await self.delete_topics([name])

    async def delete_topics(self, names) -> None:
        ops.check_topic_results(await self._cluster.request(ops.delete_topics(names)))

    async def list_topics(self) -> list[str]:
        return ops.topic_names(await self._cluster.request(ops.metadata()))

    async def describe_topic(self, name: str) -> ops.TopicInfo:
        return (await self.describe_topics([name]))[0]

    async def describe_topics(self, names=None) -> list[ops.TopicInfo]:
        return ops.topic_infos(await self._cluster.request(ops.describe_topics(names)))

    async def list_offsets(self, specs) -> dict:
        """``{(topic, partition): timestamp or "earliest"/"latest"}`` ->
        ``{(topic, partition): (offset, timestamp) or None}``."""
        return ops.offsets(await self._cluster.request(ops.list_offsets(specs)))
