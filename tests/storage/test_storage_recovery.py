"""FileLog on real files: crash shapes, index rebuilds, failed writes, lifetime, laziness."""

from __future__ import annotations

import errno
import gc
import os
import resource
import signal
import threading
from pathlib import Path

import pytest
from sluice.broker.storage import FileLog, TopicConfig, ValidatedBatches, files
from sluice.broker.storage.files import HandleQuota
from sluice.protocol.errors import StorageError
from storage_helpers import fill, headers, make_batch, values

CONFIG = TopicConfig(segment_bytes=2_000, index_interval_bytes=150)
BATCH = len(make_batch(0, 3))  # fill()'s batch size


def open_log(path: Path, recovery_point: int | None = None, config: TopicConfig = CONFIG, **kw) -> FileLog:
    return FileLog.open(path, config, recovery_point=recovery_point, **kw)


def crash(log: FileLog) -> None:
    """Stop without a clean close: drop descriptors, write nothing (pending index entries lost)."""
    for segment in log._segments:
        segment.offset_index.unload()
        segment.time_index.unload()
        if segment.is_open:
            segment.file().close()
            segment._file = None
    log._closed = True


def last_log_file(path: Path) -> Path:
    return sorted(path.glob("*.log"))[-1]


def all_values(log: FileLog) -> list[tuple[int, int]]:
    got, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        got += values(log.read_bytes(offset, 10**6))
        offset = got[-1][0] + 1
    return got


def assert_intact(log: FileLog, records: int) -> None:
    """The first ``records`` offsets are readable, nothing else is, and appends continue."""
    log.sanity_check()
    assert log.log_end_offset == records
    assert all_values(log) == [(i, i) for i in range(records)]
    fill(log, 2)
    assert all_values(log) == [(i, i) for i in range(records + 6)]
    log.sanity_check()


@pytest.fixture
def crashed(tmp_path):
    """A log of 30 batches (several segments) that stopped uncleanly after a flush at 45."""
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 15)
    log.flush()
    fill(log, 15)
    crash(log)
    return path


CUTS = sorted({1, 5, 11, 12, 13, 20, 40, 60, 61, 62, 70, BATCH - 2, BATCH - 1})


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_last_batch(crashed, cut):
    file = last_log_file(crashed)
    os.truncate(file, file.stat().st_size - BATCH + cut)
    assert_intact(open_log(crashed, recovery_point=45), 87)


def test_garbage_appended(crashed):
    with open(last_log_file(crashed), "ab") as f:
        f.write(os.urandom(500))
    assert_intact(open_log(crashed, recovery_point=45), 90)


def test_zero_filled_tail(crashed):
    with open(last_log_file(crashed), "ab") as f:
        f.write(bytes(4096))
    assert_intact(open_log(crashed, recovery_point=45), 90)


def test_half_written_batch(crashed):
    with open(last_log_file(crashed), "ab") as f:
        f.write(bytes(make_batch(90, 3))[: BATCH // 2])
    assert_intact(open_log(crashed, recovery_point=45), 90)


def test_flipped_byte_in_an_earlier_segment_truncates_there_and_drops_later_segments(crashed):
    first = sorted(crashed.glob("*.log"))[1]
    data = bytearray(first.read_bytes())
    data[BATCH * 2 + 70] ^= 0xFF  # the third batch's records
    first.write_bytes(data)
    log = open_log(crashed, recovery_point=0)
    base = int(first.name[:20])
    assert log.segment_count == 2 and log.log_end_offset == base + 6
    assert_intact(log, base + 6)


@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
@pytest.mark.parametrize("damage", ["delete", "garbage", "zeros", "torn"])
@pytest.mark.parametrize("recovery_point", [None, 0, 45])
def test_damaged_index_files_are_rebuilt(tmp_path, suffix, damage, recovery_point):
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 30)
    log.close()
    for index in path.glob(f"*{suffix}"):
        if damage == "delete":
            index.unlink()
        elif damage == "garbage":
            index.write_bytes(index.read_bytes() + b"\x7f" * 24)
        elif damage == "zeros":
            index.write_bytes(index.read_bytes() + bytes(24))
        else:
            index.write_bytes(index.read_bytes()[:-3])
    log = open_log(path, recovery_point)
    assert log.offset_for_timestamp(1_050) == (48, 1_050)
    assert_intact(log, 90)


def test_rebuilt_indexes_equal_the_originals(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 40)
    log.close()
    originals = {p.name: p.read_bytes() for p in path.iterdir()}
    assert any(name.endswith(".index") and data for name, data in originals.items())
    for index in [*path.glob("*.index"), *path.glob("*.timeindex")]:
        index.write_bytes(b"")
    open_log(path, recovery_point=0).close()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == originals


def test_recovery_starts_at_the_recovery_point_not_the_segment_start(tmp_path):
    """Bytes below the recovery point are trusted: a flipped byte there is not even looked at,
    while the same damage above it is found."""
    path = tmp_path / "t-0"
    log = open_log(path, config=TopicConfig(index_interval_bytes=150))
    fill(log, 30)
    log.flush()
    log.close()
    file = last_log_file(path)
    data = bytearray(file.read_bytes())
    data[BATCH * 2 + 70] ^= 0xFF
    file.write_bytes(data)
    assert open_log(path, recovery_point=60, config=TopicConfig(index_interval_bytes=150)).log_end_offset == 90
    assert open_log(path, recovery_point=3, config=TopicConfig(index_interval_bytes=150)).log_end_offset == 6


def test_clean_open_revalidates_nothing(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 30)
    log.close()
    first = sorted(path.glob("*.log"))[0]
    data = bytearray(first.read_bytes())
    data[BATCH + 70] ^= 0xFF  # CRC now wrong in a sealed segment
    first.write_bytes(data)
    assert open_log(path).log_end_offset == 90  # trusted, as promised by the clean marker
    assert open_log(path, recovery_point=0).log_end_offset == 3  # unclean: found and cut


def test_clean_open_of_a_torn_active_segment_falls_back_to_recovery(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 30)
    log.close()
    file = last_log_file(path)
    os.truncate(file, file.stat().st_size - 5)
    assert_intact(open_log(path), 87)


def test_recovery_after_a_crash_right_after_a_roll(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, config=TopicConfig(segment_bytes=BATCH * 3))
    fill(log, 3)
    log.flush()
    fill(log, 1)  # rolls
    crash(log)
    os.truncate(last_log_file(path), 0)
    log = open_log(path, recovery_point=9, config=TopicConfig(segment_bytes=BATCH * 3))
    assert log.log_end_offset == 9 and log.segment_count == 2
    assert_intact(log, 9)


class FailingWrite:
    """Stand-in for ``files.write_all``: writes ``allow`` bytes, then fails like a full disk."""

    def __init__(self, allow: int) -> None:
        self.allow = allow

    def __call__(self, fd, data) -> None:
        view = memoryview(data)[: self.allow]
        self.allow -= len(view)
        os.write(fd, view)
        if len(view) < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("allow", [0, 10, BATCH + 7, 4 * BATCH])
def test_failed_write_is_undone(tmp_path, monkeypatch, allow):
    path = tmp_path / "t-0"
    log = open_log(path, config=TopicConfig(segment_bytes=BATCH * 3, index_interval_bytes=0))
    fill(log, 4)
    log.flush()
    before = (log.log_end_offset, log.segment_count, log.size_bytes)
    files_before = {p.name: p.stat().st_size for p in path.iterdir()}
    monkeypatch.setattr("sluice.broker.storage.log.write_all", FailingWrite(allow))
    buf = bytearray(b"".join(make_batch(12 + 3 * i, 3) for i in range(6)))
    with pytest.raises(StorageError, match="No space left"):
        log.append(ValidatedBatches.parse(buf))
    monkeypatch.undo()
    log.flush()
    assert (log.log_end_offset, log.segment_count, log.size_bytes) == before
    assert {p.name: p.stat().st_size for p in path.iterdir()} == files_before
    assert_intact(log, 12)


def test_file_size_limit_gives_a_storage_error(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE) part way through a write: nothing of the batch remains."""
    path = tmp_path / "t-0"
    log = open_log(path)
    fill(log, 2)
    size = last_log_file(path).stat().st_size
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, old_limit[1]))
    try:
        with pytest.raises(StorageError, match="too large"):
            log.append(ValidatedBatches.parse(make_batch(6, 3, size=200)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert last_log_file(path).stat().st_size == size
    assert_intact(log, 6)


def test_flush_from_a_thread_while_appending(tmp_path):
    log = open_log(tmp_path / "t-0")
    stop = threading.Event()
    seen: list[int] = []

    def flusher() -> None:
        while not stop.is_set():
            seen.append(log.flush())

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for _ in range(300):
            fill(log, 1)
            assert log.flushed_offset <= log.log_end_offset
            assert headers(log.read_bytes(0, 1))[0].base_offset == 0
    finally:
        stop.set()
        thread.join()
    assert seen == sorted(seen)
    assert log.flush() == 900
    log.close()
    assert_intact(open_log(tmp_path / "t-0", recovery_point=900), 900)


def test_deleted_segment_stays_readable_until_released(tmp_path):
    log = open_log(tmp_path / "t-0", config=TopicConfig(segment_bytes=BATCH * 2, retention_bytes=0))
    fill(log, 6)
    piece = log.read(0, 10**6).slices[0]
    assert log.enforce_retention() == 2
    assert not (tmp_path / "t-0" / f"{0:020d}.log").exists()
    data = os.pread(piece.file.fileno(), piece.length, piece.position)
    assert [v for v, _ in values(data)] == list(range(6))
    piece.file.release()
    with pytest.raises(ValueError):
        piece.file.fileno()
    log.close()


def test_segment_file_refcounting(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    handle = files.SegmentFile(os.open(path, os.O_RDONLY), path)
    handle.retain()
    handle.close()
    handle.close()  # the owner's reference is dropped once only
    assert os.pread(handle.fileno(), 1, 0) == b"x"
    handle.release()
    with pytest.raises(ValueError):
        handle.retain()


def open_fds() -> int:
    """Descriptors of this process, after collecting garbage (sockets earlier tests dropped
    would otherwise close, and change the count, whenever the collector runs)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_segments_open_lazily(tmp_path):
    path = tmp_path / "t-0"
    config = TopicConfig(segment_bytes=1, index_interval_bytes=0)
    log = open_log(path, config=config)
    fill(log, 1_000, records=1)
    assert log.segment_count == 1_000
    crash(log)  # every file is written (sealing writes indexes); skip 1,000 fdatasyncs
    before = open_fds()
    log = open_log(path, config=config, max_open_segments=4)
    assert open_fds() - before <= 1 and log.open_segment_count == 1
    assert not any(s.offset_index.loaded for s in log._segments[:-1])
    for offset in range(0, 1_000, 7):
        assert values(log.read_bytes(offset, 1)) == [(offset, offset)]
        assert log.open_segment_count <= 5 and open_fds() - before <= 5
    assert log.offset_for_timestamp(1_500) == (500, 1_500)
    assert open_fds() - before <= 5
    log.close()
    assert open_fds() == before


def test_sealed_segments_keep_descriptors_only_within_a_shared_quota(tmp_path):
    """Issue 13.10: the descriptors a broker keeps must be countable. Logs sharing a
    ``HandleQuota`` keep their active segment's open, and sealed ones' only within the quota;
    the others open for each read and close after it."""
    quota = HandleQuota(2)
    config = TopicConfig(segment_bytes=1, index_interval_bytes=0)
    before = open_fds()
    logs = [open_log(tmp_path / f"t-{i}", config=config, quota=quota) for i in range(3)]
    for log in logs:
        fill(log, 20, records=1)  # a segment per batch
    for offset in range(0, 20, 3):
        for log in logs:
            assert values(log.read_bytes(offset, 1)) == [(offset, offset)]
            assert log.offset_for_timestamp(1_000 + offset) == (offset, 1_000 + offset)
            assert sum(lg.open_segment_count for lg in logs) <= 3 + 2 and quota.taken <= 2
            assert open_fds() - before <= 3 + 2
    for log in logs:
        log.flush()
        log.sanity_check()
        assert sum(lg.open_segment_count for lg in logs) <= 3 + 2
    for log in logs:
        log.close()
    assert quota.taken == 0 and open_fds() == before


def test_flush_syncs_rolled_segments_and_advances(tmp_path):
    log = open_log(tmp_path / "t-0")
    fill(log, 30)
    assert log.flushed_offset == 0
    assert log.flush() == 90
    fill(log, 1)
    assert log.flushed_offset == 90
    log.close()
    assert open_log(tmp_path / "t-0").flushed_offset == 93


def test_operations_after_close_fail(tmp_path):
    log = open_log(tmp_path / "t-0")
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.append(ValidatedBatches.parse(make_batch(0)))
    log.close()


def test_delete_removes_the_directory(tmp_path):
    log = open_log(tmp_path / "t-0")
    fill(log, 3)
    log.delete()
    assert not (tmp_path / "t-0").exists()


def test_full_recovery_of_many_segments_keeps_descriptors_capped(tmp_path):
    path = tmp_path / "t-0"
    config = TopicConfig(segment_bytes=1)
    log = open_log(path, config=config)
    fill(log, 50, records=1)
    crash(log)
    before = open_fds()
    log = open_log(path, recovery_point=0, config=config, max_open_segments=4)
    assert log.segment_count == 50 and log.open_segment_count <= 5
    assert open_fds() - before <= 5
    log.sanity_check()
