"""The key -> partition mapping is pinned: it must never change across versions or hosts."""

import pytest
from sluice.client.partitioner import StickyPartitioner, partition_for_key


@pytest.mark.parametrize(
    ("key", "partitions", "expected"),
    [
        (b"", 3, 0),
        (b"a", 8, 0),  # crc32c(b"a") == 3251651376
        (b"user-1", 3, 1),  # crc32c == 348964012
        (b"user-1", 16, 12),
        (b"order-42", 8, 6),  # crc32c == 4064620166
        (b"123456789", 8, 3),  # the CRC-32C check value 0xE3069283
    ],
)
def test_key_partition_is_pinned(key, partitions, expected):
    assert partition_for_key(key, partitions) == expected


def test_sticky_partition_moves_when_its_batch_is_sealed():
    sticky = StickyPartitioner()
    first = sticky.partition("t", 4)
    assert sticky.partition("t", 4) == first
    sticky.batch_sealed("t", (first + 1) % 4, 4)  # another partition's batch: no move
    assert sticky.partition("t", 4) == first
    sticky.batch_sealed("t", first, 4)
    assert sticky.partition("t", 4) == (first + 1) % 4
