"""Scenario 8: a crash right after a topic is deleted and created again.

Each round: producer Q writes to every partition of the topic (acks=all) and a group commits
there; sometimes the periodic checkpoint is waited for, so the old topic's producer state is on
disk; the topic is deleted and created again (1-3 partitions); producer P writes a few batches to
the new topic; after a random short delay the broker is killed with SIGKILL and restarted.
Promised, checked after every restart: the new topic holds exactly what P was told was written,
nothing of the old one; the group's commits to the old topic are gone; P's state survived --
a retry of its last batch, or of its first if still within the five remembered, is answered
with the original offset and not written again (an older one is refused as out of order),
and its next batch is accepted; the
topic id is the one it had before the crash; no partition is offline.
"""

from __future__ import annotations

import random
import time

import msgpack
import pytest
import trio
from sluice.protocol import messages as m
from sluice.protocol.errors import OutOfOrderSequenceError

from tests.broker.conftest import RawClient, create_topic, make_batch, produce, read_values
from tests.torture.harness import MODES, Broker, record

TOPIC = "reborn"
GROUP = "readers"
CHECKPOINT_S = 0.5
SCALE = {"quick": dict(rounds=6, max_batches=7), "long": dict(rounds=25, max_batches=9)}


def value(producer: str, rnd: int, partition: int, seq: int) -> bytes:
    return b"%s-r%d-p%d-%d" % (producer.encode(), rnd, partition, seq)


async def write(client: RawClient, pid: int, name: str, rnd: int, partition: int, seq: int):
    batch = make_batch([value(name, rnd, partition, seq)], producer_id=pid, producer_epoch=0,
                       base_sequence=seq)
    return (await produce(client, TOPIC, batch, partition=partition, acks=-1)).partitions[0]


async def wait_for_checkpoint(broker: Broker, ends: dict[int, int]) -> None:
    """Until the producer-state checkpoint holds the topic at these log ends."""
    path = broker.data_dir / "meta" / "producer-state"
    with trio.fail_after(10):
        while True:
            try:
                snapshots = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
            except (FileNotFoundError, ValueError):
                snapshots = {}
            entries = [snapshots.get(f"{TOPIC}-{p}") for p in ends]
            if all(e and e[0] == ends[p] for p, e in zip(ends, entries, strict=True)):
                return
            await trio.sleep(CHECKPOINT_S / 4)


async def topic_id(client: RawClient) -> str:
    return (await client.request(m.MetadataRequest(topics=[TOPIC]))).topics[0].topic_id


@pytest.mark.parametrize("mode", MODES)
async def test_a_crash_right_after_a_recreate_applies_nothing_of_the_old_topic(tmp_path, mode):
    scale = SCALE[mode]
    rng = random.Random(813)
    broker = Broker(tmp_path, settings={"checkpoint_interval_s": CHECKPOINT_S})
    broker.start()
    figures = dict(rounds=0, waited_for_checkpoint=0, delayed_kills=0, p_batches_acked=0, retries_deduplicated=0,
                   retries_refused_as_too_old=0, old_commits_gone=0)
    started = time.monotonic()
    partitions = 2
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, TOPIC, partitions=partitions)
        for rnd in range(scale["rounds"]):
            async with await RawClient.connect(broker.port) as client:
                old_id = await topic_id(client)
                q = (await client.request(m.InitProducerIdRequest())).producer_id
                old_batches = rng.randint(1, scale["max_batches"])
                ends = {}
                for p in range(partitions):
                    for seq in range(old_batches):
                        result = await write(client, q, "q", rnd, p, seq)
                        assert result.error == 0
                        ends[p] = result.base_offset + 1
                commit = await client.request(m.CommitOffsetsRequest(
                    group_id=GROUP, member_id="", member_epoch=-1, offsets=[
                        m.OffsetCommit(topic=TOPIC, partition=p, offset=end, topic_id=old_id)
                        for p, end in ends.items()]))
                assert all(r.error == 0 for r in commit.partitions)
                if rng.random() < 0.75:  # the old topic's producer state is on disk
                    await wait_for_checkpoint(broker, ends)
                    figures["waited_for_checkpoint"] += 1
                assert (await client.request(m.DeleteTopicsRequest(topics=[TOPIC]))).topics[0].error == 0
                partitions = rng.randint(1, 3)
                new_id = (await create_topic(client, TOPIC, partitions=partitions)).topics[0].topic_id
                p_id = (await client.request(m.InitProducerIdRequest())).producer_id
                # as many batches as the old topic's end, or a few fewer or more
                written = {p: max(1, rng.randint(ends[0] - 2, ends[0] + 2)) for p in range(partitions)}
                for p, count in written.items():
                    for seq in range(count):
                        assert (await write(client, p_id, "p", rnd, p, seq)).error == 0
                        figures["p_batches_acked"] += 1
            if rng.random() < 0.4:  # else right away, before the new topic is checkpointed
                await trio.sleep(rng.uniform(0, CHECKPOINT_S * 1.5))
                figures["delayed_kills"] += 1
            broker.kill()
            broker.start()
            async with await RawClient.connect(broker.port) as client:
                assert await topic_id(client) == new_id
                for p, count in written.items():
                    expected = [value("p", rnd, p, seq) for seq in range(count)]
                    assert await read_values(client, TOPIC, p) == expected, f"round {rnd} p{p}"
                fetched = await client.request(m.FetchOffsetsRequest(group_id=GROUP))
                assert [r for r in fetched.partitions if r.topic == TOPIC] == []
                figures["old_commits_gone"] += 1
                for p, count in written.items():
                    last = await write(client, p_id, "p", rnd, p, count - 1)  # always remembered
                    assert (last.error, last.base_offset) == (0, count - 1), last
                    figures["retries_deduplicated"] += 1
                    retry = await write(client, p_id, "p", rnd, p, 0)
                    if count <= 5:  # within the window the broker remembers: a duplicate
                        assert (retry.error, retry.base_offset) == (0, 0), retry
                        figures["retries_deduplicated"] += 1
                    else:  # older than the window: refused, never written again
                        assert retry.error == OutOfOrderSequenceError.code, retry
                        figures["retries_refused_as_too_old"] += 1
                    after = await write(client, p_id, "p", rnd, p, count)
                    assert (after.error, after.base_offset) == (0, count), (rnd, p, after)
                    expected = [value("p", rnd, p, seq) for seq in range(count + 1)]
                    assert await read_values(client, TOPIC, p) == expected
            figures["rounds"] += 1
        assert "offline" not in broker.log_text()
    finally:
        code = broker.stop()
    record(f"8-recreate-crash-{mode}", **figures, seconds=round(time.monotonic() - started, 1))
    assert code == 0
    assert figures["rounds"] == scale["rounds"]
