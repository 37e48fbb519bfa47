"""An append's bytes are written without the log's lock, and become visible all at once.

The broker writes large appends from a worker thread while the event loop keeps reading the
same log; these tests hold such a write half way (``GatedWrite``) and look at the log from
another thread meanwhile.
"""

from __future__ import annotations

import threading

import pytest
from sluice.broker.storage import FileLog, TopicConfig, ValidatedBatches
from sluice.protocol.batch import decode_records, iter_batches
from sluice.protocol.errors import StorageError
from storage_helpers import GatedWrite, fill, make_batch

BIG = 64 * 1024


class Appender:
    """``log.append(batch)`` in a thread; ``join`` returns its result or raises its error."""

    def __init__(self, log, batch) -> None:
        self.result = self.error = None
        self._thread = threading.Thread(target=self._run, args=(log, batch))
        self._thread.start()

    def _run(self, log, batch) -> None:
        try:
            self.result = log.append(ValidatedBatches.parse(batch))
        except Exception as exc:
            self.error = exc

    def join(self):
        self._thread.join(30)
        assert not self._thread.is_alive(), "the append did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def gate(monkeypatch):
    events: list[str] = []
    gate = GatedWrite(BIG, events)
    monkeypatch.setattr("sluice.broker.storage.log.write_all", gate)
    yield gate
    gate.release.set()


def offsets(data: bytes) -> list[int]:
    return [record.offset for batch in iter_batches(data) for record in decode_records(batch)]


def open_log(path, **config) -> FileLog:
    return FileLog.open(path, TopicConfig(**config), recovery_point=None)


def big_batch(first: int) -> bytearray:
    return make_batch(first, 8, size=BIG // 8 + 1)


def test_readers_neither_wait_for_nor_see_an_unfinished_write(tmp_path, gate):
    log = open_log(tmp_path / "t-0")
    fill(log, 2)
    before = log.read_bytes(0, 1 << 20)
    appender = Appender(log, big_batch(6))
    assert gate.started.wait(10)
    # The writer is stuck inside its write: reads, flushes and lookups still go on (they
    # would deadlock here if the lock were held), and see the log as it was.
    assert log.read_bytes(0, 1 << 20) == before
    assert log.log_end_offset == 6
    assert log.flush() == 6
    assert log.offset_for_timestamp(0) == (0, 1_000 + 2)
    gate.release.set()
    result = appender.join()
    assert (result.base_offset, result.last_offset) == (6, 13)
    assert offsets(log.read_bytes(0, 1 << 20)) == list(range(14))
    log.sanity_check()


def test_a_second_append_during_one_in_progress_is_refused(tmp_path, gate):
    log = open_log(tmp_path / "t-0")
    appender = Appender(log, big_batch(0))
    assert gate.started.wait(10)
    with pytest.raises(StorageError, match="another append"):
        log.append(ValidatedBatches.parse(make_batch(0)))
    with pytest.raises(StorageError, match="append is in progress"):
        log.roll()
    gate.release.set()
    appender.join()
    assert log.append(ValidatedBatches.parse(make_batch(8))).base_offset == 8
    log.sanity_check()


def test_segments_an_append_rolls_to_appear_when_it_is_published(tmp_path, gate):
    log = open_log(tmp_path / "t-0", segment_bytes=BIG)
    fill(log, 2)
    appender = Appender(log, bytearray(big_batch(6) + big_batch(14)))  # two rolls
    assert gate.started.wait(10)
    assert log.segment_count == 1 and log.log_end_offset == 6
    gate.release.set()
    appender.join()
    assert log.segment_count == 3 and log.log_end_offset == 22
    log.sanity_check()
    log.close()
    reopened = open_log(tmp_path / "t-0", segment_bytes=BIG)
    assert offsets(reopened.read_bytes(6, 1 << 20)) == list(range(6, 14))
    reopened.sanity_check()


def test_a_log_deleted_during_a_write_refuses_it_cleanly(tmp_path, gate):
    log = open_log(tmp_path / "t-0", segment_bytes=BIG)
    fill(log, 2)
    appender = Appender(log, bytearray(big_batch(6) + big_batch(14)))
    assert gate.started.wait(10)
    log.delete()
    gate.release.set()
    with pytest.raises(StorageError, match="closed"):
        appender.join()
    assert not (tmp_path / "t-0").exists()
