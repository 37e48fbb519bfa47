"""Hostile clients for scenario 4, run as a separate process so their CPU is not the measuring
client's: ``python -m tests.torture.hostile PORT SECONDS KIND[,KIND...] [SCALE]``.

Every loop is bounded by a count and by the deadline. Prints one ``name=value`` line per figure
on exit (frames sent, connections opened...).

KINDS: fuzz (random and mutated frames over many connections), slowloris (a byte a second),
noread (fetch big responses, never read them), storm (open and drop connections), bomb
(prefixes announcing max-size frames, then silence), huge (requests with huge counts and
nesting).
"""

from __future__ import annotations

import random
import struct
import sys
import time

import msgpack
import trio
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection

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


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    choice = rng.randrange(6)
    if choice == 0 and len(data) > 8:  # flip bytes after the prefix (framing stays intact)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:  # random header bytes in an intact frame
        return frame(rng.randbytes(rng.randint(0, 200)), rng.randbytes(rng.randint(0, 50)))
    elif choice == 2:  # a valid msgpack header of the wrong shape
        junk = rng.choice([[1, 2], {"api": rng.randint(-5, 40), "v": 0, "cid": rng.randint(-9, 2**40)},
                           {"api": 6, "v": 0, "cid": 1, "partitions": "x" * 50},
                           {"api": 5, "v": 0, "cid": 1, "acks": -1, "timeout_ms": 5,
                            "partitions": [{"topic": TOPIC, "partition": 0, "length": 10**6}]}])
        return frame(msgpack.packb(junk))
    elif choice == 3:  # header_length larger than the frame
        return struct.pack(">II", 20, 900) + rng.randbytes(16)
    elif choice == 4:  # pure noise (breaks framing: the broker closes this connection)
        return rng.randbytes(rng.randint(1, 300))
    else:  # truncated valid frame
        return bytes(data[: rng.randrange(1, len(data))])
    return bytes(data)


async def fuzz(port: int, deadline: float, scale: int) -> None:
    rng = random.Random(7)
    frames = valid_frames()

    async def one(conn_index: int) -> None:
        local = random.Random(rng.random())
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            bump("fuzz_connect_failed")
            return
        bump("fuzz_connections")
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
                        data = mutate(local, local.choice(frames))
                        await stream.send_all(data)
                        bump("fuzz_frames")
                        await trio.sleep(0)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    bump("fuzz_closed_by_broker")
                with trio.move_on_after(0.5):
                    await trio.sleep(0.2)
                nursery.cancel_scope.cancel()

    # Waves of 50 connections until the quota is sent: how many frames a connection gets
    # through before the broker closes it on broken framing depends on timing.
    wave = 0
    while COUNTS.get("fuzz_frames", 0) < FUZZ_FRAMES_PER_SCALE * scale:
        if time.monotonic() > deadline:
            break
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, wave * 50 + i)
        wave += 1


async def slowloris(port: int, deadline: float, scale: int) -> None:
    frames = valid_frames()

    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        bump("slowloris_connections")
        async with stream:
            data = frames[0]
            try:
                for i in range(10**6):
                    if time.monotonic() > deadline:
                        return
                    await stream.send_all(data[i % len(data): i % len(data) + 1])
                    bump("slowloris_bytes")
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                bump("slowloris_closed_by_broker")

    async with trio.open_nursery() as nursery:
        for _ in range(20 * scale):
            nursery.start_soon(one)


async def noread(port: int, deadline: float, scale: int) -> None:
    conn = ClientConnection()
    _, pieces = conn.send_request(m.FetchRequest(
        max_wait_ms=0, min_bytes=1, max_bytes=8 << 20,
        partitions=[m.FetchPartition(topic=TOPIC, partition=0, offset=0, max_bytes=8 << 20)]))
    request = b"".join(bytes(p) for p in pieces)

    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        bump("noread_connections")
        async with stream:
            try:
                for _ in range(200):  # never read a byte of the answers
                    if time.monotonic() > deadline:
                        return
                    with trio.move_on_after(max(0.0, deadline - time.monotonic())):
                        await stream.send_all(request)
                    bump("noread_requests")
                await trio.sleep(max(0.0, deadline - time.monotonic()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                bump("noread_closed_by_broker")

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


async def bomb(port: int, deadline: float, scale: int) -> None:
    """Announce a 60 MiB frame, send a few bytes of it, then wait."""
    size = 60 << 20
    streams = []
    try:
        for _ in range(50 * scale):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(struct.pack(">II", size, 16) + b"\x80" * 16)
            except (OSError, trio.BrokenResourceError):
                bump("bomb_refused")
                continue
            streams.append(stream)
            bump("bomb_connections")
        await trio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def huge(port: int, deadline: float, scale: int) -> None:
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
    for _ in range(scale * 5):
        for header in headers:
            if time.monotonic() > deadline:
                return
            try:
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(frame(header))
                    with trio.move_on_after(10):
                        while await stream.receive_some(1 << 20):
                            bump("huge_response_bytes")
                            break
                bump("huge_requests")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                bump("huge_closed")


KINDS = {"fuzz": fuzz, "slowloris": slowloris, "noread": noread, "storm": storm, "bomb": bomb,
         "huge": huge}


async def main(port: int, seconds: float, kinds: list[str], scale: int) -> None:
    deadline = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        for kind in kinds:
            nursery.start_soon(KINDS[kind], port, deadline, scale)
    for name, value in sorted(COUNTS.items()):
        print(f"{name}={value}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(","),
             int(sys.argv[4]) if len(sys.argv) > 4 else 1)
