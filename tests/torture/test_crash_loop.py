"""Scenario 1: the crash loop, against a real broker process.

Idempotent ``acks=all`` producers (the ``sluice.client.Producer``) and two raw group members that fetch
and commit run while the broker is killed with SIGKILL at random moments and restarted on the
same port and data dir. Promised, checked at the end: every acknowledged record is present
exactly once, in per-partition order (per producer), with dense offsets; every committed offset
is at or below the log end; every member resumed at or after the last commit acknowledged for
its partition (never below it, never past the log end).
"""

from __future__ import annotations

import random
import time

import pytest
import trio
from sluice.client import Producer
from sluice.protocol import messages as m
from sluice.protocol.batch import decode_records, iter_batches
from sluice.protocol.errors import ProtocolError

from tests.broker.conftest import RawClient, create_topic, read_records
from tests.torture.harness import MODES, Broker, record

TOPIC = "loop"
PARTITIONS = 3
GROUP = "loopers"
SCALE = {
    "quick": dict(kills=3, producers=2, max_records=200_000, gap=(0.4, 1.2), seconds=60),
    "long": dict(kills=25, producers=3, max_records=2_000_000, gap=(0.3, 2.5), seconds=400),
}
NET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError)


class Ledger:
    """What the clients were told: acked records and acked commits."""

    def __init__(self) -> None:
        self.acked: dict[tuple[int, int], list[int]] = {}  # (producer, partition) -> seq in ack order
        self.acked_count = 0
        self.failed = 0
        self.committed: dict[int, int] = {}  # partition -> last acknowledged committed offset
        self.commits = 0
        self.resumes = 0
        self.resume_violations: list[str] = []
        self.consumed = 0


async def produce_until(stop: trio.Event, port: int, index: int, ledger: Ledger, limit: int) -> None:
    async with Producer(f"127.0.0.1:{port}", acks="all", idempotent=True, linger_ms=2,
                        batch_bytes=16 * 1024, delivery_timeout_ms=600_000,
                        client_id=f"looper-{index}") as producer:
        pending: list[tuple[int, int, object]] = []

        async def settle(keep: int) -> None:
            while len(pending) > keep:
                partition, seq, handle = pending.pop(0)
                try:
                    await handle
                except Exception:
                    ledger.failed += 1
                    continue
                ledger.acked.setdefault((index, partition), []).append(seq)
                ledger.acked_count += 1

        seq = 0
        while not stop.is_set() and seq < limit:
            partition = seq % PARTITIONS
            handle = await producer.send(TOPIC, b"p%d-%09d" % (index, seq), partition=partition)
            pending.append((partition, seq, handle))
            seq += 1
            if len(pending) >= 500:
                await settle(250)
        await settle(0)


def owned_list(positions: dict[int, int]) -> list[m.TopicPartitions]:
    return [m.TopicPartitions(topic=TOPIC, partitions=sorted(positions))]


async def member(stop: trio.Event, broker: Broker, name: str, ledger: Ledger) -> None:
    """A group member on raw requests: join, resume from commits, fetch, commit, heartbeat.
    Any connection error (the broker died) means: reconnect and rejoin from scratch."""
    while not stop.is_set():
        try:
            async with await RawClient.connect(broker.port) as client:
                await run_member(stop, client, name, ledger)
        except NET_ERRORS:
            await trio.sleep(0.1)


async def run_member(stop: trio.Event, client: RawClient, name: str, ledger: Ledger) -> None:
    hb = await client.request(m.GroupHeartbeatRequest(
        group_id=GROUP, member_id="", member_epoch=0, topics=[TOPIC], session_timeout_ms=4000, owned=[]))
    if hb.error:
        await trio.sleep(0.2)
        return
    member_id, epoch = hb.member_id, hb.member_epoch
    positions: dict[int, int] = {}
    target = hb.assignment
    last_hb = time.monotonic()
    while not stop.is_set():
        if target is not None:
            wanted = {p for tp in target if tp.topic == TOPIC for p in tp.partitions}
            for p in sorted(set(positions) - wanted):
                positions.pop(p)  # revoked (we commit after every fetch, so nothing is pending)
            new = sorted(wanted - set(positions))
            if new:
                await resume(client, new, positions, ledger)
            target = None
        if positions:
            response = await client.request(m.FetchRequest(
                max_wait_ms=100, min_bytes=1, max_bytes=1 << 20,
                partitions=[m.FetchPartition(topic=TOPIC, partition=p, offset=o, max_bytes=256 << 10)
                            for p, o in sorted(positions.items())]))
            for part in response.partitions:
                if part.error:
                    continue
                for batch in iter_batches(part.records):
                    for rec in decode_records(batch):
                        if rec.offset >= positions[part.partition]:
                            positions[part.partition] = rec.offset + 1
                            ledger.consumed += 1
            sent = dict(positions)
            commit = await client.request(m.CommitOffsetsRequest(
                group_id=GROUP, member_id=member_id, member_epoch=epoch,
                offsets=[m.OffsetCommit(topic=TOPIC, partition=p, offset=o) for p, o in sent.items()]))
            if commit.error:
                return  # fenced or unknown (the broker restarted): rejoin
            for result in commit.partitions:
                if result.error == 0:
                    ledger.committed[result.partition] = sent[result.partition]
                    ledger.commits += 1
        else:
            await trio.sleep(0.1)
        if time.monotonic() - last_hb > 0.3:
            hb = await client.request(m.GroupHeartbeatRequest(
                group_id=GROUP, member_id=member_id, member_epoch=epoch, session_timeout_ms=4000,
                owned=owned_list(positions)))
            if hb.error:
                return
            epoch, last_hb = hb.member_epoch, time.monotonic()
            if hb.assignment is not None:
                target = hb.assignment
    await client.request(m.GroupHeartbeatRequest(
        group_id=GROUP, member_id=member_id, member_epoch=-1, session_timeout_ms=4000))


async def resume(client: RawClient, new: list[int], positions: dict[int, int], ledger: Ledger) -> None:
    fetched = await client.request(m.FetchOffsetsRequest(
        group_id=GROUP, partitions=[m.TopicPartition(topic=TOPIC, partition=p) for p in new]))
    ends = await client.request(m.ListOffsetsRequest(partitions=[
        m.ListOffsetsPartition(topic=TOPIC, partition=p, timestamp=-1) for p in new]))
    end_of = {r.partition: r.offset for r in ends.partitions}
    for result in fetched.partitions:
        offset = max(result.offset, 0)
        expected = ledger.committed.get(result.partition, 0)
        if offset < expected or offset > end_of[result.partition]:
            ledger.resume_violations.append(
                f"p{result.partition}: resumed at {offset}, last acked commit {expected}, "
                f"log end {end_of[result.partition]}")
        positions[result.partition] = offset
        ledger.resumes += 1


@pytest.mark.parametrize("mode", MODES)
async def test_crash_loop_keeps_every_acknowledged_record_exactly_once(tmp_path, mode):
    scale = SCALE[mode]
    rng = random.Random(1234)
    broker = Broker(tmp_path, settings={"checkpoint_interval_s": 0.3},
                    topic_defaults={"segment_bytes": 256 * 1024, "index_interval_bytes": 1024})
    broker.start()
    ledger = Ledger()
    kills = 0
    started = time.monotonic()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, TOPIC, partitions=PARTITIONS)
        with trio.fail_after(scale["seconds"] + 120):
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for i in range(scale["producers"]):
                    nursery.start_soon(produce_until, stop, broker.port, i, ledger, scale["max_records"])
                for name in ("m1", "m2"):
                    nursery.start_soon(member, stop, broker, name, ledger)
                deadline = started + scale["seconds"]
                while kills < scale["kills"] and time.monotonic() < deadline:
                    await trio.sleep(rng.uniform(*scale["gap"]))
                    broker.kill()
                    kills += 1
                    broker.start()
                await trio.sleep(1.0)
                stop.set()
        async with await RawClient.connect(broker.port) as client:
            logs = {p: await read_records(client, TOPIC, p) for p in range(PARTITIONS)}
            committed = await client.request(m.FetchOffsetsRequest(group_id=GROUP))
        lost = duplicated = reordered = 0
        for p, records in logs.items():
            offsets = [o for o, _ in records]
            assert offsets == list(range(len(records))), f"offsets of partition {p} are not dense"
            seen: dict[int, list[int]] = {}
            values = [v for _, v in records]
            duplicated += len(values) - len(set(values))
            for value in values:
                producer, seq = value.decode().split("-")
                seen.setdefault(int(producer[1:]), []).append(int(seq))
            for seqs in seen.values():
                reordered += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
            for (producer, partition), acked in ledger.acked.items():
                if partition == p:
                    lost += len(set(acked) - set(seen.get(producer, [])))
        ends = {p: len(records) for p, records in logs.items()}
        over = [r for r in committed.partitions if r.offset > ends[r.partition]]
        below = [r for r in committed.partitions if r.offset < ledger.committed.get(r.partition, 0)]
        record(f"1-crash-loop-{mode}", kills=kills, acked=ledger.acked_count, lost=lost,
               duplicated=duplicated, reordered=reordered, unacked_failed=ledger.failed,
               stored=sum(ends.values()), commits_acked=ledger.commits, consumed=ledger.consumed,
               member_resumes=ledger.resumes, resume_violations=len(ledger.resume_violations),
               slowest_restart_s=round(max(broker.start_seconds), 2),
               seconds=round(time.monotonic() - started, 1))
        assert kills == scale["kills"]
        assert ledger.acked_count > 0 and ledger.commits > 0 and ledger.resumes > kills
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert not over, over
        assert not below, (below, ledger.committed)
        assert not ledger.resume_violations, ledger.resume_violations
        assert "offline" not in broker.log_text()
    finally:
        code = broker.stop()
    assert code == 0
