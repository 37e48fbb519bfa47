"""The descriptor budget: partitions and connections admitted while they fit RLIMIT_NOFILE,
topics refused whole (torture scenario 10 runs a real broker at the limit)."""

from __future__ import annotations

import errno
import json
import os

import pytest
from sluice.broker.descriptors import CONNECTION_HEADROOM, RESERVED, DescriptorBudget
from sluice.broker.storage import LogManager
from sluice.broker.storage.log import FileLog
from sluice.protocol.errors import StorageError, TooManyConnectionsError


def test_partitions_fit_until_only_the_connections_headroom_is_left():
    budget = DescriptorBudget(limit=200, max_connections=100)
    assert budget.fixed == 16 + RESERVED  # sealed handles: a sixteenth of the limit, >= 16
    fits = 200 - budget.fixed - CONNECTION_HEADROOM
    budget.admit_partitions(fits - 1, "a")
    with pytest.raises(StorageError, match=r"cannot create topic 'b' with 2 partition\(s\).*"
                       r"RLIMIT_NOFILE is 200.*so 1 more fit\. Nothing was created: raise"):
        budget.admit_partitions(2, "b")
    assert budget.partitions == fits - 1  # nothing counted for the refused topic
    budget.admit_partitions(1, "c")
    with pytest.raises(StorageError, match="holds 5 partition.*raise the open-files limit"):
        budget.admit_partitions(5)
    budget.release_partitions(3)
    budget.admit_partitions(3, "d")


def test_connections_fit_until_the_descriptors_or_max_connections_run_out():
    budget = DescriptorBudget(limit=200, max_connections=3)
    assert all(budget.admit_connection() is None for _ in range(3))
    refused = budget.admit_connection()
    assert isinstance(refused, TooManyConnectionsError) and "max_connections (3)" in refused.message
    assert budget.connections == 3
    budget = DescriptorBudget(limit=200, max_connections=1000)
    budget.admit_partitions(200 - budget.fixed - CONNECTION_HEADROOM, "t")
    assert all(budget.admit_connection() is None for _ in range(CONNECTION_HEADROOM))
    refused = budget.admit_connection()
    assert isinstance(refused, TooManyConnectionsError)
    assert "RLIMIT_NOFILE 200" in refused.message and "raise the open-files limit" in refused.message
    budget.release_connection()
    assert budget.admit_connection() is None


def test_a_topic_that_fails_part_way_is_removed_whole(tmp_path, monkeypatch):
    """A descriptor can still run out while a topic's partitions are opened (something else
    took the last ones): nothing of the topic may stay -- before, it stayed listed but its
    partitions failed every request."""
    budget = DescriptorBudget(limit=10_000, max_connections=10)
    manager = LogManager(tmp_path, descriptors=budget).open()
    manager.create_topic("kept", 2)
    real_open, opened = FileLog.open, []

    def open_until_emfile(directory, config, **kwargs):
        if len(opened) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        opened.append(directory)
        return real_open(directory, config, **kwargs)

    monkeypatch.setattr(FileLog, "open", open_until_emfile)
    with pytest.raises(StorageError, match="cannot create topic 'big': Too many open files; "
                       "nothing was created: raise the open-files limit"):
        manager.create_topic("big", 5)
    monkeypatch.undo()
    assert sorted(manager.topics()) == ["kept"] and budget.partitions == 2
    assert sorted(os.listdir(tmp_path)) == [".lock", "kept-0", "kept-1", "meta"]
    assert set(json.loads((tmp_path / "meta" / "topics.json").read_bytes())) == {"kept"}
    manager.create_topic("big", 5)  # and it can be created once descriptors are there
    assert budget.partitions == 7
    manager.delete_topic("big")
    assert budget.partitions == 2
    manager.close()
