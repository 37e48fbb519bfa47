"""LogManager: topics on disk, names, clean and unclean reopen, the in-memory mode."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from sluice.broker.storage import (
    FileLog,
    LogManager,
    LogStore,
    MemoryLog,
    PartitionLog,
    TopicConfig,
    ValidatedBatches,
    validate_topic_name,
)
from sluice.protocol.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from storage_helpers import crash, fill, make_batch, values


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.mark.parametrize("memory", [False, True])
def test_the_manager_implements_the_log_store_interface(data_dir, memory):
    manager = LogManager(data_dir, memory=memory).open()
    manager.create_topic("t", 1)
    assert isinstance(manager, LogStore) and isinstance(manager.get_log("t", 0), PartitionLog)
    manager.close()


def test_create_list_reopen_delete(data_dir):
    manager = LogManager(data_dir).open()
    info = manager.create_topic("orders", 3, {"retention_ms": -1})
    assert info.config.partitions == 3 and info.config.retention_ms == -1
    manager.create_topic("__offsets", internal=True)
    fill(manager.get_log("orders", 2), 5)
    assert sorted(manager.topics()) == ["__offsets", "orders"]
    assert len(list(manager.logs())) == 4
    manager.close()
    assert (data_dir / ".clean-shutdown").exists()

    manager = LogManager(data_dir).open()
    assert manager.was_clean and not (data_dir / ".clean-shutdown").exists()
    assert manager.topics()["orders"].config == info.config
    assert manager.get_log("orders", 2).log_end_offset == 15
    manager.delete_topic("orders")
    assert not (data_dir / "orders-0").exists()
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.get_log("orders", 0)
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.delete_topic("orders")
    manager.close()
    assert sorted(LogManager(data_dir).open().topics()) == ["__offsets"]


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "/", "a\0b", "x" * 250, "caf\u00e9", "\u0661", "a b", "a\n", None, 7, "__x"],
)
def test_bad_topic_names(data_dir, name):
    manager = LogManager(data_dir).open()
    with pytest.raises(InvalidTopicError):
        manager.create_topic(name)
    assert manager.topics() == {} and sorted(os.listdir(data_dir)) == [".lock", "meta"]


def test_good_topic_names():
    for name in ("a", "A.b_c-9", "x" * 249, "..."):
        assert validate_topic_name(name) == name
    assert validate_topic_name("__consumer_offsets", internal=True)


def test_create_errors(data_dir):
    manager = LogManager(data_dir).open()
    manager.create_topic("t")
    with pytest.raises(TopicAlreadyExistsError):
        manager.create_topic("t")
    with pytest.raises(InvalidPartitionsError):
        manager.create_topic("u", 0)
    with pytest.raises(InvalidConfigError):
        manager.create_topic("u", 1, {"nope": 1})
    with pytest.raises(InvalidConfigError):
        manager.create_topic("u", 1, {"segment_bytes": -5})
    assert list(manager.topics()) == ["t"]


def test_defaults_apply_to_topics_without_overrides(data_dir):
    manager = LogManager(data_dir, TopicConfig(segment_bytes=5_000)).open()
    manager.create_topic("t", configs={"retention_bytes": 10})
    manager.close()
    reopened = LogManager(data_dir, TopicConfig(segment_bytes=7_000)).open()
    config = reopened.topics()["t"].config
    assert (config.segment_bytes, config.retention_bytes) == (7_000, 10)


def test_unclean_reopen_recovers_from_checkpointed_points(data_dir):
    manager = LogManager(data_dir, TopicConfig(segment_bytes=2_000)).open()
    manager.create_topic("t", 2)
    log = manager.get_log("t", 0)
    fill(log, 20)
    log.flush()
    manager.checkpoint_recovery_points()
    fill(log, 5)
    log.flush()
    points = json.loads((data_dir / "meta" / "recovery-points.json").read_bytes())
    topic_id = manager.topics()["t"].topic_id
    assert points == {"t": {"topic_id": topic_id, "offsets": {"0": 60, "1": 0}}}
    last = sorted((data_dir / "t-0").glob("*.log"))[-1]
    with open(last, "ab") as f:
        f.write(b"\xff" * 100)  # torn tail after the crash
    crash(manager)
    manager = LogManager(data_dir, TopicConfig(segment_bytes=2_000)).open()
    assert not manager.was_clean
    log = manager.get_log("t", 0)
    assert log.log_end_offset == 75
    assert values(log.read_bytes(72, 1)) == [(72, 72), (73, 73), (74, 74)]
    log.sanity_check()


def test_crash_between_topics_json_and_directories_is_repaired(data_dir):
    manager = LogManager(data_dir).open()
    manager.create_topic("keep", 2)
    manager.create_topic("gone")
    manager.close()
    os.rename(data_dir / "gone-0", data_dir / "stale-0")  # a topic deleted mid-way
    (data_dir / ".clean-shutdown").unlink()
    shutil.rmtree(data_dir / "keep-1")  # a topic created mid-way
    topics = json.loads((data_dir / "meta" / "topics.json").read_bytes())
    del topics["gone"]
    (data_dir / "meta" / "topics.json").write_text(json.dumps(topics))
    manager = LogManager(data_dir).open()
    assert sorted(os.listdir(data_dir)) == [".lock", "keep-0", "keep-1", "meta"]
    assert manager.get_log("keep", 1).log_end_offset == 0


def test_retention_across_topics(data_dir):
    manager = LogManager(data_dir, TopicConfig(segment_bytes=500, retention_ms=1_000), now_ms=lambda: 10**6).open()
    manager.create_topic("a")
    manager.create_topic("b", configs={"retention_ms": -1})
    for topic in "ab":
        fill(manager.get_log(topic, 0), 20)
    segments = manager.get_log("a", 0).segment_count
    assert segments > 1
    assert manager.enforce_retention(now_ms=10**7) == segments - 1
    assert manager.get_log("a", 0).segment_count == 1
    assert manager.get_log("b", 0).log_start_offset == 0


def test_memory_mode_touches_no_files(tmp_path):
    manager = LogManager(None, memory=True).open()
    manager.create_topic("t", 2)
    log = manager.get_log("t", 1)
    assert isinstance(log, MemoryLog)
    log.append(ValidatedBatches.parse(make_batch(0, 3)))
    assert values(log.read_bytes(0, 100)) == [(0, 0), (1, 1), (2, 2)]
    manager.checkpoint_recovery_points()
    manager.delete_topic("t")
    manager.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        LogManager(None)


def test_file_mode_opens_file_logs(data_dir):
    manager = LogManager(data_dir).open()
    manager.create_topic("t")
    assert isinstance(manager.get_log("t", 0), FileLog)
    manager.close()


def test_retention_while_topics_are_created_and_deleted(data_dir, monkeypatch):
    """Found by tests/perf/fairness_bench.py: retention runs in a worker thread; a topic
    created or deleted by the event loop meanwhile made it raise 'dictionary changed size
    during iteration', which escaped the periodic task and stopped the whole broker."""
    manager = LogManager(data_dir, TopicConfig(segment_bytes=500, retention_bytes=0)).open()
    for name in ("a", "b", "c"):
        manager.create_topic(name)
        fill(manager.get_log(name, 0), 20)
    first = manager.get_log("a", 0)
    original = first.enforce_retention

    def meanwhile(now_ms=None):  # the loop, between two logs of the walk
        manager.create_topic("new")
        manager.delete_topic("b")
        manager.delete_topic("c")
        return original(now_ms)

    monkeypatch.setattr(first, "enforce_retention", meanwhile)
    assert manager.enforce_retention() > 0  # a's; b and c were deleted meanwhile: skipped
    assert first.segment_count == 1 and sorted(manager.topics()) == ["a", "new"]
    manager.close()
