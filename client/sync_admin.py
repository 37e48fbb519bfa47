"""The blocking ``Admin``: topics, offsets and consumer groups over one ``SyncConnection``.

Request building and result checking live in ``client.admin_ops``, shared with the trio
``Admin``. Importing it pulls in neither trio nor the producer and consumer machinery.
"""

from __future__ import annotations

from sluice.client import admin_ops as ops
from sluice.client.sync_connection import SyncConnection


class Admin(ops.AdminOptions):
    """Blocking admin: ``with Admin(bootstrap) as admin: admin.create_topic("t", 3)``
    (options: ``AdminOptions``)."""

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self._conn = SyncConnection(
            self.bootstrap, self.client_id, request_timeout_s=self.request_timeout_s,
            reconnect_timeout_s=self.reconnect_timeout_s,
        )

    def __enter__(self) -> Admin:
        self._conn.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self._conn.close()

    def create_topic(self, name: str, partitions: int = 1, configs=None) -> None:
        self.create_topics([(name, partitions, configs or {})])

    def create_topics(self, specs) -> None:
        ops.check_topic_results(self._conn.request(ops.create_topics(specs)))

    def alter_topic(self, name: str, partitions: int | None = None, configs=None) -> None:
        """Add partitions (``partitions``: the new count) and/or set configs of a topic."""
        ops.check_topic_results(self._conn.request(ops.alter_topics([(name, partitions, configs)])))

    def delete_topic(self, name: str) -> None:
        self.delete_topics([name])

    def delete_topics(self, names) -> None:
        ops.check_topic_results(self._conn.request(ops.delete_topics(names)))

    def list_topics(self) -> list[str]:
        return ops.topic_names(self._conn.request(ops.metadata()))

    def describe_topic(self, name: str) -> ops.TopicInfo:
        return self.describe_topics([name])[0]

    def describe_topics(self, names=None) -> list[ops.TopicInfo]:
        return ops.topic_infos(self._conn.request(ops.describe_topics(names)))

    def list_offsets(self, specs) -> dict:
        return ops.offsets(self._conn.request(ops.list_offsets(specs)))

    def list_groups(self) -> list[ops.GroupListing]:
        return ops.group_listings(self._conn.request(ops.list_groups()))

    def describe_group(self, group_id: str) -> ops.GroupInfo:
        """Members, committed offsets, log ends and lag (see ``client.Admin.describe_group``)."""
        description = ops.group_description(
            self._conn.request(ops.describe_groups([group_id])), group_id)
        missing = ops.unlisted_assigned(description)
        ends = {}
        if missing:
            found = self.list_offsets({tp: "latest" for tp in missing})
            ends = {tp: v[0] for tp, v in found.items() if v is not None}
        return ops.group_info(description, ends)

    def delete_groups(self, group_ids) -> None:
        """Delete groups without members, and their committed offsets
        (``GroupNotEmptyError`` if one has members, ``GroupIdNotFoundError`` if unknown)."""
        ops.check_group_results(self._conn.request(ops.delete_groups(group_ids)))

    def alter_group_offsets(self, group_id: str, offsets: dict) -> None:
        """Commit ``{(topic, partition): offset}`` for a group that has no members (as
        ``sluice groups reset-offsets`` does); a group with members refuses it."""
        ops.check_partition_results(self._conn.request(ops.alter_group_offsets(group_id, offsets)))
