"""The assignment Kafka consumers put in their SyncGroup bytes (``ConsumerProtocolAssignment``,
protocol type ``consumer``): ``version i16 | assigned_partitions [topic, [partition]] |
user_data nullable bytes``, whatever the assignor.

A broker only passes these bytes through; reading them lets it show which member owns which
partition (``sluice groups describe``), and writing them lets it describe Sluice's own groups
to Kafka's tools. Versions 0-3 share these fields; later fields (none yet) would be bytes
left over, which ``read_assignment`` ignores.
"""

from __future__ import annotations

from sluice.protocol.kafka.compiler import compile_message
from sluice.protocol.kafka.errors import MalformedMessageError
from sluice.protocol.kafka.primitives import INT16
from sluice.protocol.kafka.schema import BYTES, INT32, STRING, Array, F, Struct

PROTOCOL_TYPE = "consumer"
# An assignment names at most this many partitions in all (checked before building any).
MAX_ITEMS = 100_000

_ASSIGNMENT = compile_message(Struct("ConsumerProtocolAssignment", [
    F("assigned_partitions", Array(Struct("TopicPartition", [
        F("topic", STRING),
        F("partitions", Array(INT32)),
    ]))),
    F("user_data", BYTES, nullable="0+"),
]), range(0, 1))


def read_assignment(data: bytes | memoryview) -> frozenset[tuple[str, int]] | None:
    """The partitions a consumer assignment names, or None if ``data`` is not one."""
    view = memoryview(data)
    if len(view) < INT16.size or INT16.unpack_from(view, 0)[0] < 0:
        return None
    try:
        assignment, _ = _ASSIGNMENT.decoders[0](view, INT16.size, [MAX_ITEMS])
    except MalformedMessageError:
        return None
    return frozenset((tp.topic, p) for tp in assignment.assigned_partitions for p in tp.partitions)


def write_assignment(partitions: frozenset[tuple[str, int]] | set[tuple[str, int]]) -> bytes:
    """A version-0 consumer assignment of ``partitions`` (no user data)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    cls = _ASSIGNMENT.cls
    assignment = cls(assigned_partitions=[cls.TopicPartition(topic=t, partitions=ps)
                                          for t, ps in by_topic.items()], user_data=None)
    out = bytearray(INT16.pack(0))
    _ASSIGNMENT.encoders[0](assignment, out, [])
    return bytes(out)
