"""``sluice migrate``: a data directory written by Sluice before record batch v2 (made by that
version: see data/make_magic1_fixture.py) is refused at start, then converted in place with
every offset, timestamp, key, value, header, leader epoch and producer field kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import trio
from sluice.broker.storage.manager import DataFormatError, LogManager
from sluice.broker.storage.migrate import MigrationError, migrate
from sluice.client.admin import Admin
from sluice.client.cli import main as cli
from sluice.client.consumer import Consumer
from sluice.protocol.batch import MAGIC, decode_records, iter_batches, parse_header

from tests.processes import subprocess_env
from tests.torture.harness import Broker

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "magic1-expected.json").read_text())


def old_data_dir(tmp_path: Path) -> Path:
    with tarfile.open(DATA / "magic1-datadir.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "magic1-datadir"


def stored(data_dir: Path) -> dict:
    """Every batch's header fields and records, as the fixture's generator wrote them."""
    out: dict = {}
    for log in sorted(data_dir.glob("*-*/*.log")):
        for batch in iter_batches(log.read_bytes()):
            out.setdefault(log.parent.name, []).append((parse_header(batch), decode_records(batch)))
    return out


def test_an_old_directory_is_refused_with_the_command_that_converts_it(tmp_path):
    data = old_data_dir(tmp_path)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with pytest.raises(DataFormatError, match=f"sluice migrate --data-dir {data}"):
        LogManager(data).open()
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # untouched (but for the lock file the refusal was made under)


def test_migration_keeps_every_field_and_the_broker_then_opens_it(tmp_path):
    data = old_data_dir(tmp_path)
    lines: list[str] = []
    reports = migrate(data, lines.append)
    assert {r.name: (r.rewritten, r.kept) for r in reports} == {
        name: (len(batches), 0) for name, batches in EXPECTED["batches"].items()
    }
    assert sum(r.segments for r in reports) == len(list(data.glob("*-*/*.log"))) > 5
    assert "now holds record batch v2" in lines[-1]
    now = stored(data)
    assert now.keys() == EXPECTED["batches"].keys()
    for name, batches in EXPECTED["batches"].items():
        assert len(now[name]) == len(batches)
        for (header, records), old in zip(now[name], batches, strict=True):
            assert header.magic == MAGIC
            for field in ("base_offset", "leader_epoch", "last_offset_delta", "max_timestamp",
                          "producer_id", "producer_epoch", "base_sequence", "record_count"):
                assert getattr(header, field) == old["header"][field], (name, field)
            assert [
                [r.offset, r.timestamp, hex_or_none(r.key), hex_or_none(r.value),
                 [[k, v.hex()] for k, v in r.headers]]
                for r in records
            ] == old["records"]
    manager = LogManager(data).open()  # indexes rebuilt: every segment passes its own check
    try:
        for log in manager._logs.values():
            for segment in log._segments:
                segment.sanity_check()
    finally:
        manager.close()


def hex_or_none(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


async def test_a_migrated_directory_serves_its_records_and_committed_offsets(tmp_path):
    data = old_data_dir(tmp_path)
    shutil.move(data, tmp_path / "data")  # where the harness's broker keeps its data
    assert cli(["migrate", "--data-dir", str(tmp_path / "data")]) == 0
    broker = Broker(tmp_path)
    broker.start()
    try:
        async with Admin(f"127.0.0.1:{broker.port}") as admin:
            group = await admin.describe_group("billing")
        committed = {f"{p.topic}-{p.partition}": p.committed for p in group.partitions}
        assert committed == EXPECTED["committed"]
        async with Consumer(f"127.0.0.1:{broker.port}", auto_offset_reset="earliest") as consumer:
            consumer.assign([("orders", 1)])
            consumer.seek("orders", 1, 10)
            want = [r for b in EXPECTED["batches"]["orders-1"] for r in b["records"]][10:]
            got = []
            with trio.fail_after(30):
                async for batch in consumer.batches():
                    got += [[r.offset, r.timestamp, hex_or_none(r.key), hex_or_none(r.value),
                             [[k, v.hex()] for k, v in r.headers]] for r in batch]
                    if len(got) >= len(want):
                        break
            assert got == want
    finally:
        assert broker.stop() == 0


def test_migration_is_idempotent_and_finishes_an_interrupted_run(tmp_path):
    data = old_data_dir(tmp_path)
    done = tmp_path / "done"
    shutil.copytree(data, done)
    migrate(done, lambda line: None)
    # Interrupted: one partition's segments converted, the rest not, no format file yet.
    for log in (done / "orders-0").iterdir():
        shutil.copy(log, data / "orders-0" / log.name)
    (data / "orders-1" / "00000000000000000000.log.tmp").write_bytes(b"half written")
    reports = {r.name: r for r in migrate(data, lambda line: None)}
    assert (reports["orders-0"].rewritten, reports["orders-0"].kept) == (0, 9)
    assert reports["orders-1"].rewritten == 8
    assert stored(data) == stored(done)
    assert not list(data.glob("*/*.tmp"))
    lines: list[str] = []
    assert migrate(data, lines.append) == [] and "nothing to do" in lines[0]


def test_an_invalid_old_batch_stops_the_migration_naming_it(tmp_path):
    data = old_data_dir(tmp_path)
    log = sorted((data / "orders-1").glob("*.log"))[1]
    content = bytearray(log.read_bytes())
    second = parse_header(content).size
    content[second + 70] ^= 0x01  # inside the second batch's records: its CRC fails
    log.write_bytes(content)
    with pytest.raises(MigrationError, match=f"{log}: invalid batch at byte {second}: CRC"):
        migrate(data, lambda line: None)
    assert log.read_bytes() == content  # that segment was not rewritten
    assert not (data / "meta" / "format.json").exists()
    with pytest.raises(DataFormatError):
        LogManager(data).open()
    assert cli(["migrate", "--data-dir", str(data)]) == 1  # the CLI says it in one line


def test_a_new_directory_is_marked_and_reopens(tmp_path):
    manager = LogManager(tmp_path / "fresh").open()
    manager.create_topic("t", 1)
    manager.close()
    assert json.loads((tmp_path / "fresh" / "meta" / "format.json").read_text()) == {
        "record_batch_magic": 2
    }
    LogManager(tmp_path / "fresh").open().close()
    (tmp_path / "fresh" / "meta" / "format.json").write_text('{"record_batch_magic": 3}')
    with pytest.raises(DataFormatError, match="record_batch_magic 2 only"):
        LogManager(tmp_path / "fresh").open()


def test_the_broker_refuses_an_old_directory_at_start_in_one_line(tmp_path):
    data = old_data_dir(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sluice.broker", "--data-dir", str(data), "--port", "0"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )
    assert done.returncode == 1 and not done.stdout
    # The broker's log line saying which directory it opens comes first; the refusal is one line.
    refusal = done.stderr.rstrip().splitlines()[-1]
    assert refusal.startswith(f"sluice broker: {data} was written by Sluice before record")
    assert refusal.endswith(f"sluice migrate --data-dir {data}")


def test_migration_refuses_a_directory_a_broker_holds(tmp_path):
    from sluice.broker.storage.files import DataDirectoryInUseError, DirectoryLock

    data = old_data_dir(tmp_path)
    lock = DirectoryLock.acquire(data)  # as a running broker holds it
    try:
        with pytest.raises(DataDirectoryInUseError, match="in use by another broker"):
            migrate(data, progress=lambda line: None)
        assert not (data / "meta" / "format.json").exists()
    finally:
        lock.release()
