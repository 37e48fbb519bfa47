"""The trio ``Admin``: topics, offsets and consumer groups. Request building and result checking live in
``client.admin_ops`` so the blocking ``client.sync.Admin`` shares them."""

from __future__ import annotations

from sluice.client import admin_ops as ops
from sluice.client.connection import DEFAULT_BOOTSTRAP, timeout_s
from sluice.client.lifecycle import ClientLifecycle


class AdminOptions:
    """What the trio and the blocking ``Admin`` take: each call's request is answered within
    ``request_timeout_ms`` or fails with ``RequestTimeoutError``; a lost connection is
    reopened for up to ``reconnect_timeout_ms``."""

    def __init__(
        self,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "sluice-admin",
        request_timeout_ms: int = 30_000,
        reconnect_timeout_ms: int = 30_000,
    ):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_s = timeout_s("request_timeout_ms", request_timeout_ms)
        self.reconnect_timeout_s = timeout_s("reconnect_timeout_ms", reconnect_timeout_ms, zero=True)


class Admin(AdminOptions, ClientLifecycle):
    """``async with Admin(bootstrap) as admin: await admin.create_topic("orders", 3)``
    (options: ``AdminOptions``)."""

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

    async def list_groups(self) -> list[ops.GroupListing]:
        """Every group the broker knows: ``(group_id, state, members)``."""
        return ops.group_listings(await self._cluster.request(ops.list_groups()))

    async def describe_group(self, group_id: str) -> ops.GroupInfo:
        """Members and their partitions; per partition committed offset, log end and lag
        (``end_offset - committed``), and the total lag. ``GroupIdNotFoundError`` if unknown."""
        response = await self._cluster.request(ops.describe_groups([group_id]))
        description = ops.group_description(response, group_id)
        missing = ops.unlisted_assigned(description)
        ends = {}
        if missing:
            found = ops.offsets(await self._cluster.request(
                ops.list_offsets({tp: "latest" for tp in missing})))
            ends = {tp: v[0] for tp, v in found.items() if v is not None}
        return ops.group_info(description, ends)
