"""Broker settings: defaults, a TOML file, then command-line flags, in that order of precedence.

A TOML file looks like::

    host = "127.0.0.1"
    port = 9092
    data_dir = "./sluice-data"
    max_connections = 1024
    kafka_port = 9093          # Kafka's protocol (default: port + 1); kafka = false: off
    http_port = 9644           # /metrics, /health and the web console (off unless set)

    [topic_defaults]           # defaults for topics created without these configs
    partitions = 1
    segment_bytes = 1073741824
    retention_ms = 604800000

Every value is checked at load, by type and range, before anything is opened: a string where
a number or a boolean belongs (``port = "9099"``, ``in_memory = "false"``), a fraction where
an integer belongs (``max_frame_bytes = 1.5``), a value out of range, an unknown key (a typo
must not silently fall back to a default) or a bad ``[topic_defaults]`` entry is refused, one
line per problem, each naming where the value came from (the file or the flag).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.broker.storage.config import TopicConfig
from sluice.protocol.errors import ApiError, InvalidConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PARTITION_NAME = re.compile(r".+-[0-9]+")
MIN_FRAME_BYTES = 1024  # smaller frames cannot hold a request's header


@dataclass(frozen=True, slots=True)
class Rule:
    """How one setting is checked: its kind and, for numbers, its inclusive range.

    Kinds: ``int`` (not a bool, not a fraction), ``number`` (int or float, finite), ``bool``,
    ``str`` (non-empty), ``path`` (a non-empty string or a Path), ``level`` (a log level),
    ``names`` (a list of TOPIC-PARTITION strings), ``table`` (topic configs). An ``optional``
    setting may also be None (its default: off, or another setting's value).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    positive: bool = False  # numbers: strictly greater than zero
    optional: bool = False  # None is allowed (a default computed from other settings)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (one phrase), or None if it is fine."""
        if value is None and self.optional:
            return None
        check = getattr(self, f"_check_{self.kind}")
        return check(value)

    def _check_int(self, value: Any) -> str | None:
        if type(value) is not int:
            return f"must be {self._expected()}, got {_describe(value)}"
        return self._check_range(value)

    def _check_number(self, value: Any) -> str | None:
        if type(value) not in (int, float) or not math.isfinite(value):
            return f"must be {self._expected()}, got {_describe(value)}"
        return self._check_range(value)

    def _check_range(self, value: float) -> str | None:
        too_low = (self.low is not None and value < self.low) or (self.positive and value <= 0)
        if too_low or (self.high is not None and value > self.high):
            return f"must be {self._expected()}, got {value}"
        return None

    def _expected(self) -> str:
        what = "an integer" if self.kind == "int" else "a number"
        if self.positive:
            return f"{what} greater than 0"
        return f"{what} in {self.low}..{self.high}"

    @staticmethod
    def _check_bool(value: Any) -> str | None:
        if type(value) is not bool:
            return f"must be true or false, got {_describe(value)}"
        return None

    @staticmethod
    def _check_str(value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return f"must be a non-empty string, got {_describe(value)}"
        return None

    @staticmethod
    def _check_path(value: Any) -> str | None:
        if isinstance(value, Path):
            return None
        if not isinstance(value, str) or not value:
            return f"must be a directory path (a non-empty string), got {_describe(value)}"
        return None

    @staticmethod
    def _check_level(value: Any) -> str | None:
        if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
            return f"must be one of {', '.join(LOG_LEVELS)}, got {_describe(value)}"
        return None

    @staticmethod
    def _check_names(value: Any) -> str | None:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            return f"must be a list of TOPIC-PARTITION names, got {_describe(value)}"
        bad = [v for v in value if not PARTITION_NAME.fullmatch(v)]
        if bad:
            return f"{bad[0]!r} is not a TOPIC-PARTITION name (e.g. orders-3)"
        return None

    @staticmethod
    def _check_table(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a table of topic configs, got {_describe(value)}"
        return None  # its entries are checked one by one (check_settings)


def _describe(value: Any) -> str:
    """A wrong value as the user wrote it, with its type when the type is the problem."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


DEFAULT_PORT = 9092


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Everything the broker process needs; frozen, validated on construction (``RULES``)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # The Kafka listener (broker/adapters/kafka): on the same host, at ``kafka_port`` -- by
    # default the Sluice port + 1 (port 0, any free port, gives the Kafka listener any free
    # port too); ``kafka = false`` turns it off.
    kafka: bool = True
    kafka_port: int | None = None
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
    # The HTTP port (/metrics, /health, the console): off unless set; on http_host, which is
    # the broker's host unless set. Read-only refuses the console's writes (create, produce).
    http_port: int | None = None
    http_host: str | None = None
    http_read_only: bool = False

    @property
    def kafka_listen_port(self) -> int | None:
        """Where the Kafka listener listens (0: any free port), or None when it is off."""
        if not self.kafka:
            return None
        if self.kafka_port is not None:
            return self.kafka_port
        return self.port + 1 if self.port else 0

    def __post_init__(self) -> None:
        problems = [f"{name}: {problem}" for name, problem in check_settings(self._values())]
        if problems:
            raise InvalidConfigError("\n".join(problems))
        object.__setattr__(self, "repair_truncate", tuple(self.repair_truncate))
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> BrokerConfig:
        """Defaults, then the TOML file at ``path``, then ``overrides`` that are not None.

        Raises ``InvalidConfigError`` whose message holds one line per problem, each starting
        with where the value came from: ``FILE: key: ...`` or ``--flag: ...``."""
        from_file: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as f:
                    from_file = tomllib.load(f)
            except OSError as exc:
                raise InvalidConfigError(f"cannot read config file {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise InvalidConfigError(f"config file {path} is not valid TOML: {exc}") from None
        flags = {k: v for k, v in overrides.items() if v is not None}
        values = {**from_file, **flags}
        problems = []
        for name, problem in check_settings(values):
            where = f"--{name.replace('_', '-')}" if name in flags else f"{path}: {name}"
            problems.append(f"{where}: {problem}")
        if problems:
            raise InvalidConfigError("\n".join(problems))
        return cls(**values)


RULES: dict[str, Rule] = {
    "host": Rule("str"),
    "port": Rule("int", 0, 65535),
    "kafka": Rule("bool"),
    "kafka_port": Rule("int", 0, 65535, optional=True),
    "data_dir": Rule("path"),
    "broker_id": Rule("int", 0, 2**31 - 1),
    "in_memory": Rule("bool"),
    "max_frame_bytes": Rule("int", MIN_FRAME_BYTES, 2**32 - 1),
    "max_connections": Rule("int", 1, 1_000_000),
    "idle_timeout_s": Rule("number", positive=True),
    "send_timeout_s": Rule("number", positive=True),
    "max_in_flight": Rule("int", 1, 1_000_000),
    "shutdown_grace_s": Rule("number", positive=True),
    "retention_check_interval_s": Rule("number", positive=True),
    "checkpoint_interval_s": Rule("number", positive=True),
    "offsets_retention_ms": Rule("int", 1, 2**63 - 1),
    "use_sendfile": Rule("bool"),
    "log_level": Rule("level"),
    "topic_defaults": Rule("table"),
    "repair_truncate": Rule("names"),
    "http_port": Rule("int", 0, 65535, optional=True),
    "http_host": Rule("str", optional=True),
    "http_read_only": Rule("bool"),
}


def check_settings(values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(setting, problem)`` for every unknown key, every value its rule refuses, and
    settings that cannot go together."""
    problems = _each_setting(values)
    if not problems:
        problems += _ports_problems(values)
    return problems


def _ports_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The listeners' ports: the Kafka listener's default (port + 1) must be a port, and no
    two listeners on one host may share a port (0, any free port, never clashes)."""
    port = values.get("port", DEFAULT_PORT)
    listeners = [("port", "the Sluice port", port)]
    if values.get("kafka", True):
        kafka_port = values.get("kafka_port")
        if kafka_port is None:
            if port == 65535:
                return [("port", "the Kafka listener's default port (port + 1) would be 65536: "
                                 "set kafka_port (--kafka-port), or kafka = false (--no-kafka)")]
            kafka_port = port + 1 if port else 0
        listeners.append(("kafka_port", "the Kafka port", kafka_port))
    http_port = values.get("http_port")
    if http_port is not None and values.get("http_host") in (None, values.get("host")):
        listeners.append(("http_port", "the HTTP port", http_port))
    taken: dict[int, str] = {}
    for name, what, number in listeners:
        if number and number in taken:
            return [(name, f"must differ from {taken[number]} ({number}): two listeners "
                           "cannot share a port")]
        taken[number] = what
    return []


def _each_setting(values: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for name, value in values.items():
        rule = RULES.get(name)
        if rule is None:
            close = difflib.get_close_matches(name, RULES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append((name, f"unknown setting{hint}"))
            continue
        problem = rule.problem(value)
        if problem is not None:
            problems.append((name, problem))
        elif rule.kind == "table":
            problems += [(name, p) for p in map(_topic_config_problem, value.items()) if p]
    return problems


def _topic_config_problem(entry: tuple[str, Any]) -> str | None:
    try:
        TopicConfig.from_mapping(dict([entry]))
    except ApiError as exc:  # InvalidConfigError, or InvalidPartitionsError
        return exc.message
    return None
