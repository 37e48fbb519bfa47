"""FileLog remembers where reads ended, so a consumer's next fetch skips the index lookup.

The shortcut must never change what a read returns: every read here is checked against
MemoryLog, which has no such shortcut, holding the same batches.
"""

from __future__ import annotations

import random

import pytest
from sluice.broker.storage import FileLog, MemoryLog, TopicConfig, ValidatedBatches
from sluice.broker.storage import segment as segment_module
from sluice.client.records import next_offset_after
from sluice.protocol.errors import StorageError
from storage_helpers import make_batch

CONFIG = TopicConfig(segment_bytes=4_000, index_interval_bytes=300)


def twin_logs(tmp_path):
    return FileLog.open(tmp_path / "t-0", CONFIG, recovery_point=None), MemoryLog(CONFIG)


def append_both(logs, rng: random.Random, batches: int) -> None:
    for _ in range(batches):
        start = logs[0].log_end_offset
        batch = make_batch(start, rng.randint(1, 6), size=rng.choice((10, 60, 400)))
        for log in logs:
            log.append(ValidatedBatches.parse(bytearray(batch)))


@pytest.fixture
def locates(monkeypatch):
    """Counts the index lookups (``Segment._locate``) that reads make."""
    calls = []
    original = segment_module.Segment._locate

    def counting(self, offset):
        calls.append(offset)
        return original(self, offset)

    monkeypatch.setattr(segment_module.Segment, "_locate", counting)
    return calls


def test_reads_match_a_log_without_the_shortcut(tmp_path):
    """Consumers that read on from where they stopped, jump to any offset (mid-batch too),
    and read while appends go on, with budgets from one byte to more than a segment."""
    rng = random.Random(7)
    file_log, memory_log = logs = twin_logs(tmp_path)
    append_both(logs, rng, 60)
    positions = [0, 0, 0]
    for step in range(1_500):
        if step % 50 == 0:
            append_both(logs, rng, rng.randint(1, 8))
        reader = rng.randrange(len(positions))
        if rng.random() < 0.1:
            positions[reader] = rng.randrange(file_log.log_end_offset)
        offset = positions[reader]
        if offset >= file_log.log_end_offset:
            continue
        budget = rng.choice((1, 150, 700, 2_500, 10_000))
        got = file_log.read_bytes(offset, budget)
        assert got == memory_log.read_bytes(offset, budget), (step, offset, budget)
        positions[reader] = next_offset_after(got)
    file_log.sanity_check()  # which checks every remembered read end against the file
    file_log.close()


def test_a_reader_that_reads_on_skips_the_index(tmp_path, locates):
    file_log, memory_log = logs = twin_logs(tmp_path)
    append_both(logs, random.Random(3), 40)
    offset, reads = 1, 0  # inside the first batch: looked up
    while offset < file_log.log_end_offset:
        data = file_log.read_bytes(offset, 500)
        offset = next_offset_after(data)
        reads += 1
    assert reads > 5 and file_log.segment_count > 1
    assert locates == [1]  # then on from each read's end, and from each segment's start
    file_log.close()


def test_a_reader_at_the_end_skips_the_index_as_records_arrive(tmp_path, locates):
    """The long-poll shape: read to the end, one batch arrives, read from the old end."""
    file_log, memory_log = logs = twin_logs(tmp_path)
    rng = random.Random(5)
    append_both(logs, rng, 1)
    file_log.read_bytes(0, 1 << 20)
    for _ in range(30):
        end = file_log.log_end_offset
        append_both(logs, rng, 1)
        assert file_log.read_bytes(end, 1 << 20) == memory_log.read_bytes(end, 1 << 20)
    assert file_log.segment_count > 1  # the reader followed the log across rolls
    assert locates == []
    file_log.close()


def test_remembered_ends_are_bounded(tmp_path):
    file_log, memory_log = logs = twin_logs(tmp_path)
    append_both(logs, random.Random(1), 30)
    segment = file_log._segments[0]
    for offset in range(segment.base_offset, segment.end_offset):
        file_log.read_bytes(offset, 1)
    assert 0 < len(segment._read_ends) <= segment_module.READ_ENDS_KEPT
    file_log.close()


def test_sanity_check_rejects_a_wrong_read_end(tmp_path):
    file_log, memory_log = logs = twin_logs(tmp_path)
    append_both(logs, random.Random(2), 10)
    file_log.read_bytes(0, 1)
    segment = file_log._segments[0]
    (offset, position), = segment._read_ends.items()
    segment._read_ends[offset] = position + 1
    with pytest.raises(StorageError, match="remembered read end"):
        file_log.sanity_check()
    file_log.close()
