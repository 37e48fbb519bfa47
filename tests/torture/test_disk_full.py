"""Scenario 3: disk full (a small tmpfs) and write errors (RLIMIT_FSIZE: a partial write, then
EFBIG), against a real broker process.

Promised: the producer gets a clear ``StorageError`` naming the cause; no half batch is ever
readable (every stored byte decodes as whole batches, every acknowledged record is there); the
broker stays up and serves reads; appends resume once space returns.
"""

from __future__ import annotations

import os
import resource
import subprocess

import pytest
import trio
from sluice.protocol.errors import StorageError

from tests.broker.conftest import RawClient, create_topic, make_batch, produce, read_records
from tests.drivers import DRIVERS
from tests.faults import check_outcomes, open_producer, read_log
from tests.torture.harness import Broker, record

VALUE = b"d" * 1000


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def fill_until_refused(client: RawClient, topic: str, limit: int = 2000):
    """Produce 20 KiB batches (acks=all) until one is refused; returns (acked values, error)."""
    acked: list[bytes] = []
    for i in range(limit):
        values = [b"%s-%06d-%02d-" % (topic.encode(), i, j) + VALUE for j in range(20)]
        part = (await produce(client, topic, make_batch(values), acks=-1)).partitions[0]
        if part.error:
            return acked, part
        acked += values
    raise AssertionError("the disk never filled up")


async def check_whole_and_resume(broker: Broker, topic: str, acked: list[bytes], free) -> dict:
    async with await RawClient.connect(broker.port) as client:
        records = await read_records(client, topic, 0)  # whole batches only, dense offsets
        assert [o for o, _ in records] == list(range(len(records)))
        assert [v for _, v in records] == acked
        # still refused while full (and never half-written)
        again = (await produce(client, topic, make_batch([b"again" + VALUE] * 20), acks=-1)).partitions[0]
        assert again.error == StorageError.code
        assert [v for _, v in await read_records(client, topic, 0)] == acked
        free()
        later = [b"later-%d" % i for i in range(50)]
        resumed = (await produce(client, topic, make_batch(later), acks=-1)).partitions[0]
        assert resumed.error == 0, resumed
        assert resumed.base_offset == len(acked)
        assert [v for _, v in await read_records(client, topic, 0)] == acked + later
    assert broker.alive()
    return {"acked_before_full": len(acked)}


async def test_disk_full_on_a_small_tmpfs(tmp_path, small_tmpfs):
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1 << 20))  # freed later: "space returns"
    broker = Broker(tmp_path, data_dir=small_tmpfs / "data", settings={"checkpoint_interval_s": 0.2},
                    topic_defaults={"segment_bytes": 512 * 1024})
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "full")
            acked, refused = await fill_until_refused(client, "full")
        assert refused.error == StorageError.code
        assert "No space left on device" in refused.message, refused.message
        last_bytes = small_tmpfs / "last-bytes"  # take every byte left: metadata writes fail too
        fd = os.open(last_bytes, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        await trio.sleep(1.0)  # checkpoints keep failing meanwhile: the broker must stay up
        assert broker.alive(), broker.log_text()

        def free() -> None:
            filler.unlink()
            last_bytes.unlink()

        figures = await check_whole_and_resume(broker, "full", acked, free)
        record("3-disk-full-tmpfs", refused_message=refused.message, **figures)
    finally:
        code = broker.stop()
    assert code == 0, broker.log_text()
    broker.start()  # and it restarts on what it left
    try:
        async with await RawClient.connect(broker.port) as client:
            assert len(await read_records(client, "full", 0)) == len(acked) + 50
    finally:
        assert broker.stop() == 0


async def test_file_size_limit_partial_write_then_efbig(tmp_path):
    limit = 1 << 20
    broker = Broker(tmp_path, fsize_limit=limit, topic_defaults={"segment_bytes": 64 << 20})
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "big")
            acked, refused = await fill_until_refused(client, "big")
        assert refused.error == StorageError.code
        assert "File too large" in refused.message, refused.message
        segment = next((broker.data_dir / "big-0").glob("*.log"))
        assert segment.stat().st_size <= limit  # the partial write was cut back

        def raise_limit() -> None:
            resource.prlimit(broker.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

        figures = await check_whole_and_resume(broker, "big", acked, raise_limit)
        record("3-disk-full-fsize", refused_message=refused.message, **figures)
    finally:
        code = broker.stop()
    assert code == 0, broker.log_text()


@pytest.mark.parametrize("api", DRIVERS)
async def test_a_full_disk_with_default_retry_settings_backs_off_and_recovers(tmp_path, api):
    """Issue 13 item 9: ``StorageError`` is retriable, and retries went out back to back -- a
    storm for the whole delivery timeout (~93% CPU across broker and client). Now each retry
    waits (100 ms doubling to 1 s), the record fails with the disk's own error, and records
    sent once space returns are acknowledged, without a restart."""
    broker = Broker(tmp_path, fsize_limit=1 << 20, topic_defaults={"segment_bytes": 64 << 20})
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "full")
        outcomes = {}
        with trio.fail_after(60):
            async with open_producer(api, broker.bootstrap, delivery_timeout_ms=3000) as producer:
                refused = None
                for i in range(5000):
                    value = b"%06d-" % i + VALUE
                    handle = await producer.send("full", value, partition=0)
                    if i % 50 == 49:
                        outcomes[value] = outcome = await producer.outcome(handle)
                        if not isinstance(outcome, int):
                            refused = handle
                            break
                assert refused is not None, "the disk never filled up"
                error = outcomes[value]
                assert isinstance(error, StorageError) and "File too large" in str(error), error
                attempts = refused.batch.attempts
                assert 2 <= attempts <= 8, f"{attempts} attempts in 3 s: no backoff"
                resource.prlimit(broker.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
                for value in (b"later-1", b"later-2"):
                    outcomes[value] = await producer.outcome(await producer.send("full", value))
                    assert isinstance(outcomes[value], int), outcomes[value]
        check_outcomes(await read_log(broker.bootstrap, "full"), outcomes)
        record(f"3-disk-full-producer-{api}", attempts_in_3_s=attempts, error=str(error))
    finally:
        code = broker.stop()
    assert code == 0, broker.log_text()
