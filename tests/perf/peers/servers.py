"""Start and stop the three servers, each on 127.0.0.1 (a free port) with its data in a
temporary directory. Nothing is installed here: a missing binary is reported as skipped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from peers.common import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # tests.processes reads the broker's start-up lines
    sys.path.append(str(REPO))

from tests.processes import read_announcement  # noqa: E402


class Skipped(Exception):
    """The system cannot run here (e.g. its server binary is not installed)."""


class Server:
    name = "server"
    proc: subprocess.Popen | None = None
    address = ""
    version = ""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _popen(self, argv: list[str], **kw) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", log), stderr=log,
                cwd=kw.pop("cwd", self.dir), **kw,
            )
        finally:
            log.close()


def find_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        raise Skipped(f"skipped: {name} not found (apt-get install -y {name})")
    return path


def _drain(stream) -> None:
    for _ in iter(stream.readline, b""):
        pass


class SluiceServer(Server):
    name = "sluice"
    kafka_address = ""  # its Kafka listener's (Kafka's clients, ``peers.kafka_peer``)

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = self._popen(
            [sys.executable, "-m", "sluice.broker", "--data-dir", str(self.dir / "data"), "--port", "0",
             "--host", "127.0.0.1"],
            stdout=subprocess.PIPE, cwd=REPO, env=env,
        )
        announced = read_announcement(self.proc.stdout)
        if announced is not None:
            self.address = f"127.0.0.1:{announced.port}"
            if announced.kafka_port is not None:
                self.kafka_address = f"127.0.0.1:{announced.kafka_port}"
            threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()
            self.version = "sluice (this checkout)"
            return
        self.stop()
        raise RuntimeError(f"sluice broker did not start; see {self.log_path}")


class RedisServer(Server):
    name = "redis"

    def start(self) -> None:
        binary = find_binary("redis-server")
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        self.version = out.split()[2] if out.startswith("Redis server") else out.strip()
        port = free_port()
        self.proc = self._popen([
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log_path),
        ])
        wait_for_port(port, proc=self.proc)
        self.address = f"127.0.0.1:{port}"


class NatsServer(Server):
    name = "nats"

    def start(self) -> None:
        binary = find_binary("nats-server")
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        self.version = out.strip().split(":")[-1].strip() or out.strip()
        port = free_port()
        self.proc = self._popen([
            binary, "-a", "127.0.0.1", "-p", str(port), "-js",
            "--store_dir", str(self.dir / "jetstream"), "-l", str(self.log_path),
        ])
        wait_for_port(port, proc=self.proc)
        self.address = f"127.0.0.1:{port}"


SERVERS = {"sluice": SluiceServer, "redis": RedisServer, "nats": NatsServer}
