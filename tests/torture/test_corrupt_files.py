"""Scenario 2: torn and corrupt files on startup, against real broker processes.

What a crash can leave (a half-written batch, garbage or zeros appended, damaged or missing
index files, a missing recovery checkpoint) is above the flushed point: the broker truncates the
tail at the first invalid byte and rebuilds the indexes. Damage *below* the flushed (recovery)
point is refused: that partition answers ``StorageError`` naming the file and the byte, every
other partition serves, and ``--repair-truncate TOPIC-P`` truncates it deliberately.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sluice.protocol import messages as m
from sluice.protocol.batch import HEADER_SIZE, LOG_OVERHEAD, iter_batches, parse_header
from sluice.protocol.errors import StorageError

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce, read_values
from tests.e2e.group_helpers import wait_for
from tests.torture.harness import Broker, record

CHECKPOINT_S = 0.2
# 201-byte batches (5 records): the first segment holds offsets 0..109, so the recovery point
# (100) falls inside it and the second segment starts in the unflushed tail.
SEGMENT = dict(segment_bytes=4600, index_interval_bytes=256)


def values(topic: str, start: int, count: int) -> list[bytes]:
    return [f"{topic}-{i:05d}".encode() * 3 for i in range(start, start + count)]


async def fill(client: RawClient, topic: str, start: int, batches: int, acks: int) -> None:
    for b in range(batches):
        response = await produce(client, topic, make_batch(values(topic, start + 5 * b, 5)), acks=acks)
        assert response.partitions[0].error == 0, response


def recovery_points(broker: Broker) -> tuple[int, int] | None:
    """The checkpointed recovery points of partitions a-0 and b-0 (None: none yet)."""
    try:
        points = json.loads((broker.data_dir / "meta" / "recovery-points.json").read_text())
        return points["a"]["offsets"]["0"], points["b"]["offsets"]["0"]
    except (FileNotFoundError, KeyError):
        return None


def logs(data: Path, name: str) -> list[Path]:
    return sorted((data / name).glob("*.log"))


async def prepare(tmp_path, *, flushed: int = 20, tail: int = 4):
    """A broker killed -9 after ``flushed`` acks=all batches (checkpointed) and ``tail`` acks=1
    batches per topic "a" and "b"; returns the (stopped) broker."""
    broker = Broker(tmp_path, settings={"checkpoint_interval_s": CHECKPOINT_S})
    broker.start()
    async with await RawClient.connect(broker.port) as client:
        for topic in ("a", "b"):
            await create_topic(client, topic, **SEGMENT)
            await fill(client, topic, 0, flushed, acks=-1)
        # Until a checkpoint's recovery points cover the acks=all data (a fixed sleep was
        # enough only on a calm machine).
        await wait_for(lambda: recovery_points(broker) == (flushed * 5, flushed * 5))
        for topic in ("a", "b"):
            await fill(client, topic, flushed * 5, tail, acks=1)
    for topic in ("a", "b"):
        assert len(logs(broker.data_dir, f"{topic}-0")) >= 2
    broker.kill()
    return broker


async def expect_serving(broker: Broker, topic: str, count: int) -> None:
    """``topic`` holds exactly its first ``count`` values, every offset is readable (indexes
    rebuilt right), and appends continue densely."""
    async with await RawClient.connect(broker.port) as client:
        stored = await read_values(client, topic)
        assert stored == values(topic, 0, count)
        for offset in range(0, count, 7):  # lookups through the (rebuilt) offset index
            part = (await fetch(client, topic, offset, max_bytes=1)).partitions[0]
            first = next(iter_batches(part.records))
            header = parse_header(first)
            assert header.base_offset <= offset <= header.last_offset
        await fill(client, topic, count, 1, acks=-1)
        assert await read_values(client, topic) == values(topic, 0, count + 5)


def damage_tail(path: Path, kind: str) -> None:
    data = path.read_bytes()
    batches = list(iter_batches(data))
    last = len(batches[-1])
    if kind == "half-batch":  # a torn write: only part of the last batch reached the disk
        os.truncate(path, len(data) - last // 2)
    elif kind == "garbage":  # the inode grew before the data landed
        with open(path, "ab") as f:
            f.write(os.urandom(3000))
    elif kind == "zeros":
        with open(path, "ab") as f:
            f.write(bytes(8192))
    elif kind == "bad-crc-last":
        with open(path, "r+b") as f:
            f.seek(len(data) - 3)
            f.write(bytes([data[-3] ^ 0x5A]))
    else:
        raise AssertionError(kind)


TAIL_CASES = {"half-batch": 115, "garbage": 120, "zeros": 120, "bad-crc-last": 115}


@pytest.mark.parametrize("kind", sorted(TAIL_CASES))
async def test_torn_tail_is_truncated_at_the_first_invalid_byte(tmp_path, kind):
    broker = await prepare(tmp_path)
    damage_tail(logs(broker.data_dir, "a-0")[-1], kind)
    broker.start()
    try:
        await expect_serving(broker, "a", TAIL_CASES[kind])
        await expect_serving(broker, "b", 120)
        assert "offline" not in broker.log_text()
    finally:
        assert broker.stop() == 0


@pytest.mark.parametrize("damage", ["delete", "garbage", "zeros"])
async def test_missing_or_corrupt_indexes_are_rebuilt(tmp_path, damage):
    broker = await prepare(tmp_path)
    for index in [*(broker.data_dir / "a-0").glob("*.index"), *(broker.data_dir / "a-0").glob("*.timeindex")]:
        if damage == "delete":
            index.unlink()
        elif damage == "garbage":
            index.write_bytes(os.urandom(index.stat().st_size + 8))
        else:
            index.write_bytes(bytes(index.stat().st_size + 16))
    broker.start()
    try:
        await expect_serving(broker, "a", 120)
        async with await RawClient.connect(broker.port) as client:  # the time index works too
            found = await client.request(m.ListOffsetsRequest(
                partitions=[m.ListOffsetsPartition(topic="a", partition=0, timestamp=0)]))
            assert found.partitions[0].offset == 0
    finally:
        assert broker.stop() == 0


async def test_missing_recovery_checkpoint_revalidates_everything(tmp_path):
    broker = await prepare(tmp_path)
    (broker.data_dir / "meta" / "recovery-points.json").unlink()
    damage_tail(logs(broker.data_dir, "a-0")[-1], "garbage")
    broker.start()
    try:
        await expect_serving(broker, "a", 120)
        await expect_serving(broker, "b", 120)
    finally:
        assert broker.stop() == 0


def flip_record_byte(path: Path, offset: int) -> tuple[int, int]:
    """Flip a byte inside the records of the batch holding ``offset``; returns that batch's
    position and base offset."""
    data = bytearray(path.read_bytes())
    position = 0
    for batch in iter_batches(bytes(data)):
        header = parse_header(batch)
        if header.base_offset <= offset <= header.last_offset:
            assert len(batch) > HEADER_SIZE + 4 and LOG_OVERHEAD < HEADER_SIZE
            data[position + HEADER_SIZE + 2] ^= 0xFF
            path.write_bytes(data)
            return position, header.base_offset
        position += len(batch)
    raise AssertionError(f"offset {offset} is not in {path}")


async def expect_refused(broker: Broker, needle: str) -> str:
    async with await RawClient.connect(broker.port) as client:
        part = (await fetch(client, "a", 0)).partitions[0]
        assert part.error == StorageError.code, part
        assert needle in part.message and "--repair-truncate a-0" in part.message, part.message
        written = await produce(client, "a", make_batch([b"x"]), acks=-1)
        assert written.partitions[0].error == StorageError.code
        stored = await read_values(client, "b")  # the others keep serving
        assert stored == values("b", 0, len(stored)) and len(stored) >= 120
        await fill(client, "b", len(stored), 1, acks=-1)
        return part.message


async def test_corruption_below_the_flushed_point_is_refused_not_truncated(tmp_path):
    broker = await prepare(tmp_path)
    # The last flushed batch (offsets 95..99, below the recovery point 100): recovery re-validates
    # from the last index entry below the recovery point, so it finds this.
    target = logs(broker.data_dir, "a-0")[0]
    before = {p.name: p.stat().st_size for p in logs(broker.data_dir, "a-0")}
    position, base = flip_record_byte(target, 99)
    broker.start()
    try:
        message = await expect_refused(broker, f"{target.name}: invalid data at byte {position}")
        assert f"{target.name}: invalid data at byte {position}" in broker.log_text()
        # Nothing was cut: every file is as it was.
        assert {p.name: p.stat().st_size for p in logs(broker.data_dir, "a-0")} == before
    finally:
        assert broker.stop() == 0
    # A clean stop does not make the damage trusted: the next start refuses it again.
    assert not (broker.data_dir / ".clean-shutdown").exists()
    broker.start()
    try:
        assert await expect_refused(broker, f"byte {position}") == message
    finally:
        assert broker.stop() == 0
    # The operator truncates deliberately, once.
    broker.start(["--repair-truncate", "a-0"])
    try:
        async with await RawClient.connect(broker.port) as client:
            stored = await read_values(client, "a")
            assert stored == values("a", 0, base)
            await fill(client, "a", len(stored), 1, acks=-1)
        assert "repaired a-0" in broker.log_text()
    finally:
        assert broker.stop(signal.SIGTERM) == 0
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            assert await read_values(client, "a") == values("a", 0, base + 5)
    finally:
        assert broker.stop() == 0
    record("2-corrupt-files", refused_message=message[:160])


async def test_missing_flushed_segment_is_refused(tmp_path):
    broker = await prepare(tmp_path, flushed=50)  # segments 0, 110, 220; recovery point 250
    last = logs(broker.data_dir, "a-0")[-1]
    assert last.name.startswith("00000000000000000220")
    for path in (broker.data_dir / "a-0").glob("00000000000000000220.*"):
        path.unlink()  # the segment holding flushed offsets 220..249 vanished
    broker.start()
    try:
        await expect_refused(broker, "ends at offset 220 but offsets below 250 were flushed")
    finally:
        assert broker.stop() == 0


async def test_damage_found_at_a_clean_start_below_the_flushed_point_is_refused(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    async with await RawClient.connect(broker.port) as client:
        for topic in ("a", "b"):
            await create_topic(client, topic, **SEGMENT)
            await fill(client, topic, 0, 24, acks=-1)
    assert broker.stop() == 0
    assert (broker.data_dir / ".clean-shutdown").exists()
    active = logs(broker.data_dir, "a-0")[-1]
    size = active.stat().st_size
    with open(active, "r+b") as f:  # the last batch's length field now runs past the end
        last = list(iter_batches(active.read_bytes()))[-1]
        f.seek(size - len(last) + 8)
        f.write((10**6).to_bytes(4, "big"))
    broker.start()
    try:
        await expect_refused(broker, f"{active.name}: invalid data at byte {size - len(last)}")
    finally:
        assert broker.stop() == 0
    assert active.stat().st_size == size


def test_broker_help_documents_repair_truncate():
    from sluice.broker.__main__ import build_parser

    assert "--repair-truncate" in build_parser().format_help()
    assert time  # keep the import used for clarity in failures
