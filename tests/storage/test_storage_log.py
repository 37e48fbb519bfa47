"""The log contract, run against FileLog and MemoryLog alike (the ``make_log`` fixture)."""

from __future__ import annotations

import os
import time

import pytest
from sluice.broker.storage import (
    FileLog,
    PartitionLog,
    TopicConfig,
    ValidatedBatches,
    release_slices,
)
from sluice.protocol.batch import iter_batches
from sluice.protocol.errors import (
    CorruptRecordError,
    InvalidConfigError,
    InvalidPartitionsError,
    OffsetOutOfRangeError,
)
from storage_helpers import fill, headers, make_batch, values

SMALL = {"segment_bytes": 1_000, "index_interval_bytes": 200}


def test_empty_log(make_log):
    log = make_log()
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (0, 0, 1)
    result = log.read(0, 1_000)
    assert (result.slices, result.next_offset) == ([], 0)
    assert log.offset_for_timestamp(0) is None
    assert log.flush() == 0 == log.flushed_offset


def test_append_assigns_dense_offsets_and_stamps_in_place(make_log):
    log = make_log()
    buf = make_batch(0, 3, ts=50) + make_batch(0, 2, ts=70)
    result = log.append(ValidatedBatches.parse(buf))
    assert (result.base_offset, result.last_offset, result.max_timestamp) == (0, 4, 71)
    assert [h.base_offset for h in headers(buf)] == [0, 3]
    assert log.append(ValidatedBatches.parse(make_batch(0, 1))).base_offset == 5
    assert log.log_end_offset == 6


def test_round_trip_across_rolls(make_log):
    log = make_log(**SMALL)
    fill(log, 60)
    assert log.segment_count > 5
    got = []
    offset = 0
    while offset < log.log_end_offset:
        chunk = values(log.read_bytes(offset, 700))
        assert chunk and chunk[0][0] <= offset
        got += [pair for pair in chunk if pair[0] >= offset]
        offset = got[-1][0] + 1
    assert got == [(i, i) for i in range(180)]


def test_read_at_every_offset_returns_the_containing_batch(make_log):
    log = make_log(**SMALL)
    fill(log, 40)
    for offset in range(log.log_end_offset):
        first = headers(log.read_bytes(offset, 1))
        assert len(first) == 1
        assert first[0].base_offset <= offset <= first[0].last_offset


@pytest.mark.parametrize("budget", [1, 700, 1 << 20])
def test_reads_never_pass_max_offset(make_log, budget):
    """A reader bounded by a high watermark sees whole batches that end at or below it, and
    nothing of the batch that holds it (batches of 3: a bound inside one stops before it)."""
    log = make_log(**SMALL)
    fill(log, 40)
    for bound in (0, 3, 31, 60, 119, 120, 500):
        expected = min(bound, 120) // 3 * 3  # the first offset of the batch holding the bound
        seen, offset = [], 0
        while True:
            result = log.read(offset, budget, max_offset=bound)
            data = log.read_bytes(offset, budget, max_offset=bound)
            release_slices(result.slices)
            if not data:
                assert result.slices == [] and result.next_offset == offset
                break
            batches = headers(data)
            assert batches[-1].next_offset <= expected and result.next_offset == batches[-1].next_offset
            seen += [h.base_offset for h in batches]
            offset = result.next_offset
        assert offset == expected and seen == list(range(0, expected, 3))


def test_budget_smaller_than_a_batch_returns_it_whole(make_log):
    log = make_log()
    log.append(ValidatedBatches.parse(make_batch(0, 5, size=500)))
    data = log.read_bytes(2, 10)
    assert len(list(iter_batches(data))) == 1 and len(data) > 2_000


def test_budget_returns_whole_batches_within_the_limit(make_log):
    log = make_log(index_interval_bytes=100)
    fill(log, 30)
    size = len(log.read_bytes(0, 1))
    for budget in (size, size + 1, 3 * size - 1, 3 * size, 10 * size + 5):
        data = log.read_bytes(0, budget)
        assert len(data) == max(size, budget // size * size)
        assert len(list(iter_batches(data))) * size == len(data)


def test_read_never_crosses_a_segment_but_makes_progress(make_log):
    log = make_log(**SMALL)
    fill(log, 20)
    offset = 0
    while offset < log.log_end_offset:
        data = log.read_bytes(offset, 10**9)
        assert data
        offset = headers(data)[-1].next_offset
    assert offset == log.log_end_offset


@pytest.mark.parametrize("offset", [-1, 31])
def test_out_of_range(make_log, offset):
    log = make_log()
    fill(log, 10)
    with pytest.raises(OffsetOutOfRangeError, match=r"\[0, 30\]"):
        log.read(offset, 100)


def test_out_of_range_below_log_start_after_retention(make_log, clock):
    log = make_log(**SMALL, retention_bytes=0)
    fill(log, 30)
    assert log.enforce_retention() > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(log.log_start_offset - 1, 100)
    assert log.read(log.log_start_offset, 100).slices


def test_offset_for_timestamp(make_log):
    log = make_log(**SMALL)
    fill(log, 40)  # the batch at offset o holds timestamps 1000 + o .. 1000 + o + 2
    assert log.offset_for_timestamp(0) == (0, 1002)
    for offset in range(0, 120, 3):
        ts = 1000 + offset + 2
        assert log.offset_for_timestamp(ts) == (offset, ts)
        assert log.offset_for_timestamp(ts - 2) == (offset, ts)
    assert log.offset_for_timestamp(1000 + 117 + 3) is None


def test_offset_for_timestamp_with_timestamps_out_of_order(make_log):
    log = make_log(**SMALL)
    for ts in (500, 100, 900, 300, 700) * 8:
        log.append(ValidatedBatches.parse(make_batch(0, 1, ts=ts)))
    assert log.offset_for_timestamp(800) == (2, 900)
    assert log.offset_for_timestamp(901) is None
    assert log.offset_for_timestamp(150) == (0, 500)


def test_segment_rolls_on_size(make_log):
    log = make_log(segment_bytes=1_000)
    fill(log, 20)
    batch = len(log.read_bytes(0, 1))
    assert log.segment_count == -(-20 // (1_000 // batch))


def test_segment_rolls_on_age(make_log, clock):
    log = make_log(segment_ms=1_000)
    fill(log, 3)
    clock.now += 1_000
    fill(log, 1)
    assert log.segment_count == 1
    clock.now += 1
    fill(log, 1)
    assert log.segment_count == 2


def test_a_batch_bigger_than_a_segment_gets_its_own(make_log):
    log = make_log(segment_bytes=100)
    fill(log, 3)
    assert log.segment_count == 3
    assert [pair[0] for pair in values(log.read_bytes(3, 1))] == [3, 4, 5]


def test_one_append_spanning_several_segments(make_log):
    log = make_log(segment_bytes=300)
    buf = b"".join(make_batch(3 * i, 3) for i in range(10))
    result = log.append(ValidatedBatches.parse(bytearray(buf)))
    assert (result.base_offset, result.last_offset) == (0, 29)
    assert log.segment_count > 3
    assert [v for v, _ in values(log.read_bytes(0, 10**6))][:3] == [0, 1, 2]


def test_retention_by_time_never_deletes_the_active_segment(make_log, clock):
    log = make_log(**SMALL, retention_ms=10_000)
    clock.now = 0  # written when they were stamped
    fill(log, 30, ts=0)  # largest timestamps around 0..200
    segments = log.segment_count
    assert log.enforce_retention(now_ms=10_000) == 0
    assert log.enforce_retention(now_ms=10_000 + 60) > 0  # the first segments only
    assert 1 < log.segment_count < segments
    log.enforce_retention(now_ms=10**9)
    assert log.segment_count == 1
    assert log.log_end_offset == 90 and log.log_start_offset > 0
    fill(log, 1)
    assert log.log_end_offset == 93


def test_records_stamped_long_ago_are_kept_retention_ms_after_they_are_written(make_log, clock):
    """Issue 13.12: records stamped in 1970 were deleted by the next retention check after
    their segment rolled. A segment is now kept retention_ms after its last append too."""
    log = make_log(**SMALL, retention_ms=60_000)
    clock.now = 1_700_000_000_000
    fill(log, 30, ts=0)  # January 1970
    segments = log.segment_count
    assert segments > 2
    assert log.enforce_retention() == 0
    clock.now += 60_000
    assert log.enforce_retention() == 0
    clock.now += 1
    assert log.enforce_retention() == segments - 1
    assert log.segment_count == 1


def test_retention_after_a_restart_uses_the_segment_files_modification_time(tmp_path):
    config = TopicConfig(**SMALL, retention_ms=60_000)
    log = FileLog.open(tmp_path / "t-0", config, recovery_point=None)
    fill(log, 30, ts=0)
    log.close()
    log = FileLog.open(tmp_path / "t-0", config, recovery_point=None)
    segments = log.segment_count
    assert segments > 2 and log.enforce_retention() == 0  # written just now
    log.close()
    an_hour_ago = time.time() - 3600
    for path in sorted((tmp_path / "t-0").glob("*.log"))[:2]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    log = FileLog.open(tmp_path / "t-0", config, recovery_point=None)
    assert log.enforce_retention() == 2 and log.segment_count == segments - 2
    log.close()


def test_retention_forever(make_log):
    log = make_log(**SMALL, retention_ms=-1)
    fill(log, 30, ts=0)
    assert log.enforce_retention(now_ms=2**62) == 0


def test_retention_by_size(make_log):
    log = make_log(**SMALL, retention_ms=-1, retention_bytes=2_500)
    fill(log, 60)
    removed = log.enforce_retention()
    assert removed > 0
    assert 2_500 <= log.size_bytes < 2_500 + 1_100  # one more deletion would go below
    assert log.enforce_retention() == 0
    assert values(log.read_bytes(log.log_start_offset, 1))[0][0] == log.log_start_offset


def test_flush_reaches_the_end(make_log):
    log = make_log(**SMALL)
    fill(log, 20)
    assert log.flush() == log.log_end_offset == log.flushed_offset


def test_scan_headers(make_log):
    log = make_log(**SMALL)
    fill(log, 20)
    assert [h.base_offset for h in log.scan_headers(0)] == list(range(0, 60, 3))
    assert [h.base_offset for h in log.scan_headers(31)] == list(range(30, 60, 3))
    assert list(log.scan_headers(60)) == []


def test_batches_are_checked_before_an_append(make_log):
    log = make_log()
    with pytest.raises(TypeError):
        ValidatedBatches.parse(memoryview(bytes(make_batch(0))))
    with pytest.raises(CorruptRecordError):
        ValidatedBatches.parse(make_batch(0)[:-1])
    batch = make_batch(0)
    with pytest.raises(ValueError):  # positions and headers that do not describe the bytes
        ValidatedBatches(memoryview(batch + batch), (0,), headers(batch))
    assert log.log_end_offset == 0


def test_reconfigure(make_log):
    log = make_log()
    log.reconfigure(TopicConfig(segment_bytes=100))
    fill(log, 3)
    assert log.config.segment_bytes == 100 and log.segment_count == 3


def test_config_validation_and_mapping():
    config = TopicConfig.from_mapping({"segment_bytes": 10_000, "retention_ms": -1})
    assert config.to_mapping()["segment_bytes"] == 10_000
    assert TopicConfig.from_mapping(config.to_mapping()) == config
    assert TopicConfig.from_mapping({"partitions": 3}, base=config).segment_bytes == 10_000
    with pytest.raises(InvalidConfigError, match="unknown config key"):
        TopicConfig.from_mapping({"segment.bytes": 1})
    with pytest.raises(InvalidConfigError, match="segment_bytes"):
        TopicConfig(segment_bytes=0)
    with pytest.raises(InvalidConfigError, match="retention_ms"):
        TopicConfig(retention_ms=-2)
    with pytest.raises(InvalidConfigError, match="integer"):
        TopicConfig(segment_ms="10")
    with pytest.raises(InvalidConfigError, match="integer"):
        TopicConfig(retention_bytes=True)
    with pytest.raises(InvalidPartitionsError):
        TopicConfig(partitions=0)


def test_roll_then_delete_before_drops_whole_older_segments(make_log):
    log = make_log()
    fill(log, 4)  # offsets 0..11 in one segment
    log.roll()
    log.roll()  # the active segment is empty: no second roll
    assert log.segment_count == 2
    fill(log, 2)  # offsets 12..17 in the new active segment
    assert log.delete_before(11) == 0  # offset 11 still lives in the first segment
    assert log.delete_before(12) == 1
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (12, 18, 1)
    assert values(log.read_bytes(12, 1 << 20)) == [(o, o) for o in range(12, 18)]
    assert log.delete_before(10**9) == 0  # never the active segment
    with pytest.raises(OffsetOutOfRangeError):
        log.read(5, 100)


def test_both_logs_implement_the_partition_log_interface(make_log):
    assert isinstance(make_log(), PartitionLog)
