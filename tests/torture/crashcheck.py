"""Reading a partition back whole, for the checks after crashes and shutdowns."""

from __future__ import annotations

from protocol.batch import decode_records, iter_batches
from tests.broker.conftest import RawClient, fetch


async def read_records(client: RawClient, topic: str, partition: int) -> list[tuple[int, bytes]]:
    """Every ``(offset, value)`` of a partition, from its start to its end."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        part = (await fetch(client, topic, offset, partition=partition, max_bytes=4 << 20)).partitions[0]
        assert part.error == 0, part
        got = [(r.offset, r.value) for b in iter_batches(part.records) for r in decode_records(b)
               if r.offset >= offset]
        if not got:
            return out
        out += got
        offset = got[-1][0] + 1


async def read_values(client: RawClient, topic: str, partition: int) -> list[bytes]:
    return [value for _, value in await read_records(client, topic, partition)]
