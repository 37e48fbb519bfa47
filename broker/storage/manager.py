"""``LogManager``: the data directory, its topics, and every partition's log.

Crash safety: ``meta/topics.json`` is the truth about which topics exist; it is replaced
atomically *before* partition directories are created or removed, and ``open`` repairs the
difference (creates missing partition directories, removes ones of unknown topics). The
``.clean-shutdown`` marker is written last at ``close`` and removed at ``open``; without it,
every partition re-validates from its checkpointed recovery point.

The batch format is recorded in ``meta/format.json`` (``{"record_batch_magic": 2}``), written
when a directory is first opened. A directory with topics but no format file was written by
Sluice before record batch v2 (magic-1 batches): ``open`` refuses it with
``DataFormatError``, which names the migration command (``sluice migrate``), rather than
serve batches no client of this version could read.

Topic ids: every topic gets a random id at creation (``new_topic_id``: a UUID4 as 32 hex
digits, as Kafka's KIP-516), kept in ``topics.json``. A topic deleted and created again under
the same name is a new *incarnation* with a new id, and every piece of per-topic state kept
under the name records the id it belongs to, so nothing of an old incarnation is ever applied
to a new one: the recovery points here, and (in the broker's domain layer) the
producer-state snapshots and committed offsets. On disk, no directory of an old incarnation
survives into a new one: ``delete_topic`` removes the directories and fsyncs the data
directory after ``topics.json`` has dropped the topic, and ``create_topic`` removes any
leftover of an earlier incarnation *before* ``topics.json`` names the new one.

Corruption below a partition's checkpointed recovery point (data that was flushed, so maybe
acknowledged) is never truncated silently: that partition is left *offline* (``offline``
maps it to the error, naming the file and position), every other partition serves, the
clean-shutdown marker is withheld so the next start checks it again, and its recovery point
is kept. The operator can cut it deliberately by naming it in ``repair``
(``sluice broker --repair-truncate TOPIC-P``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import (
    CorruptLogError,
    DirectoryLock,
    HandleQuota,
    atomic_write,
    fsync_dir,
)
from sluice.broker.storage.interfaces import PartitionLog
from sluice.broker.storage.log import DEFAULT_MAX_OPEN_SEGMENTS, FileLog
from sluice.broker.storage.memory import MemoryLog
from sluice.protocol.batch import MAGIC
from sluice.protocol.clock import wall_clock_ms
from sluice.protocol.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

META_DIR = "meta"
TOPICS_FILE = "topics.json"
RECOVERY_POINTS_FILE = "recovery-points.json"
FORMAT_FILE = "format.json"
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
MAX_TOPIC_NAME = 249
INTERNAL_PREFIX = "__"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")
_PARTITION_DIR = re.compile(r"(.+)-([0-9]+)")

storage_log = logging.getLogger("sluice.storage")
RAISE_HINT = "raise the open-files limit (ulimit -n, or LimitNOFILE= in a systemd unit)"


class PartitionBudget(Protocol):
    """What admits partitions that keep a file open (the broker's ``DescriptorBudget``)."""

    def admit_partitions(self, count: int, topic: str | None = None) -> None:
        """Count them in, or raise ``StorageError`` naming the limit (nothing counted)."""

    def release_partitions(self, count: int) -> None: ...


class DataFormatError(StorageError):
    """The data directory holds batches in a format this version does not read."""


def write_format(data_dir: Path) -> None:
    """Record (durably) that ``data_dir`` holds record batch v2 only."""
    atomic_write(data_dir / META_DIR / FORMAT_FILE, json.dumps({"record_batch_magic": MAGIC}).encode())


def check_format(data_dir: Path) -> None:
    """Refuse a data directory of another batch format; mark a new one as this format's."""
    try:
        found = json.loads((data_dir / META_DIR / FORMAT_FILE).read_bytes())
    except FileNotFoundError:
        if not (data_dir / META_DIR / TOPICS_FILE).exists():
            write_format(data_dir)  # a new directory: nothing to migrate
            return
        raise DataFormatError(
            f"{data_dir} was written by Sluice before record batch v2 (its batches are magic 1, "
            "msgpack records), which this version does not read. Stop any broker using it and "
            f"convert it once, in place: sluice migrate --data-dir {data_dir}"
        ) from None
    except ValueError as exc:
        raise DataFormatError(f"{data_dir}/{META_DIR}/{FORMAT_FILE} is unreadable: {exc}") from None
    if not isinstance(found, dict) or found.get("record_batch_magic") != MAGIC:
        raise DataFormatError(
            f"{data_dir} holds record batch format {found!r}; this version reads "
            f"record_batch_magic {MAGIC} only"
        )


def new_topic_id() -> str:
    """A fresh topic id: a random UUID as 32 lowercase hex digits."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    config: TopicConfig
    topic_id: str


def validate_topic_name(name: object, *, internal: bool = False) -> str:
    """Return ``name`` if it may name a topic (it becomes a directory name), else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidTopicError(f"topic name must be a non-empty string, got {name!r}")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidTopicError(f"topic name is {len(name)} characters; the limit is {MAX_TOPIC_NAME}")
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidTopicError(
            f"topic name {name!r} is invalid: use 1-{MAX_TOPIC_NAME} of [A-Za-z0-9._-], not '.' or '..'"
        )
    if name.startswith(INTERNAL_PREFIX) and not internal:
        raise InvalidTopicError(f"topic names starting with {INTERNAL_PREFIX!r} are reserved: {name!r}")
    return name


class LogManager:
    """Topics and their partition logs under ``data_dir`` (or all in memory with ``memory``).

    Not thread-safe: call it from one thread (the broker's event loop); only the logs' own
    ``flush`` may run elsewhere.
    """

    def __init__(
        self,
        data_dir: Path | None,
        defaults: TopicConfig = TopicConfig(),  # noqa: B008 - frozen, so sharing is safe
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        memory: bool = False,
        max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS,
        repair: Collection[str] = (),
        descriptors: PartitionBudget | None = None,
        quota: HandleQuota | None = None,
    ) -> None:
        """``descriptors``: admits the partitions this manager opens files for (at open and
        topic creation), or refuses them whole; ``quota``: shared by its logs (see
        ``HandleQuota``)."""
        if data_dir is None and not memory:
            raise ValueError("a data directory is required unless memory=True")
        self.data_dir = data_dir
        self.defaults = defaults
        self.memory = memory
        self._now_ms = now_ms
        self._max_open_segments = max_open_segments
        self._topics: dict[str, TopicInfo] = {}
        self._overrides: dict[str, dict[str, int]] = {}
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        # Partitions refused at open: (topic, p) -> (flushed floor kept in checkpoints, error).
        self.offline: dict[tuple[str, int], tuple[int, str]] = {}
        self.repair = set(repair)  # "topic-p" names whose recovery may cut below the floor
        self._checkpoint_lock = threading.Lock()  # checkpoints run in threads and on the loop
        self.was_clean = True  # how the last open found the data directory
        self._descriptors = descriptors
        self._quota = quota or HandleQuota()
        self._dir_lock: DirectoryLock | None = None

    # -- paths -------------------------------------------------------------------------------

    def _path(self, *parts: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir.joinpath(*parts)

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self._path(f"{topic}-{partition}")

    # -- open / close ------------------------------------------------------------------------

    def open(self) -> LogManager:
        """Lock the data directory, load the topics and open every partition, recovering after
        an unclean stop. Raises ``DataDirectoryInUseError`` if another broker holds it."""
        if self.memory:
            return self
        assert self.data_dir is not None
        self._dir_lock = DirectoryLock.acquire(self.data_dir)  # before anything is read
        try:
            return self._open_locked()
        except BaseException:
            self._dir_lock.release()
            raise

    def _open_locked(self) -> LogManager:
        self._path(META_DIR).mkdir(parents=True, exist_ok=True)
        check_format(self._path())
        marker = self._path(CLEAN_SHUTDOWN_FILE)
        self.was_clean = marker.exists()
        minted = False
        topics = self._read_json(TOPICS_FILE)
        self._admit(sum(entry["partitions"] for entry in topics.values()))
        for name, entry in topics.items():
            self._overrides[name] = dict(entry["configs"])
            config = TopicConfig.from_mapping({**entry["configs"], "partitions": entry["partitions"]}, self.defaults)
            topic_id = entry.get("topic_id")
            if topic_id is None:  # written before topics had ids: give it one, once
                topic_id, minted = new_topic_id(), True
            self._topics[name] = TopicInfo(name, config, topic_id)
        if minted:
            self._persist_topics()
        recovery_points = self._read_recovery_points()
        for name, info in self._topics.items():
            config = info.config
            for partition in range(config.partitions):
                key = f"{name}-{partition}"
                floor = recovery_points.get((name, partition), 0)
                repairing = key in self.repair
                try:
                    self._logs[name, partition] = FileLog.open(
                        self._partition_dir(name, partition),
                        config,
                        recovery_point=None if self.was_clean else floor,
                        now_ms=self._now_ms,
                        max_open_segments=self._max_open_segments,
                        flushed_floor=None if repairing else floor,
                        quota=self._quota,
                    )
                except CorruptLogError as exc:
                    self._release(1)  # an offline partition keeps no file open
                    message = f"partition {key} is offline: {exc.message}; to truncate it there " \
                        f"deliberately, restart once with --repair-truncate {key}"
                    storage_log.error("%s", message)
                    self.offline[name, partition] = (floor, message)
                    continue
                if repairing:
                    end = self._logs[name, partition].log_end_offset
                    lost = f"; offsets {end}..{floor - 1} (flushed) were discarded" if end < floor else ""
                    storage_log.warning("repaired %s: the log now ends at offset %d%s", key, end, lost)
        for key in self.repair - {f"{t}-{p}" for t, p in [*self._logs, *self.offline]}:
            storage_log.warning("--repair-truncate %s: no such partition", key)
        self._remove_stray_directories()
        if self.was_clean:
            marker.unlink()
            fsync_dir(self._path())
        return self

    def _read_recovery_points(self) -> dict[tuple[str, int], int]:
        """The checkpointed points of the topics' *current* incarnations.

        The file maps each topic to ``{"topic_id": id, "offsets": {"<partition>": offset}}``;
        a point recorded for another id is ignored (its partitions recover from offset 0).
        Files written before topic ids map ``"<topic>-<p>"`` to an offset; those points are
        taken as the current incarnation's (that broker rewrote the file before every topic
        creation, so it held no point of an earlier incarnation).
        """
        points: dict[tuple[str, int], int] = {}
        for key, value in self._read_json(RECOVERY_POINTS_FILE).items():
            if isinstance(value, int):
                match = _PARTITION_DIR.fullmatch(key)
                if match and match[1] in self._topics:
                    points[match[1], int(match[2])] = value
                continue
            info = self._topics.get(key)
            if info is not None and value.get("topic_id") == info.topic_id:
                points.update(((key, int(p)), offset) for p, offset in value["offsets"].items())
        return points

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads(self._path(META_DIR, name).read_bytes())
        except FileNotFoundError:
            return {}

    def _write_json(self, name: str, data: dict) -> None:
        atomic_write(self._path(META_DIR, name), json.dumps(data, sort_keys=True, indent=1).encode())

    def _remove_stray_directories(self) -> None:
        """Partition directories of topics no longer in topics.json (a delete cut short)."""
        known = {f"{topic}-{partition}" for topic, partition in [*self._logs, *self.offline]}
        removed = False
        with os.scandir(self._path()) as entries:
            for entry in entries:
                if entry.is_dir() and entry.name not in known and _PARTITION_DIR.fullmatch(entry.name):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed = True
        if removed:
            fsync_dir(self._path())

    def close(self) -> None:
        """Close every log, checkpoint, then (last, durably) write the clean-shutdown marker;
        release the data directory's lock after that last write."""
        try:
            for log in self._logs.values():
                log.close()
            if self.memory:
                return
            self.checkpoint_recovery_points()
            if self.offline:  # the next start must look at them again
                storage_log.warning(
                    "not marking a clean shutdown: %d partition(s) offline", len(self.offline)
                )
                return
            atomic_write(self._path(CLEAN_SHUTDOWN_FILE), b"")
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()

    def checkpoint_recovery_points(self) -> None:
        """Persist each log's ``flushed_offset``: recovery re-validates from there."""
        if self.memory:
            return
        with self._checkpoint_lock:  # a snapshot older than a topic delete/create never lands last
            # The ids are read before the logs: a log that appears in between (a topic
            # recreated meanwhile) is filed under the older id, which the next open ignores --
            # never an old log's point under a new id.
            topics = dict(self._topics)
            found = [(key, floor) for key, (floor, _) in list(self.offline.items())]
            found += [(key, log.flushed_offset) for key, log in list(self._logs.items())]
            points: dict[str, dict] = {}
            for (topic, partition), offset in sorted(found):
                info = topics.get(topic)
                if info is not None:
                    entry = points.setdefault(topic, {"topic_id": info.topic_id, "offsets": {}})
                    entry["offsets"][str(partition)] = offset
            self._write_json(RECOVERY_POINTS_FILE, points)

    def _persist_topics(self) -> None:
        self._write_json(
            TOPICS_FILE,
            {
                name: {
                    "partitions": info.config.partitions,
                    "configs": self._overrides[name],
                    "topic_id": info.topic_id,
                }
                for name, info in self._topics.items()
            },
        )

    # -- topics ------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        configs: Mapping[str, int] | None = None,
        *,
        internal: bool = False,
    ) -> TopicInfo:
        validate_topic_name(name, internal=internal)
        if name in self._topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        overrides = dict(configs or {})
        if partitions is not None:
            overrides["partitions"] = partitions
        config = TopicConfig.from_mapping(overrides, self.defaults)
        overrides.pop("partitions", None)
        if not self.memory:
            self._remove_leftovers(name, range(config.partitions))
        self._admit(config.partitions, name)
        info = TopicInfo(name, config, new_topic_id())
        self._topics[name] = info
        self._overrides[name] = overrides
        try:
            if not self.memory:
                # Forget any recovery point of an earlier topic of this name before it exists
                # again.
                self.checkpoint_recovery_points()
                self._persist_topics()
            for partition in range(config.partitions):
                self._logs[name, partition] = self._new_log(name, partition, config)
        except OSError as exc:
            self._undo_create(name, config.partitions)
            raise StorageError(
                f"cannot create topic {name!r}: {exc.strerror or exc}; nothing was created"
                + (f": {RAISE_HINT}" if exc.errno in (errno.EMFILE, errno.ENFILE) else "")
            ) from exc
        return info

    def _remove_leftovers(self, topic: str, partitions: range) -> None:
        """Remove (durably) directories of these partitions an earlier incarnation of
        ``topic`` left behind (its delete could not remove them), so the new ones start empty."""
        leftovers = [d for p in partitions if (d := self._partition_dir(topic, p)).exists()]
        for directory in leftovers:
            storage_log.warning("removing %s, left behind by an earlier topic %r", directory, topic)
            try:
                shutil.rmtree(directory)
            except OSError as exc:
                raise StorageError(
                    f"cannot create topic {topic!r}: {directory} of an earlier topic of that "
                    f"name could not be removed: {exc.strerror or exc}"
                ) from None
        if leftovers:
            fsync_dir(self._path())

    def alter_topic(
        self, name: str, partitions: int | None = None, configs: Mapping[str, int] | None = None
    ) -> int:
        """Set configs of topic ``name`` and/or raise its partition count to ``partitions``;
        returns the partition count it had. Existing logs take the new settings at once;
        new partitions start empty. ``topics.json`` is replaced first, so a crash in between
        leaves partition directories for ``open`` to create."""
        info = self._topic(name)
        old = info.config
        configs = dict(configs or {})
        if "partitions" in configs:
            raise InvalidConfigError("partitions is not a config: ask for the new count instead")
        count = old.partitions if partitions is None else partitions
        if count < old.partitions:
            raise InvalidPartitionsError(
                f"topic {name!r} has {old.partitions} partitions; they can be added, not removed"
            )
        overrides = {**self._overrides[name], **configs}
        config = TopicConfig.from_mapping({**overrides, "partitions": count}, self.defaults)
        if not self.memory:
            self._remove_leftovers(name, range(old.partitions, count))
        self._admit(count - old.partitions, name)
        self._topics[name] = TopicInfo(name, config, info.topic_id)
        self._overrides[name] = overrides
        if not self.memory:
            # Forget any recovery point of an earlier topic's partitions of these numbers.
            self.checkpoint_recovery_points()
            self._persist_topics()
        for partition in range(old.partitions):
            log = self._logs.get((name, partition))
            if log is not None:  # (an offline partition has none)
                log.reconfigure(config)
        for partition in range(old.partitions, count):
            self._logs[name, partition] = self._new_log(name, partition, config)
        return old.partitions

    def _undo_create(self, name: str, partitions: int) -> None:
        """Remove every trace of a topic whose creation failed part way (files first: that
        gives back the descriptors its logs took, which the rewrite of topics.json needs)."""
        for partition in range(partitions):
            log = self._logs.pop((name, partition), None)
            if log is not None:
                log.delete()
            elif not self.memory:
                shutil.rmtree(self._partition_dir(name, partition), ignore_errors=True)
        del self._topics[name], self._overrides[name]
        self._release(partitions)
        if not self.memory:
            self._persist_topics()

    def _admit(self, partitions: int, topic: str | None = None) -> None:
        if self._descriptors is not None and not self.memory:
            self._descriptors.admit_partitions(partitions, topic)

    def _release(self, partitions: int) -> None:
        if self._descriptors is not None and not self.memory:
            self._descriptors.release_partitions(partitions)

    def _new_log(self, topic: str, partition: int, config: TopicConfig) -> PartitionLog:
        if self.memory:
            return MemoryLog(config, self._now_ms)
        return FileLog.open(
            self._partition_dir(topic, partition),
            config,
            recovery_point=None,
            now_ms=self._now_ms,
            max_open_segments=self._max_open_segments,
            quota=self._quota,
        )

    def delete_topic(self, name: str) -> None:
        info = self._topic(name)
        del self._topics[name], self._overrides[name]
        if not self.memory:
            self._persist_topics()
        for partition in range(info.config.partitions):
            log = self._logs.pop((name, partition), None)
            if log is not None:
                log.delete()
                self._release(1)
            elif self.offline.pop((name, partition), None) is not None:
                shutil.rmtree(self._partition_dir(name, partition), ignore_errors=True)
        if not self.memory:  # the directories are gone for good before a new topic can be named
            fsync_dir(self._path())

    def topics(self) -> dict[str, TopicInfo]:
        return dict(self._topics)

    def topic(self, name: str) -> TopicInfo | None:
        """The topic named ``name``, or None."""
        return self._topics.get(name)

    def _topic(self, name: str) -> TopicInfo:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}") from None

    def get_log(self, topic: str, partition: int) -> PartitionLog:
        try:
            return self._logs[topic, partition]
        except KeyError:
            if (topic, partition) in self.offline:
                raise StorageError(self.offline[topic, partition][1]) from None
            raise UnknownTopicOrPartitionError(f"unknown topic or partition {topic!r}/{partition}") from None

    def logs(self) -> Iterator[tuple[tuple[str, int], PartitionLog]]:
        return iter(list(self._logs.items()))

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply every log's retention; returns the number of segments deleted.

        Runs in a worker thread while the event loop may create or delete topics: it walks a
        snapshot of the logs, and skips one deleted meanwhile."""
        removed = 0
        for log in list(self._logs.values()):
            try:
                removed += log.enforce_retention(now_ms)
            except StorageError:
                if not log.closed:
                    raise
        return removed
