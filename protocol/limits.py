"""Limits the wire protocol and the broker's storage share (so neither imports the other)."""

# The documented maximum of partitions per topic: the broker refuses topics with more, and
# a request may name every partition of a topic at this maximum.
MAX_PARTITIONS = 10_000
