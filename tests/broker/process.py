"""Run a real broker process (``python -m broker``) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio


class BrokerProcess:
    """A ``python -m broker`` child on 127.0.0.1; ``start`` waits for ``listening on``."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.process: trio.Process | None = None
        self.port = 0
        self.stderr_path = data_dir.parent / f"{data_dir.name}-broker.log"

    async def start(self, port: int = 0) -> BrokerProcess:
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "broker", "--data-dir", str(self.data_dir),
             "--port", str(port), "--log-level", "DEBUG", *self.extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stderr.close()
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some(1)
                if not chunk:
                    raise RuntimeError(f"broker exited early; log:\n{self.log()}")
                line += chunk
        text = line.decode().strip()
        assert text.startswith("listening on "), text
        self.port = int(text.rsplit(":", 1)[1])
        return self

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash."""
        assert self.process is not None
        self.process.kill()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        with trio.fail_after(30):
            code = await self.process.wait()
        await self.process.stdout.aclose()
        return code

    async def wait_killed(self) -> None:
        assert self.process is not None
        with trio.fail_after(30):
            await self.process.wait()
        await self.process.stdout.aclose()
