"""Hostile clients for scenario 4, run as a separate process so their CPU is not the measuring
client's: ``python -m tests.torture.hostile PORT SECONDS KIND[,KIND...] [SCALE [KAFKA_PORT]]``.

Every loop is bounded by a count and by the deadline. Prints one ``name=value`` line per figure
on exit (frames sent, connections opened...).

KINDS on the Sluice port: fuzz (random and mutated frames over many connections), slowloris (a
byte a second), noread (fetch big responses, never read them), storm (open and drop
connections), bomb (prefixes announcing max-size frames, then silence), huge (requests with
huge counts and nesting). The same on the Kafka port (KAFKA_PORT), in Kafka's framing:
kfuzz, kslowloris, knoread, kbomb, khuge.
"""

from __future__ import annotations

import random
import struct
import sys
import time
from collections.abc import Callable

import msgpack
import trio
from sluice.protocol import messages as m
from sluice.protocol.batch import build_batch
from sluice.protocol.connection import ClientConnection
from sluice.protocol.kafka import KafkaClientConnection
from sluice.protocol.kafka import messages as k

TOPIC = "hostile"
COUNTS: dict[str, int] = {}
FUZZ_FRAMES_PER_SCALE = 1000


def bump(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


def frame(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


def valid_frames() -> list[bytes]:
    conn = ClientConnection()
    out = []
    for request in (
        m.MetadataRequest(),
        m.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1 << 16, partitions=[
            m.FetchPartition(topic=TOPIC, partition=0, offset=0, max_bytes=1 << 16)]),
        m.ListOffsetsRequest(partitions=[m.ListOffsetsPartition(topic=TOPIC, partition=0, timestamp=-1)]),
        m.DescribeTopicsRequest(topics=None),
        m.GroupHeartbeatRequest(group_id="g", member_id="", member_epoch=0, topics=[TOPIC],
                                session_timeout_ms=10_000, owned=None),
    ):
        _, pieces = conn.send_request(request)
        out.append(b"".join(bytes(p) for p in pieces))
    return out


def mutate_frame(rng: random.Random, data: bytes, prefix: int,
                 malformed: Callable[[random.Random, int, bytes], bytes]) -> bytes:
    """A mutation of the valid frame ``data``, one of six kinds: bytes flipped after its
    ``prefix`` (framing stays intact), pure noise, a truncation -- or one of the protocol's
    own malformed frames, ``malformed(rng, kind, data)`` for kinds 1 to 3."""
    data = bytearray(data)
    choice = rng.randrange(6)
    if choice == 0 and len(data) > prefix:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(prefix, len(data))] ^= 1 << rng.randrange(8)
    elif choice in (1, 2, 3):
        return malformed(rng, choice, bytes(data))
    elif choice == 4:  # pure noise (breaks framing: the broker closes this connection)
        return rng.randbytes(rng.randint(1, 300))
    elif choice == 5:  # a truncated valid frame
        return bytes(data[: rng.randrange(1, len(data))])
    return bytes(data)


def sluice_malformed(rng: random.Random, kind: int, data: bytes) -> bytes:
    if kind == 1:  # random header bytes in an intact frame
        return frame(rng.randbytes(rng.randint(0, 200)), rng.randbytes(rng.randint(0, 50)))
    if kind == 2:  # a valid msgpack header of the wrong shape
        junk = rng.choice([[1, 2], {"api": rng.randint(-5, 40), "v": 0, "cid": rng.randint(-9, 2**40)},
                           {"api": 6, "v": 0, "cid": 1, "partitions": "x" * 50},
                           {"api": 5, "v": 0, "cid": 1, "acks": -1, "timeout_ms": 5,
                            "partitions": [{"topic": TOPIC, "partition": 0, "length": 10**6}]}])
        return frame(msgpack.packb(junk))
    return struct.pack(">II", 20, 900) + rng.randbytes(16)  # header_length past the frame


def mutate(rng: random.Random, data: bytes) -> bytes:
    return mutate_frame(rng, data, 8, sluice_malformed)


async def fuzz(port: int, deadline: float, scale: int, *, frames: list[bytes] | None = None,
               mutator=mutate, name: str = "fuzz") -> None:
    rng = random.Random(7)
    frames = frames or valid_frames()

    async def one(conn_index: int) -> None:
        local = random.Random(rng.random())
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            bump(f"{name}_connect_failed")
            return
        bump(f"{name}_connections")
        async with stream:
            async def drain() -> None:
                try:
                    while await stream.receive_some(1 << 16):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                try:
                    for _ in range(100):
                        if time.monotonic() > deadline:
                            break
                        data = mutator(local, local.choice(frames))
                        await stream.send_all(data)
                        bump(f"{name}_frames")
                        await trio.sleep(0)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    bump(f"{name}_closed_by_broker")
                with trio.move_on_after(0.5):
                    await trio.sleep(0.2)
                nursery.cancel_scope.cancel()

    # Waves of 50 connections until the quota is sent: how many frames a connection gets
    # through before the broker closes it on broken framing depends on timing.
    wave = 0
    while COUNTS.get(f"{name}_frames", 0) < FUZZ_FRAMES_PER_SCALE * scale:
        if time.monotonic() > deadline:
            break
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, wave * 50 + i)
        wave += 1


async def slowloris(port: int, deadline: float, scale: int, *,
                    frames: list[bytes] | None = None, name: str = "slowloris") -> None:
    frames = frames or valid_frames()

    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        bump(f"{name}_connections")
        async with stream:
            data = frames[0]
            try:
                for i in range(10**6):
                    if time.monotonic() > deadline:
                        return
                    await stream.send_all(data[i % len(data): i % len(data) + 1])
                    bump(f"{name}_bytes")
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                bump(f"{name}_closed_by_broker")

    async with trio.open_nursery() as nursery:
        for _ in range(20 * scale):
            nursery.start_soon(one)


async def noread(port: int, deadline: float, scale: int, *, request: bytes | None = None,
                 name: str = "noread") -> None:
    if request is None:
        _, pieces = ClientConnection().send_request(m.FetchRequest(
            max_wait_ms=0, min_bytes=1, max_bytes=8 << 20,
            partitions=[m.FetchPartition(topic=TOPIC, partition=0, offset=0, max_bytes=8 << 20)]))
        request = b"".join(bytes(p) for p in pieces)

    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        bump(f"{name}_connections")
        async with stream:
            try:
                for _ in range(200):  # never read a byte of the answers
                    if time.monotonic() > deadline:
                        return
                    with trio.move_on_after(max(0.0, deadline - time.monotonic())):
                        await stream.send_all(request)
                    bump(f"{name}_requests")
                await trio.sleep(max(0.0, deadline - time.monotonic()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                bump(f"{name}_closed_by_broker")

    async with trio.open_nursery() as nursery:
        for _ in range(10 * scale):
            nursery.start_soon(one)


async def storm(port: int, deadline: float, scale: int) -> None:
    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            bump("storm_refused")
            return
        bump("storm_connections")
        await stream.aclose()

    total = 1000 * scale
    for _ in range(total // 100):
        if time.monotonic() > deadline:
            break
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(one)


async def bomb(port: int, deadline: float, scale: int, *, prefix: bytes | None = None,
               name: str = "bomb") -> None:
    """Announce a 60 MiB frame, send a few bytes of it, then wait."""
    prefix = prefix or struct.pack(">II", 60 << 20, 16) + b"\x80" * 16
    streams = []
    try:
        for _ in range(50 * scale):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(prefix)
            except (OSError, trio.BrokenResourceError):
                bump(f"{name}_refused")
                continue
            streams.append(stream)
            bump(f"{name}_connections")
        await trio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def huge(port: int, deadline: float, scale: int, *, frames: list[bytes] | None = None,
               name: str = "huge") -> None:
    frames = frames or sluice_huge_frames()
    for _ in range(scale * 5):
        for data in frames:
            if time.monotonic() > deadline:
                return
            try:
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(data)
                    with trio.move_on_after(10):
                        while await stream.receive_some(1 << 20):
                            bump(f"{name}_response_bytes")
                            break
                bump(f"{name}_requests")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                bump(f"{name}_closed")


def sluice_huge_frames() -> list[bytes]:
    names = [f"t{i}" for i in range(50_000)]
    pack = msgpack.packb
    nested = (b"\x84" + pack("api") + pack(1) + pack("v") + pack(0) + pack("cid") + pack(5)
              + pack("topics") + b"\x91" * 100_000 + b"\xc0")
    headers = [
        msgpack.packb({"api": 1, "v": 0, "cid": 1, "topics": names}),
        msgpack.packb({"api": 6, "v": 0, "cid": 2, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                       "partitions": [{"topic": TOPIC, "partition": i, "offset": 0, "max_bytes": 1}
                                      for i in range(30_000)]}),
        msgpack.packb({"api": 7, "v": 0, "cid": 3,
                       "partitions": [{"topic": TOPIC, "partition": 0, "timestamp": -1}] * 40_000}),
        msgpack.packb({"api": 4, "v": 0, "cid": 4, "topics": names}),
        b"\x91" * 200_000 + b"\x00",  # 200k nested arrays
        nested,
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xdf\x7f\xff\xff\xff",  # a map claiming 2 billion entries
    ]
    return [frame(header) for header in headers]


# -- the Kafka port: the same attacks in Kafka's framing (a 4-byte size, then the request) -------


def kafka_frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def kafka_valid_frames() -> list[bytes]:
    conn = KafkaClientConnection(client_id="hostile")
    F, P, J = k.FetchRequest, k.ProduceRequest, k.JoinGroupRequest
    batch = build_batch([(b"k", b"v" * 50, [], 1_700_000_000_000)] * 5)
    requests = [
        (k.ApiVersionsRequest(client_software_name="h", client_software_version="1"), 3),
        (k.MetadataRequest(topics=None), 8),
        (F(max_wait_ms=0, min_bytes=1, max_bytes=1 << 16, topics=[F.FetchTopic(
            topic=TOPIC, partitions=[F.FetchPartition(partition=0, fetch_offset=0,
                                                      partition_max_bytes=1 << 16)])]), 11),
        (P(acks=1, timeout_ms=1000, topic_data=[P.TopicProduceData(name=TOPIC, partition_data=[
            P.PartitionProduceData(index=0, records=batch)])]), 8),
        (J(group_id="hostile-g", session_timeout_ms=6000, rebalance_timeout_ms=1000,
           member_id="", protocol_type="consumer",
           protocols=[J.JoinGroupRequestProtocol(name="range", metadata=b"m")]), 5),
        (k.ListGroupsRequest(), 2),
    ]
    out = []
    for request, version in requests:
        _, pieces = conn.send_request(request, version)
        out.append(b"".join(bytes(p) for p in pieces))
    return out


def kafka_malformed(rng: random.Random, kind: int, data: bytes) -> bytes:
    if kind == 1:  # an intact frame of random bytes
        return kafka_frame(rng.randbytes(rng.randint(0, 300)))
    if kind == 2:  # a known header (API, version, cid, client id), then a random body
        header = struct.pack(">hhih", rng.choice([0, 1, 3, 11, 14, 18, 19, 32, 99]),
                             rng.randint(-1, 12), rng.randint(-9, 2**31 - 1), -1)
        return kafka_frame(header + rng.randbytes(rng.randint(0, 80)))
    # a size the frame does not have
    return struct.pack(">i", rng.choice([-1, -(2**31), 2**31 - 1, 70 << 20])) + data[4:]


def kafka_mutate(rng: random.Random, data: bytes) -> bytes:
    return mutate_frame(rng, data, 4, kafka_malformed)


async def kfuzz(port: int, deadline: float, scale: int) -> None:
    await fuzz(port, deadline, scale, frames=kafka_valid_frames(), mutator=kafka_mutate,
               name="kfuzz")


async def kslowloris(port: int, deadline: float, scale: int) -> None:
    await slowloris(port, deadline, scale, frames=kafka_valid_frames(), name="kslowloris")


async def knoread(port: int, deadline: float, scale: int) -> None:
    F = k.FetchRequest
    _, pieces = KafkaClientConnection().send_request(F(
        max_wait_ms=0, min_bytes=1, max_bytes=8 << 20, topics=[F.FetchTopic(
            topic=TOPIC, partitions=[F.FetchPartition(partition=0, fetch_offset=0,
                                                      partition_max_bytes=8 << 20)])]), 11)
    await noread(port, deadline, scale, request=b"".join(bytes(p) for p in pieces),
                 name="knoread")


async def kbomb(port: int, deadline: float, scale: int) -> None:
    """Announce a 60 MiB Kafka frame, send a few bytes of it, then wait."""
    await bomb(port, deadline, scale, prefix=struct.pack(">i", 60 << 20) + b"\x00\x03",
               name="kbomb")


async def khuge(port: int, deadline: float, scale: int) -> None:
    header = struct.pack(">hhih", 3, 1, 1, -1)  # Metadata v1
    fetch = struct.pack(">hhih", 1, 4, 2, -1) + struct.pack(">iiiib", -1, 0, 1, 1 << 20, 0)
    frames = [
        kafka_frame(header + struct.pack(">i", 2**31 - 1)),  # 2 billion topics announced
        kafka_frame(header + struct.pack(">i", 60_000) + b"\x00\x01t" * 60_000),  # tiny names
        kafka_frame(fetch + struct.pack(">i", 1) + b"\x00\x01t" + struct.pack(">i", 2**31 - 1)),
        kafka_frame(fetch + struct.pack(">i", 1) + b"\x00\x01t" + struct.pack(">i", 150_000)
                    + struct.pack(">iqi", 0, 0, 1) * 150_000),  # over max_items
    ]
    await huge(port, deadline, scale, frames=frames, name="khuge")


KINDS = {"fuzz": fuzz, "slowloris": slowloris, "noread": noread, "storm": storm, "bomb": bomb,
         "huge": huge}
KAFKA_KINDS = {"kfuzz": kfuzz, "kslowloris": kslowloris, "knoread": knoread, "kbomb": kbomb,
               "khuge": khuge}


async def main(port: int, seconds: float, kinds: list[str], scale: int,
               kafka_port: int | None) -> None:
    deadline = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        for kind in kinds:
            if kind in KAFKA_KINDS:
                nursery.start_soon(KAFKA_KINDS[kind], kafka_port, deadline, scale)
            else:
                nursery.start_soon(KINDS[kind], port, deadline, scale)
    for name, value in sorted(COUNTS.items()):
        print(f"{name}={value}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(","),
             int(sys.argv[4]) if len(sys.argv) > 4 else 1,
             int(sys.argv[5]) if len(sys.argv) > 5 else None)
