"""Real broker processes (``python -m sluice.broker``) for end-to-end tests, on 127.0.0.1."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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


KAFKA_LINE = "kafka listener on "
HTTP_LINE = "console and metrics on http://"
READY_LINE = "listening on "


@dataclass(frozen=True)
class Announced:
    """Where a broker said it listens: the Sluice port, the Kafka one (None: off) and the
    HTTP port's ``HOST:PORT`` (None: off)."""

    port: int
    kafka_port: int | None = None
    http: str | None = None


def parse_announcement(lines: Iterable[str]) -> Announced | None:
    """What the broker's start-up lines say (``AnnounceReady`` in ``broker/__main__.py``: a
    line per other listener, then ``listening on HOST:PORT``); None if a line is none of
    them or the lines end first."""
    kafka_port = http = None
    for line in lines:
        if line.startswith(KAFKA_LINE):
            kafka_port = int(line.rsplit(":", 1)[1])
        elif line.startswith(HTTP_LINE):
            http = line[len(HTTP_LINE):].strip().rstrip("/")
        elif line.startswith(READY_LINE):
            return Announced(int(line.rsplit(":", 1)[1]), kafka_port, http)
        else:
            return None
    return None


def read_announcement(stream) -> Announced | None:
    """``parse_announcement`` of a child broker's stdout (text or bytes), read up to its ready
    line and no further (the rest stays for whoever drains the pipe)."""
    def lines() -> Iterator[str]:
        while line := stream.readline():
            yield line.decode(errors="replace") if isinstance(line, bytes) else line
    return parse_announcement(lines())


class BrokerProcess:
    """A ``python -m sluice.broker`` child on 127.0.0.1; ``start`` returns once it is listening.

    ``start`` again after ``kill``/``stop`` brings it back on the same port and data dir.
    """

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.kafka_port: int | None = None  # the Kafka listener's, once started (None: off)
        self.http: str | None = None  # the HTTP port's HOST:PORT, once started (None: off)
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
        lines: list[str] = []
        announced = parse_announcement(self._announcement(lines))
        if announced is None:
            self.kill()
            raise RuntimeError(f"broker did not start: {lines!r}; log: {self.log_text()}")
        self.port, self.kafka_port, self.http = announced.port, announced.kafka_port, announced.http

    def _announcement(self, seen: list[str]) -> Iterator[str]:
        """The broker's start-up lines (kept in ``seen``): the first waited for, the others
        printed in the same call, already on their way (and perhaps already in the pipe's
        buffer, where select would not see them)."""
        line = self._read_line()
        while line:
            seen.append(line.decode(errors="replace"))
            yield seen[-1]
            line = self.proc.stdout.readline()

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
