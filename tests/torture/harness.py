"""Shared pieces of the torture suite: configurable broker processes, /proc probes, figures.

Modes: the quick mode runs by default (CI); the long mode runs with ``-m slow`` or with
``SLUICE_TORTURE=long`` (each scenario has a ``long`` parameter marked ``slow``). Figures every
scenario measures are collected in ``FIGURES`` and printed at the end of the run (and written as
JSON to ``$SLUICE_TORTURE_REPORT`` if set); RELIABILITY.md quotes the last long run.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

from tests.processes import BrokerProcess, subprocess_env

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/ is a package in it)


def child_env() -> dict[str, str]:
    """Environment for helper processes that import ``tests.*``."""
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env

LONG = os.environ.get("SLUICE_TORTURE", "").lower() == "long"
MODES = ["quick", pytest.param("long", marks=pytest.mark.slow)]
FIGURES: dict[str, dict] = {}


def record(scenario: str, **figures) -> None:
    """Remember figures for the end-of-run summary (and the JSON report)."""
    FIGURES.setdefault(scenario, {}).update(figures)
    path = os.environ.get("SLUICE_TORTURE_REPORT")
    if path:
        Path(path).write_text(json.dumps(FIGURES, indent=1, sort_keys=True))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


class Broker(BrokerProcess):
    """A ``python -m sluice.broker`` child with a settings file, extra flags and resource limits."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        data_dir: Path | None = None,
        settings: dict | None = None,
        topic_defaults: dict | None = None,
        args: list[str] | None = None,
        fsize_limit: int | None = None,
        nofile: int | tuple[int, int] | None = None,
    ) -> None:
        """``nofile``: RLIMIT_NOFILE for the broker, one number for both limits or
        ``(soft, hard)``."""
        super().__init__(data_dir or tmp_path / "data", tmp_path / "broker.log")
        self.config_path = tmp_path / "broker.toml"
        lines = [f"{k} = {_toml_value(v)}" for k, v in (settings or {}).items()]
        if topic_defaults:
            lines.append("[topic_defaults]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in topic_defaults.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.args = list(args or [])
        self.fsize_limit = fsize_limit
        self.nofile = nofile
        self.starts = 0
        self.start_seconds: list[float] = []

    def child_setup(self) -> None:
        if self.fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.fsize_limit, resource.RLIM_INFINITY))
        if self.nofile is not None:
            soft, hard = self.nofile if isinstance(self.nofile, tuple) else (self.nofile,) * 2
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def broker_args(self) -> list[str]:
        return ["--config", str(self.config_path), *self.args]

    def start(self, args: list[str] | None = None) -> None:
        began = time.monotonic()
        super().start(args or [])
        self.start_seconds.append(time.monotonic() - began)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, field: str) -> int:
        """A ``kB`` figure from /proc/PID/status (``VmRSS``, ``VmHWM`` = peak RSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_mib(self) -> float:
        return self.status("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return self.status("VmHWM") / 1024

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_since(self, start: int) -> str:
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0
