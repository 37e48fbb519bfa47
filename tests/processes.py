"""Real broker processes (``python -m sluice.broker``) for end-to-end tests, on 127.0.0.1."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 20


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: the repo importable, no stray bootstrap."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("SLUICE_BOOTSTRAP", None)
    env.update(extra)
    return env


READY_LINE = re.compile(r"listening on \S+:(\d+)(?: \(sluice\))?(?: and \S+:(\d+) \(kafka\))?")


def parse_ready_line(line: str) -> tuple[int, int | None] | None:
    """``(Sluice port, Kafka port or None)`` from the broker's ``listening on`` line, or None
    if ``line`` is not it."""
    found = READY_LINE.match(line)
    if found is None:
        return None
    return int(found[1]), int(found[2]) if found[2] else None


class BrokerProcess:
    """A ``python -m sluice.broker`` child on 127.0.0.1; ``start`` returns once it is listening.

    ``start`` again after ``kill``/``stop`` brings it back on the same port and data dir.
    """

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.kafka_port: int | None = None  # the Kafka listener's, once started (None: off)
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kafka_bootstrap(self) -> str:
        assert self.kafka_port, "the broker has no Kafka listener"
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, args: Sequence[str] = ()) -> None:
        log = open(self.log_path, "ab")
        # A restart keeps both ports (the Kafka one would otherwise default to port + 1).
        kafka = ["--kafka-port", str(self.kafka_port)] if self.kafka_port else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.broker", "--data-dir", str(self.data_dir),
             "--port", str(self.port), *kafka, *self.broker_args(), *args],
            stdout=subprocess.PIPE, stderr=log, env=subprocess_env(), cwd=REPO,
            preexec_fn=self.child_setup,
        )
        log.close()
        line = self._read_line()
        ports = parse_ready_line(line.decode(errors="replace"))
        if ports is None:
            self.kill()
            raise RuntimeError(f"broker did not start: {line!r}; log: {self.log_text()}")
        self.port, self.kafka_port = ports

    def broker_args(self) -> list[str]:
        """Hook: flags every start of this broker passes (beyond data dir and port)."""
        return []

    def child_setup(self) -> None:
        """Hook: runs in the child before the broker starts (e.g. resource limits)."""

    def _read_line(self) -> bytes:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    return self.proc.stdout.readline()
        return b""

    def kill(self) -> None:
        """kill -9: no clean shutdown, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Ask the broker to shut down (SIGTERM or SIGINT); returns its exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.wait()
        self.proc.stdout.close()
        self.proc = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]
