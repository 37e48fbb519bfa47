"""The trio ``Admin``: topics, offsets and consumer groups. Request building and result checking live in
``client.admin_ops`` so the blocking ``client.sync.Admin`` shares them."""

from __future__ import annotations

from sluice.client import admin_ops as ops
from sluice.client.lifecycle import ClientLifecycle


class Admin(ops.AdminOptions, ClientLifecycle):
    """``async with Admin(bootstrap) as admin: await admin.create_topic("orders", 3)``
    (options: ``AdminOptions``)."""

    async def create_topic(self, name: str, partitions: int = 1, configs=None) -> None:
        """Create a topic (``TopicAlreadyExistsError``, ``InvalidTopicError``...)."""
        await self.create_topics([(name, partitions, configs or {})])

    async def create_topics(self, specs) -> None:
        """``specs``: ``(name, partitions, configs)`` triples; raises the first error."""
        ops.check_topic_results(await self._cluster.request(ops.create_topics(specs)))

    async def alter_topic(self, name: str, partitions: int | None = None, configs=None) -> None:
        """Add partitions (``partitions``: the new count) and/or set configs of a topic."""
        ops.check_topic_results(await self._cluster.request(ops.alter_topics([(name, partitions, configs)])))

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

    async def delete_groups(self, group_ids) -> None:
        """Delete groups without members, and their committed offsets
        (``GroupNotEmptyError`` if one has members, ``GroupIdNotFoundError`` if unknown)."""
        ops.check_group_results(await self._cluster.request(ops.delete_groups(group_ids)))

    async def alter_group_offsets(self, group_id: str, offsets: dict) -> None:
        """Commit ``{(topic, partition): offset}`` for a group that has no members (as
        ``sluice groups reset-offsets`` does); a group with members refuses it."""
        ops.check_partition_results(await self._cluster.request(ops.alter_group_offsets(group_id, offsets)))
