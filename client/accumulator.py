"""Producer batching, sans-IO: records go into one open batch per partition.

Per record, ``append`` does a dict lookup and appends the record's timestamp, key, value and
headers to the batch's four columns. All real work is per batch: ``seal`` closes a batch, and
``ProducerBatch.encode`` turns the columns into Kafka v2 records with ONE call into the
compiled codec, compresses them if asked, and frames them (``protocol.batch.encode_batch``).
The encoded bytes are kept, so a retry resends exactly the same bytes (same sequence numbers)
and the broker can deduplicate.

Memory is bounded by the caller checking ``pending_bytes`` against its budget before
appending; a batch's bytes are released when it completes (delivered or failed).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add

from sluice.client.records import RecordMetadata
from sluice.protocol.batch import NO_PRODUCER_ID, NO_SEQUENCE, encode_batch
from sluice.protocol.compression import NONE

# Approximate per-record framing cost in a v2 record (length, attributes, deltas, lengths).
RECORD_OVERHEAD = 16
NO_HEADERS = ()


def _len_or_0(item) -> int:
    return 0 if item is None else len(item)


def _record_ends(values: list, keys, header_sizes, length) -> list[int]:
    """``ends[j]``: the buffer bytes of the first ``j`` records (``ends[0] == 0``)."""
    sizes = map(length, values)
    if keys is not None:
        sizes = map(add, sizes, map(length, keys))
    if header_sizes is not None:
        sizes = map(add, sizes, header_sizes)
    return [0, *accumulate(map(add, sizes, repeat(RECORD_OVERHEAD)))]


def normalize_headers(headers) -> tuple[list | tuple, int]:
    """A record's headers as a list of ``(str, bytes)`` pairs, and their buffer bytes."""
    if not headers:
        return NO_HEADERS, 0
    pairs = [(k, v) for k, v in headers]
    return pairs, sum(len(k) + len(v) + 4 for k, v in pairs)


class ProducerBatch:
    """Records for one partition, from first append to delivery or failure."""

    __slots__ = (
        "topic", "partition", "timestamps", "keys", "values", "headers", "size",
        "max_ts", "created", "data", "base_sequence", "attempts", "base_offset", "error",
        "done", "waiter", "compression", "topic_id", "last_error", "maybe_written",
    )

    def __init__(
        self, topic: str, partition: int, timestamp: int, created: float, compression: int = NONE
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.timestamps: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list = []
        self.size = 0
        self.max_ts = timestamp  # the base timestamp is the first record's (Kafka's rule)
        self.created = created
        self.data: bytearray | None = None  # encoded once, resent as is
        self.base_sequence = NO_SEQUENCE
        self.attempts = 0
        self.base_offset = -1
        self.error: BaseException | None = None
        self.done = False
        self.waiter = None  # set by the I/O layer to be woken on completion
        self.compression = compression  # codec of protocol.compression
        self.topic_id = ""  # the topic incarnation it was first sent to (set when first sent)
        self.last_error: BaseException | None = None  # of the last failed attempt
        self.maybe_written = False  # an attempt ended with no answer proving it not written

    def __len__(self) -> int:
        return len(self.values)

    def encode(self, producer_id: int = NO_PRODUCER_ID, producer_epoch: int = -1) -> bytearray:
        """The batch's bytes (built on first call, then reused for every retry)."""
        if self.data is None:
            self.data = encode_batch(
                self.timestamps,
                self.keys,
                self.values,
                self.headers,
                max_timestamp=self.max_ts,
                compression_codec=self.compression,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                base_sequence=self.base_sequence,
            )
        return self.data

    def metadata(self, index: int) -> RecordMetadata:
        """The delivery result of record ``index`` (raises the batch's error if it failed)."""
        if self.error is not None:
            raise self.error
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset, self.timestamps[index])

    def metadata_range(self, start: int, count: int) -> list[RecordMetadata]:
        """``metadata(i)`` for ``start <= i < start + count``, built without per-record
        Python code (``tuple.__new__`` over zipped columns)."""
        if self.error is not None:
            raise self.error
        base = self.base_offset
        offsets = range(base + start, base + start + count) if base >= 0 else repeat(-1, count)
        rows = zip(repeat(self.topic), repeat(self.partition), offsets,
                   self.timestamps[start : start + count])
        return list(map(tuple.__new__, repeat(RecordMetadata), rows))


class Accumulator:
    """Open batches per partition, and sealed ones queued per partition in send order."""

    def __init__(
        self,
        batch_bytes: int,
        clock: Callable[[], float],
        on_seal: Callable[[ProducerBatch], None],
        compression: int = NONE,
    ) -> None:
        self.batch_bytes = batch_bytes
        self.compression = compression
        self.clock = clock
        self.on_seal = on_seal
        self.open: dict[tuple[str, int], ProducerBatch] = {}
        self.ready: dict[tuple[str, int], deque[ProducerBatch]] = {}
        self.pending_bytes = 0  # bytes of every batch not yet completed
        self.incomplete = 0  # batches not yet completed

    def append(
        self, topic: str, partition: int, key, value, headers, timestamp: int
    ) -> tuple[ProducerBatch, int]:
        """Add one record; returns its batch and index (the delivery handle's parts)."""
        size = RECORD_OVERHEAD
        if value is not None:
            size += len(value)
        if key is not None:
            size += len(key)
        if headers:
            headers, header_bytes = normalize_headers(headers)
            size += header_bytes
        else:
            headers = NO_HEADERS
        tp = (topic, partition)
        batch = self.open.get(tp)
        if batch is None or (batch.size + size > self.batch_bytes and batch.values):
            if batch is not None:
                self.seal(batch)
            batch = self.open[tp] = ProducerBatch(
                topic, partition, timestamp, self.clock(), self.compression
            )
            self.incomplete += 1
        index = len(batch.values)
        batch.timestamps.append(timestamp)
        batch.keys.append(key)
        batch.values.append(value)
        batch.headers.append(headers)
        batch.size += size
        self.pending_bytes += size
        if timestamp > batch.max_ts:
            batch.max_ts = timestamp
        return batch, index

    def append_values(
        self, topic: str, partition: int, values: list, timestamp: int, keys=None, headers=None
    ) -> list[tuple[ProducerBatch, int, int]]:
        """Add many records to one partition in bulk: the columns are extended by C-level
        iterators, batch by batch. ``keys`` and ``headers`` are lists as long as ``values``,
        or None for none at all. Returns ``(batch, first index, count)`` segments."""
        segments = []
        tp = (topic, partition)
        header_sizes = None
        if headers is not None:
            if any(headers):
                pairs = map(normalize_headers, headers)
                headers, header_sizes = map(list, zip(*pairs, strict=True))
            else:
                headers = None
        # ends[j]: buffer bytes of the first j records, so a batch's share is one bisect.
        try:
            ends = _record_ends(values, keys, header_sizes, len)
        except TypeError:  # Nones among the keys or values (or values without a length)
            ends = _record_ends(values, keys, header_sizes, _len_or_0)
        i, n = 0, len(values)
        while i < n:
            batch = self.open.get(tp)
            if batch is None or (batch.size >= self.batch_bytes and batch.values):
                if batch is not None:
                    self.seal(batch)
                batch = self.open[tp] = ProducerBatch(
                    topic, partition, timestamp, self.clock(), self.compression
                )
                self.incomplete += 1
            room = self.batch_bytes - batch.size
            k = bisect_right(ends, ends[i] + room, i, n + 1) - 1 - i
            if k <= 0:
                if batch.values:  # not even one more fits: seal and start a new batch
                    self.seal(batch)
                    continue
                k = 1  # a record larger than batch_bytes gets a batch of its own
            size = ends[i + k] - ends[i]
            start = len(batch.values)
            batch.timestamps += repeat(timestamp, k)
            batch.keys += repeat(None, k) if keys is None else keys[i : i + k]
            batch.values += values[i : i + k]
            batch.headers += repeat(NO_HEADERS, k) if headers is None else headers[i : i + k]
            if timestamp > batch.max_ts:
                batch.max_ts = timestamp
            batch.size += size
            self.pending_bytes += size
            segments.append((batch, start, k))
            i += k
        return segments

    def seal(self, batch: ProducerBatch) -> None:
        """Close ``batch`` to new records and queue it for sending."""
        tp = (batch.topic, batch.partition)
        if self.open.get(tp) is batch:
            del self.open[tp]
        queue = self.ready.get(tp)
        if queue is None:
            queue = self.ready[tp] = deque()
        queue.append(batch)
        self.on_seal(batch)

    def seal_expired(self, now: float, linger_s: float, busy=None) -> float | None:
        """Seal batches that have lingered long enough; the next deadline, if any.

        ``busy`` maps a partition to its batches in flight: a lingered batch of a partition
        with one in flight stays open (no deadline: the answer wakes the sender). Under load
        records then share one request per round trip instead of each paying for its own;
        with nothing in flight a batch goes out after ``linger_s`` exactly as before.
        """
        deadline = None
        for tp, batch in list(self.open.items()):
            due = batch.created + linger_s
            if due <= now:
                if not (busy and busy.get(tp)):
                    self.seal(batch)
            elif deadline is None or due < deadline:
                deadline = due
        return deadline

    def seal_all(self) -> None:
        for batch in list(self.open.values()):
            self.seal(batch)

    def finish(self, batch: ProducerBatch, base_offset: int = -1, error=None) -> None:
        """Mark ``batch`` delivered (or failed) and release its buffer bytes."""
        if batch.done:
            return
        batch.base_offset = base_offset
        batch.error = error
        batch.done = True
        self.pending_bytes -= batch.size
        self.incomplete -= 1
