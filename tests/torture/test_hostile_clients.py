"""Scenario 4: hostile clients against a real broker process, and decoder fuzzing.

Hostile load runs in its own process (``tests.torture.hostile``) while this process measures a
well-behaved client's round trips (produce acks=1 + fetch). Promised: the broker stays up,
memory stays bounded (peak RSS from /proc), and the well-behaved client keeps working; the
throughput ratio (unloaded / loaded) is reported; only progress is asserted. The hostile
kinds hit both listeners: Sluice's port and, in Kafka's framing, the Kafka port; afterwards a
Kafka client works as well as a Sluice one.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from sluice.protocol import messages as m
from sluice.protocol.connection import BadRequest, RequestReceived, ServerConnection
from sluice.protocol.errors import FrameTooLargeError, RemoteProtocolError
from sluice.protocol.framing import CLOSED, NEED_DATA, PREALLOCATE_BYTES, FrameDecoder

from tests.broker.conftest import RawClient, create_topic, fetch, make_batch, produce
from tests.broker.kafka_client import KafkaRawClient, fetch_request, kafka_batch, produce_request
from tests.torture.harness import MODES, ROOT, Broker, child_env, record

# SLUICE_TORTURE_HOSTILE=fuzz,storm runs only those kinds (to see which one costs what)
KINDS = os.environ.get("SLUICE_TORTURE_HOSTILE", "fuzz,slowloris,noread,storm,bomb,huge,"
                       "kfuzz,kslowloris,knoread,kbomb,khuge")
SCALE = {"quick": dict(hostile_s=8, measure_s=3, scale=1), "long": dict(hostile_s=40, measure_s=15, scale=4)}


async def well_behaved(port: int, seconds: float) -> float:
    """Round trips per second: produce a 20-record batch (acks=1), fetch it back."""
    async with await RawClient.connect(port) as client:
        await client.request(m.MetadataRequest())
        done = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            response = await produce(client, "calm", make_batch([b"v" * 100] * 20), acks=1)
            assert response.partitions[0].error == 0, response
            part = (await fetch(client, "calm", response.partitions[0].base_offset)).partitions[0]
            assert part.error == 0 and len(part.records) > 0
            done += 1
        return done / seconds


async def kafka_round_trip(port: int) -> None:
    """A well-behaved Kafka client: produce a batch, fetch it back."""
    async with await KafkaRawClient.connect(port) as client:
        produced = await client.request(produce_request("calm", kafka_batch([b"k" * 100] * 20)))
        result = produced.responses[0].partition_responses[0]
        assert result.error_code == 0, result
        fetched = await client.request(fetch_request("calm", result.base_offset))
        part = fetched.responses[0].partitions[0]
        assert part.error_code == 0 and len(part.records) > 0


async def sample_rss(broker: Broker, peak: list[float], stop: trio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], broker.rss_mib())
        with trio.move_on_after(0.1):
            await stop.wait()


@pytest.mark.parametrize("mode", MODES)
async def test_hostile_clients_do_not_hurt_the_broker_or_its_good_clients(tmp_path, mode):
    figures = SCALE[mode]
    broker = Broker(tmp_path, settings={"send_timeout_s": 3.0, "max_connections": 1024})
    broker.start()
    try:
        async with await RawClient.connect(broker.port) as client:
            await create_topic(client, "calm")
            await create_topic(client, "hostile")
            for _ in range(40):  # ~8 MiB for the never-reading fetchers
                await produce(client, "hostile", make_batch([b"x" * 2000] * 100), acks=1)
        idle_rss = broker.rss_mib()
        baseline = await well_behaved(broker.port, figures["measure_s"])
        hostile = subprocess.Popen(
            [sys.executable, "-m", "tests.torture.hostile", str(broker.port), str(figures["hostile_s"]),
             KINDS, str(figures["scale"]), str(broker.kafka_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT,
        )
        peak = [idle_rss]
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss, broker, peak, stop)
                await trio.sleep(1.0)  # let the hostile load build up
                loaded = await well_behaved(broker.port, figures["measure_s"])
                with trio.fail_after(figures["hostile_s"] + 60):
                    out, err = await trio.to_thread.run_sync(hostile.communicate)
                stop.set()
        finally:
            if hostile.poll() is None:
                hostile.kill()
                hostile.wait()
        assert hostile.returncode == 0, err.decode()[-3000:]
        counts = dict(line.split("=", 1) for line in out.decode().split())
        assert broker.alive(), broker.log_text()
        log = broker.log_path.read_text(errors="replace")
        assert "unexpected error" not in log and "failed; closed it" not in log  # no bug hit
        after = await well_behaved(broker.port, 1.0)
        assert after > 0
        await kafka_round_trip(broker.kafka_port)
        peak_hwm = broker.peak_rss_mib()
        ratio = baseline / max(loaded, 1e-9)
        record(
            f"4-hostile-{mode}" + ("" if "," in KINDS else f"-{KINDS}"),
            baseline_rt_per_s=round(baseline, 1),
            loaded_rt_per_s=round(loaded, 1),
            slowdown_ratio=round(ratio, 2),
            idle_rss_mib=round(idle_rss, 1),
            peak_rss_mib=round(max(peak_hwm, peak[0]), 1),
            **{k: int(v) for k, v in counts.items()},
        )
        for kind, count in (("fuzz_frames", 1000), ("storm_connections", 900),
                            ("kfuzz_frames", 1000)):
            if kind.split("_")[0] in KINDS.split(","):
                assert int(counts.get(kind, 0)) >= count, counts
        # Generous bounds only: 50 connections announcing 60 MiB frames would need ~3 GiB if the
        # broker preallocated them.
        assert peak_hwm < idle_rss + 600, counts
        # The ratio is reported, not asserted (noisy on 2 shared cores, and dominated by the
        # "huge" requests: see RELIABILITY.md); the good client must keep making progress.
        assert loaded >= 1, (baseline, loaded)
    finally:
        code = broker.stop()
    assert code == 0, broker.log_text()


async def test_oversized_prefix_is_refused_before_allocating(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    try:
        before = broker.rss_mib()
        async with await trio.open_tcp_stream("127.0.0.1", broker.port) as stream:
            await stream.send_all(struct.pack(">II", 2**32 - 1, 8))
            decoder = FrameDecoder()
            with trio.fail_after(10):
                while (frame := decoder.next_frame()) is NEED_DATA:
                    decoder.receive_data(await stream.receive_some(1 << 16))
            header = msgpack.unpackb(frame.header, raw=False)
            assert header["error"] == FrameTooLargeError.code and header["cid"] == -1
            assert await stream.receive_some(10) == b""  # then it closes
        assert broker.rss_mib() < before + 50
    finally:
        assert broker.stop() == 0


def test_announced_frame_size_is_not_preallocated():
    """Found by scenario 4: an 8-byte prefix announcing 64 MiB made the decoder allocate (and
    zero) 64 MiB at once; many such connections were a memory bomb."""
    decoder = FrameDecoder()
    size = 64 * 1024 * 1024
    decoder.receive_data(struct.pack(">II", size, 10) + b"\x80" * 100)
    assert decoder.next_frame() is NEED_DATA
    assert len(decoder._frame) <= PREALLOCATE_BYTES  # not the 64 MiB announced
    # ... yet the frame still arrives whole, however it is chunked.
    header = msgpack.packb({"api": 1})
    body = bytes(range(256)) * 4096
    data = struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body
    decoder = FrameDecoder()
    for i in range(0, len(data), 70_000):
        decoder.receive_data(data[i : i + 70_000])
    frame = decoder.next_frame()
    assert bytes(frame.header) == header and bytes(frame.body) == body
    frame.body[0] = 1  # still a writable view


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(lambda n, h: struct.pack(">II", n, h), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
            st.builds(lambda obj: (lambda b: struct.pack(">II", 4 + len(b), len(b)) + b)(msgpack.packb(obj)),
                      st.recursive(st.none() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=5),
                                   lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
                                   max_leaves=20)),
            st.sampled_from([
                msgpack.packb({"api": a, "v": 0, "cid": 1}) for a in range(15)
            ]).map(lambda b: struct.pack(">II", 4 + len(b), len(b)) + b),
        ),
        max_size=10,
    ),
    st.integers(1, 64),
)
def test_server_connection_survives_any_bytes(pieces, chunk):
    """Any byte stream, in any chunking: events, or a RemoteProtocolError; never another
    exception, and never more buffered memory than received (plus one preallocated frame)."""
    conn = ServerConnection()
    data = b"".join(pieces)
    received = 0
    for i in range(0, len(data) + 1, chunk):
        piece = data[i : i + chunk]
        conn.receive_data(piece)
        received += len(piece)
        if not piece:
            break
        try:
            while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
                assert isinstance(event, RequestReceived | BadRequest)
        except RemoteProtocolError:
            return
        frame = conn._decoder._frame
        if frame is not None:
            assert len(frame) <= max(received, PREALLOCATE_BYTES)


async def test_an_oversized_kafka_prefix_is_closed_on_before_allocating(tmp_path):
    """Kafka's framing on the Kafka port: a size over max_frame_bytes closes the connection
    without an answer (Kafka answers none) and without buffering what was announced."""
    broker = Broker(tmp_path)
    broker.start()
    try:
        before = broker.rss_mib()
        streams = []
        for _ in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", broker.kafka_port)
            streams.append(stream)
            await stream.send_all(struct.pack(">i", 2**31 - 1) + b"\x00" * 64)
        with trio.fail_after(10):
            for stream in streams:
                assert await stream.receive_some(10) == b""  # closed, not a byte said
                await stream.aclose()
        assert broker.rss_mib() < before + 50
        await kafka_round_trip_on_new_topic(broker)
    finally:
        assert broker.stop() == 0


async def kafka_round_trip_on_new_topic(broker: Broker) -> None:
    async with await RawClient.connect(broker.port) as client:
        await create_topic(client, "calm")
    await kafka_round_trip(broker.kafka_port)
