"""Limits and constants the wire protocols and the broker's layers share (so neither imports
the other)."""

# The documented maximum of partitions per topic: the broker refuses topics with more, and
# a request may name every partition of a topic at this maximum.
MAX_PARTITIONS = 10_000

# List-offsets queries for a position rather than a time (Kafka's values, so both protocols
# use them): the partition's first offset, and its end (the offset the next record will get).
EARLIEST = -2
LATEST = -1
