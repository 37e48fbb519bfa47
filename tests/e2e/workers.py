"""Producer processes for the end-to-end tests: ``python -m tests.e2e.workers MODE ...``.

``expected_record(i)`` is the record number ``i`` every worker sends, so the consuming test
can check what it reads byte for byte without being told.
"""

from __future__ import annotations

import sys

import trio
from sluice.client.producer import Producer

BASE_TS = 1_700_000_000_000


def expected_record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    """``(key, value, headers, timestamp)`` of record ``i``: varied sizes and binary bytes."""
    key = b"key-%d" % (i % 97)
    value = bytes([i % 256]) * (i % 50) + b"value-%d" % i
    headers = [("seq", str(i).encode()), ("bin", bytes([0, 255, i % 256]))] if i % 3 else []
    return key, value, headers, BASE_TS + i


async def produce(bootstrap: str, topic: str, count: int, acks: str, partition: int | None):
    """Send ``count`` records; print ``progress N`` whenever N are acknowledged."""
    async with Producer(bootstrap, acks=acks, linger_ms=2, batch_bytes=16 * 1024) as producer:
        handles = []
        for i in range(count):
            key, value, headers, ts = expected_record(i)
            handles.append(await producer.send(
                topic, value, key=key, headers=headers, timestamp=ts, partition=partition
            ))
            if (i + 1) % 500 == 0:
                await handles[-1]
                print(f"progress {i + 1}", flush=True)
        for handle in handles:
            await handle
    print("done", flush=True)


def main(argv: list[str]) -> None:
    bootstrap, topic, count, acks = argv[0], argv[1], int(argv[2]), argv[3]
    partition = int(argv[4]) if len(argv) > 4 else None
    trio.run(produce, bootstrap, topic, count, acks if acks == "all" else int(acks), partition)


if __name__ == "__main__":
    main(sys.argv[1:])
