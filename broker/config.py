"""Broker settings: defaults, a TOML file, then command-line flags, in that order of precedence.

A TOML file looks like::

    host = "127.0.0.1"
    port = 9092
    data_dir = "./sluice-data"
    max_connections = 1024

    [topic_defaults]           # defaults for topics created without these configs
    partitions = 1
    segment_bytes = 1073741824
    retention_ms = 604800000

Unknown keys are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.protocol.errors import InvalidConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Everything the broker process needs; frozen, validated on construction."""

    host: str = "127.0.0.1"
    port: int = 9092
    data_dir: Path = Path("./sluice-data")
    broker_id: int = 0
    # Run without files (MemoryLog): for tests and throwaway brokers; nothing survives exit.
    in_memory: bool = False
    max_frame_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1024
    # A connection that sends nothing for this long is closed (long polls count as activity).
    idle_timeout_s: float = 600.0
    # A client that stops reading its responses is disconnected after this long.
    send_timeout_s: float = 30.0
    # Responses queued per connection before the broker stops reading its requests.
    max_in_flight: int = 32
    # On SIGTERM: how long in-flight requests get to finish before they are cancelled.
    shutdown_grace_s: float = 5.0
    retention_check_interval_s: float = 300.0
    checkpoint_interval_s: float = 10.0
    # Committed offsets of a group with no members are dropped after this long.
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    use_sendfile: bool = True
    log_level: str = "INFO"
    topic_defaults: dict[str, int] = field(default_factory=dict)
    # "topic-partition" names whose recovery may truncate below the flushed (recovery) point,
    # discarding acknowledged records: an operator's deliberate repair, for one start only.
    repair_truncate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.repair_truncate, str) or not all(
            isinstance(name, str) for name in self.repair_truncate
        ):
            raise InvalidConfigError("repair_truncate must be a list of TOPIC-PARTITION names")
        object.__setattr__(self, "repair_truncate", tuple(self.repair_truncate))
        if not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not (0 <= self.port <= 65535):
            raise InvalidConfigError(f"port must be 0..65535, got {self.port}")
        for name in ("max_frame_bytes", "max_connections", "max_in_flight", "offsets_retention_ms"):
            if getattr(self, name) < 1:
                raise InvalidConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "idle_timeout_s",
            "send_timeout_s",
            "shutdown_grace_s",
            "retention_check_interval_s",
            "checkpoint_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise InvalidConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise InvalidConfigError(f"unknown log level {self.log_level!r}")

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> BrokerConfig:
        """Defaults, then the TOML file at ``path``, then ``overrides`` that are not None."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as f:
                    values.update(tomllib.load(f))
            except OSError as exc:
                raise InvalidConfigError(f"cannot read config file {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise InvalidConfigError(f"config file {path} is not valid TOML: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidConfigError(f"unknown broker setting(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidConfigError(str(exc)) from None
