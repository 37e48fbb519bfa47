"""The broker's open-file (descriptor) budget, against ``RLIMIT_NOFILE``.

Where descriptors go:

* one per partition: its active segment stays open (appends and tailing reads never reopen it);
* one per connection;
* ``sealed`` handles of older segments kept open between reads (``storage.files.HandleQuota``;
  beyond them a read of an older segment opens its file and closes it when done);
* ``RESERVED`` for everything else: stdio, the listening sockets, the event loop's own, the
  data directory's lock, short-lived opens (index and metadata writes, flushes in worker
  threads, retention), and refused connections while they are told why.

Invariant: ``partitions + connections + sealed + RESERVED <= limit``, where partitions may take
only what leaves ``CONNECTION_HEADROOM`` for new connections. A topic whose partitions do not fit
is refused whole, before anything is created; a connection that does not fit is told
``TooManyConnectionsError`` and closed; a data directory whose partitions do not fit refuses to
start. Each error names the limit and what to raise. The process entry point raises the soft
limit to the hard limit first (``raise_soft_limit``), as many servers do.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from sluice.broker.storage.manager import RAISE_HINT
from sluice.protocol.errors import StorageError, TooManyConnectionsError

RESERVED = 64
CONNECTION_HEADROOM = 16  # topics may not take the last descriptors new connections need
UNLIMITED = 1 << 20  # what RLIM_INFINITY counts as (the kernel's own cap, fs.nr_open, is 1M)


@dataclass(frozen=True, slots=True)
class LimitRaise:
    """What ``raise_soft_limit`` did: the soft limit before and after, and the hard limit."""

    before: int
    after: int
    hard: int


def _count(value: int) -> int:
    return UNLIMITED if value == resource.RLIM_INFINITY else value


def raise_soft_limit() -> LimitRaise:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. a hard limit above what the kernel allows
            return LimitRaise(_count(soft), _count(soft), _count(hard))
    return LimitRaise(_count(soft), _count(hard), _count(hard))


def sealed_handles_for(limit: int) -> int:
    """Handles of older segments kept open: a sixteenth of the limit, 16 to 1024."""
    return max(16, min(1024, limit // 16))


class DescriptorBudget:
    """Counts what holds descriptors and admits partitions and connections while they fit."""

    def __init__(self, limit: int, max_connections: int) -> None:
        self.limit = limit
        self.max_connections = max_connections
        self.sealed = sealed_handles_for(limit)
        self.partitions = 0  # partitions with a file open (their active segment)
        self.connections = 0

    @classmethod
    def from_rlimit(cls, max_connections: int) -> DescriptorBudget:
        return cls(_count(resource.getrlimit(resource.RLIMIT_NOFILE)[0]), max_connections)

    @property
    def fixed(self) -> int:
        """Descriptors set aside whatever is held: older segments' handles and the reserve."""
        return self.sealed + RESERVED

    @property
    def room(self) -> int:
        """Descriptors not yet spoken for."""
        return self.limit - self.fixed - self.partitions - self.connections

    def summary(self) -> str:
        return (
            f"{self.partitions} partition(s) keep a file open each, up to {self.sealed} more "
            f"for reads of older segments, {RESERVED} reserved: RLIMIT_NOFILE {self.limit} "
            f"leaves room for {max(self.room, 0)} connection(s) or partition(s) "
            f"(max_connections {self.max_connections})"
        )

    # -- partitions ----------------------------------------------------------------------------

    def admit_partitions(self, count: int, topic: str | None = None) -> None:
        """Count ``count`` more partitions in, or raise ``StorageError`` (nothing counted):
        for ``topic`` being created, or (None) those a data directory holds at start."""
        if count <= self.room - CONNECTION_HEADROOM:
            self.partitions += count
            return
        if topic is None:
            needed = self.partitions + count + self.fixed + CONNECTION_HEADROOM
            raise StorageError(
                f"the data directory holds {count} partition(s), each keeping a file open, and "
                f"{self.fixed + CONNECTION_HEADROOM} more descriptors are needed besides; "
                f"RLIMIT_NOFILE is {self.limit}: {RAISE_HINT} to at least {needed}"
            )
        raise StorageError(
            f"cannot create topic {topic!r} with {count} partition(s): each keeps a file open, "
            f"and {self.partitions} partition(s) and {self.connections} connection(s) already "
            f"hold descriptors; RLIMIT_NOFILE is {self.limit} ({self.fixed} reserved, "
            f"{CONNECTION_HEADROOM} kept for new connections), so {max(self.room - CONNECTION_HEADROOM, 0)} "
            f"more fit. Nothing was created: {RAISE_HINT} and restart the broker, or delete topics"
        )

    def release_partitions(self, count: int) -> None:
        self.partitions -= count

    # -- connections ---------------------------------------------------------------------------

    def admit_connection(self) -> TooManyConnectionsError | None:
        """Count a connection in, or say why not (it is not counted then)."""
        if self.connections >= self.max_connections:
            return TooManyConnectionsError(
                f"the broker is at max_connections ({self.max_connections}); try again later"
            )
        if self.room < 1:
            return TooManyConnectionsError(
                f"the broker has no open file left for another connection: RLIMIT_NOFILE "
                f"{self.limit} is taken by {self.partitions} partition(s), {self.connections} "
                f"connection(s) and {self.fixed} reserved; its operator must {RAISE_HINT}"
            )
        self.connections += 1
        return None

    def release_connection(self) -> None:
        self.connections -= 1
