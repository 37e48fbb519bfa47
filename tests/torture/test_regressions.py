"""Unit-level regression tests for the broker bugs the torture suite found."""

from __future__ import annotations

import json

import pytest
from sluice.broker.storage import FileLog, LogManager, TopicConfig, ValidatedBatches
from sluice.broker.storage.files import CorruptLogError
from sluice.protocol.batch import build_batch, iter_batches
from sluice.protocol.errors import StorageError

from tests.storage.storage_helpers import crash

CONFIG = TopicConfig(segment_bytes=2_000, index_interval_bytes=150)


def batch(start: int, count: int = 3) -> bytearray:
    return build_batch([(b"k", str(start + i).zfill(10).encode(), [], 1000 + i) for i in range(count)])


def crashed_log(path, batches: int = 30, flushed_batches: int = 20) -> int:
    """A log written and flushed up to ``flushed_batches`` batches, then more, then dropped
    without a clean close. Returns the flushed offset."""
    log = FileLog.open(path, CONFIG, recovery_point=None)
    for _ in range(flushed_batches):
        log.append(ValidatedBatches.parse(batch(log.log_end_offset)))
    flushed = log.flush()
    for _ in range(batches - flushed_batches):
        log.append(ValidatedBatches.parse(batch(log.log_end_offset)))
    for segment in log._segments:  # crash: descriptors dropped, nothing more written
        segment.release_file()
    return flushed


def flip_in_batch_before(path, offset: int) -> None:
    for log_file in sorted(path.glob("*.log")):
        data = bytearray(log_file.read_bytes())
        position = 0
        for b in iter_batches(bytes(data)):
            first = int.from_bytes(b[:8], "big")
            if first <= offset < first + 3:
                data[position + len(b) - 2] ^= 0xFF
                log_file.write_bytes(data)
                return
            position += len(b)
    raise AssertionError(offset)


def test_recovery_refuses_to_cut_below_the_flushed_floor(tmp_path):
    """Found by scenario 2: recovery used to truncate flushed (acknowledged) data silently."""
    path = tmp_path / "t-0"
    flushed = crashed_log(path)
    flip_in_batch_before(path, flushed - 1)
    sizes = {p.name: p.stat().st_size for p in path.iterdir()}
    with pytest.raises(CorruptLogError, match=r"\.log: invalid data at byte \d+"):
        FileLog.open(path, CONFIG, recovery_point=flushed, flushed_floor=flushed)
    assert {p.name: p.stat().st_size for p in path.glob("*.log")} == {
        k: v for k, v in sizes.items() if k.endswith(".log")
    }
    # Without a floor (the operator's repair) it truncates at the first invalid byte.
    log = FileLog.open(path, CONFIG, recovery_point=flushed, flushed_floor=None)
    assert log.log_end_offset == flushed - 3
    log.sanity_check()
    log.close()


def test_torn_tail_above_the_floor_is_still_cut(tmp_path):
    path = tmp_path / "t-0"
    flushed = crashed_log(path)
    last = sorted(path.glob("*.log"))[-1]
    with open(last, "ab") as f:
        f.write(b"\0" * 500)
    log = FileLog.open(path, CONFIG, recovery_point=flushed, flushed_floor=flushed)
    assert log.log_end_offset == 90
    log.close()


def test_manager_keeps_a_refused_partition_offline_and_its_recovery_point(tmp_path):
    manager = LogManager(tmp_path).open()
    manager.create_topic("a", 1, {"segment_bytes": 2_000, "index_interval_bytes": 150})
    manager.create_topic("b", 1)
    for name in ("a", "b"):
        log = manager.get_log(name, 0)
        for _ in range(20):
            log.append(ValidatedBatches.parse(batch(log.log_end_offset)))
    manager.close()
    (tmp_path / ".clean-shutdown").unlink()  # pretend a crash right after the checkpoint
    flip_in_batch_before(tmp_path / "a-0", 59)
    manager = LogManager(tmp_path).open()
    with pytest.raises(StorageError, match="--repair-truncate a-0"):
        manager.get_log("a", 0)
    assert manager.get_log("b", 0).log_end_offset == 60
    manager.close()
    assert json.loads((tmp_path / "meta" / "recovery-points.json").read_text())["a"]["offsets"]["0"] == 60
    assert not (tmp_path / ".clean-shutdown").exists()
    assert (tmp_path / "a-0").exists()  # not removed as a stray directory
    manager = LogManager(tmp_path, repair=["a-0"]).open()
    assert manager.get_log("a", 0).log_end_offset == 57
    manager.close()


def test_recreated_topic_does_not_inherit_the_old_recovery_point(tmp_path):
    manager = LogManager(tmp_path).open()
    manager.create_topic("a", 1)
    log = manager.get_log("a", 0)
    for _ in range(10):
        log.append(ValidatedBatches.parse(batch(log.log_end_offset)))
    log.flush()
    manager.checkpoint_recovery_points()
    manager.delete_topic("a")
    manager.create_topic("a", 1)
    manager.get_log("a", 0).append(ValidatedBatches.parse(batch(0)))
    # crash before the next checkpoint: the old topic's point (30) must not be the floor
    crash(manager)
    manager = LogManager(tmp_path).open()
    assert manager.get_log("a", 0).log_end_offset in (0, 3)
    manager.close()


# -- scenario 4 ----------------------------------------------------------------------------------

from sluice.protocol import messages as m  # noqa: E402
from sluice.protocol.errors import InvalidRequestError  # noqa: E402

from tests.broker.conftest import RawClient, broker, broker_config  # noqa: E402,F401 - fixtures


async def test_response_too_large_to_encode_is_an_error_not_a_crash(broker):  # noqa: F811
    """Found by scenario 4: a metadata request naming 50,000 topics produced a response header
    over max_header_bytes; the LocalProtocolError escaped the session and took the whole broker
    down. Now that request gets an InvalidRequestError and the connection carries on."""
    async with await RawClient.connect(broker.port) as client:
        # Within the request item budget (10,000 entries) but with long names, so that the
        # response header (one entry per unknown topic) is over max_header_bytes.
        names = [f"{i:090d}" for i in range(m.MAX_REQUEST_ITEMS)]  # request < 1 MiB < response
        response = await client.request(m.MetadataRequest(topics=names))
        assert response.error == InvalidRequestError.code
        assert "fewer items" in response.message
        assert (await client.request(m.MetadataRequest())).error == 0
        # More entries than the budget: refused while decoding, before anything is built.
        over = await client.request(m.MetadataRequest(topics=[f"t{i}" for i in range(50_000)]))
        assert over.error == InvalidRequestError.code and "items in all" in over.message


async def test_a_failing_session_does_not_take_the_broker_down(broker, monkeypatch):  # noqa: F811
    """Found by scenario 4: any unexpected exception in one connection's session (above, a
    response too large to encode) propagated out of the sessions nursery and stopped the broker.
    Now the connection is closed and logged; everyone else is served."""
    from sluice.broker.adapters.session import Session

    original = Session._read_loop
    calls = []

    async def failing(self):
        calls.append(self.peer)
        if len(calls) == 1:
            raise RuntimeError("a bug in one session")
        return await original(self)

    monkeypatch.setattr(Session, "_read_loop", failing)
    doomed = await RawClient.connect(broker.port)
    assert await doomed.stream.receive_some(10) == b""  # closed
    await doomed.aclose()
    async with await RawClient.connect(broker.port) as client:
        assert (await client.request(m.MetadataRequest())).error == 0


# -- scenario 3 ----------------------------------------------------------------------------------


async def test_a_failing_periodic_checkpoint_does_not_stop_the_broker():
    """Found by scenario 3: with the disk full, the periodic checkpoint's OSError (ENOSPC)
    escaped the background nursery and shut the broker down. Now it is logged and retried."""
    import errno

    import trio
    from sluice.broker.domain.broker import Broker

    calls = []

    def checkpoint() -> None:
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with trio.move_on_after(0.3):
        await Broker._periodic(0.01, checkpoint)
    assert len(calls) > 3
