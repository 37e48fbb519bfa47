"""``sluice migrate --data-dir D``: rewrite a data directory's batches as Kafka's record batch v2.

Sluice before record batch v2 stored magic-1 batches: the same 61-byte header, then one
msgpack array of four columns ``[timestamp_deltas | nil, keys | nil, values, headers | nil]``
(a nil column meaning: every record at the base timestamp, no keys, no headers). The broker
refuses such a directory at start (``LogManager.open``); this rewrites every segment of every
partition, batch by batch, keeping each batch's offsets, record timestamps, leader epoch and
producer fields (id, epoch, base sequence: idempotent producers keep deduplicating), then
rebuilds the segment's indexes (positions change) and finally writes ``meta/format.json``.

Every old batch is validated (length, CRC, header, columns) before it is rewritten; the first
invalid one stops the migration with its file and position and nothing after it is touched.
Crash-safe and re-runnable: each segment is written to ``<name>.log.tmp``, fsync'd and renamed
over the original; batches already in v2 are copied as they are, and the format file is
written last, so an interrupted migration is finished by running it again. The broker must
not be running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import (
    LOG_SUFFIX,
    DirectoryLock,
    fdatasync_path,
    fsync_dir,
    segment_path,
)
from sluice.broker.storage.log import _list_segments
from sluice.broker.storage.manager import FORMAT_FILE, META_DIR, TOPICS_FILE, write_format
from sluice.broker.storage.segment import Segment
from sluice.protocol.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    InvalidBatchError,
    check_header,
    compute_crc,
    encode_batch,
    parse_header,
    validate_batch,
)
from sluice.protocol.errors import StorageError

OLD_MAGIC = 1


class MigrationError(StorageError):
    """The data directory cannot be migrated as it is (the message says where and why)."""


@dataclass
class PartitionReport:
    name: str
    segments: int = 0
    rewritten: int = 0  # magic-1 batches rewritten as v2
    kept: int = 0  # batches that were v2 already


def migrate(data_dir: Path, progress: Callable[[str], None] = print) -> list[PartitionReport]:
    """Rewrite every magic-1 batch under ``data_dir`` as v2; see the module docstring."""
    meta = data_dir / META_DIR
    if not meta.is_dir():
        raise MigrationError(f"{data_dir} is not a Sluice data directory (no {META_DIR}/)")
    lock = DirectoryLock.acquire(data_dir)  # never under a live broker
    try:
        return _migrate_locked(data_dir, meta, progress)
    finally:
        lock.release()


def _migrate_locked(data_dir: Path, meta: Path, progress: Callable[[str], None]) -> list[PartitionReport]:
    if (meta / FORMAT_FILE).exists():
        progress(f"{data_dir} is already in the record batch v{MAGIC} format: nothing to do")
        return []
    try:
        topics = json.loads((meta / TOPICS_FILE).read_bytes())
    except FileNotFoundError:
        topics = {}
    reports = []
    for name, entry in sorted(topics.items()):
        config = TopicConfig.from_mapping({**entry["configs"], "partitions": entry["partitions"]})
        for partition in range(config.partitions):
            directory = data_dir / f"{name}-{partition}"
            if directory.is_dir():
                report = _migrate_partition(directory, config.index_interval_bytes)
                progress(
                    f"{report.name}: {report.segments} segment(s), {report.rewritten} batch(es) "
                    f"rewritten, {report.kept} already v{MAGIC}"
                )
                reports.append(report)
    write_format(data_dir)
    progress(f"{data_dir} now holds record batch v{MAGIC} (Kafka's format) only")
    return reports


def run(args) -> int:
    """``sluice migrate --data-dir D`` (a ``MigrationError`` is the command's one-line error)."""
    migrate(Path(args.data_dir))
    return 0


def _migrate_partition(directory: Path, index_interval: int) -> PartitionReport:
    report = PartitionReport(directory.name)
    bases = sorted(_list_segments(directory))
    for i, base in enumerate(bases):
        end_offset = _migrate_segment(directory, base, report)
        segment = Segment(
            directory,
            base,
            size=segment_path(directory, base, LOG_SUFFIX).stat().st_size,
            end_offset=end_offset,
            index_interval=index_interval,
            sealed=i + 1 < len(bases),
        )
        segment.rebuild_indexes()
        segment.release_file()
        for path in (segment.offset_index.path, segment.time_index.path):
            fdatasync_path(path)
        report.segments += 1
    fsync_dir(directory)
    return report


def _migrate_segment(directory: Path, base: int, report: PartitionReport) -> int:
    """Rewrite one ``.log`` through a temporary file; returns the offset after its last batch."""
    path = segment_path(directory, base, LOG_SUFFIX)
    tmp = path.with_name(path.name + ".tmp")
    position, next_offset = 0, base
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while prefix := src.read(LOG_OVERHEAD):
            size = int.from_bytes(prefix[8:12], "big", signed=True) + LOG_OVERHEAD
            rest = src.read(max(size - LOG_OVERHEAD, 0))
            try:
                if len(prefix) < LOG_OVERHEAD or size < HEADER_SIZE:
                    raise InvalidBatchError("the batch's length field is cut short or impossible")
                batch = prefix + rest
                header = parse_header(batch)
                if header.base_offset != next_offset:
                    raise InvalidBatchError(
                        f"offset {header.base_offset} where {next_offset} was expected"
                    )
                if header.magic == MAGIC:
                    validate_batch(batch)
                    report.kept += 1
                else:
                    batch = _rewrite(batch, header)
                    report.rewritten += 1
            except InvalidBatchError as exc:
                raise MigrationError(
                    f"{path}: invalid batch at byte {position}: {exc.message}. Nothing from "
                    "there on was migrated. A torn tail left by a crash is cut by the previous "
                    "Sluice version's recovery: start it once, stop it, then migrate again"
                ) from None
            dst.write(batch)
            position += size
            next_offset = header.next_offset
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return next_offset


def _rewrite(batch: bytes, header: BatchHeader) -> bytearray:
    """A validated magic-1 batch as v2 with the same offsets, timestamps and producer fields."""
    if header.magic != OLD_MAGIC:
        raise InvalidBatchError(f"unknown record batch magic {header.magic}")
    check_header(header._replace(magic=MAGIC))  # the other header rules did not change
    if header.attributes:
        raise InvalidBatchError(f"attributes {header.attributes} in a magic-1 batch")
    if compute_crc(batch) != header.crc:
        raise InvalidBatchError("CRC mismatch")
    count = header.record_count
    try:
        deltas, keys, values, headers = msgpack.unpackb(batch[HEADER_SIZE:], raw=False)
        columns = [deltas, keys, values, headers]
        if any(c is not None and len(c) != count for c in columns) or values is None:
            raise ValueError("a column's length differs from the record count")
        timestamps = (
            [header.base_timestamp] * count
            if deltas is None
            else [header.base_timestamp + delta for delta in deltas]
        )
        return encode_batch(
            timestamps,
            [None] * count if keys is None else keys,
            values,
            [[]] * count if headers is None else headers,
            max_timestamp=header.max_timestamp,
            base_offset=header.base_offset,
            leader_epoch=header.leader_epoch,
            producer_id=header.producer_id,
            producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidBatchError(f"magic-1 records do not decode: {exc}") from None
