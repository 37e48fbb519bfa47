"""Real Kafka clients against a real broker process: kcat (librdkafka from the system's
packages: tests that run it are marked ``needs_kcat``), kafka-python and confluent-kafka
(librdkafka bundled in its wheel).

Every wait is bounded; nothing sleeps to synchronise: a kcat group member's assignments are
read from its stderr as it prints them, the Python clients are polled until a count or a
deadline. Group timeouts are set low (librdkafka's rebalances otherwise take seconds more).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.processes import BrokerProcess, subprocess_env
from tests.system_tools import needs

# Skipped where kcat is missing, except under SLUICE_REQUIRE_TOOLS=1 (CI installs it).
needs_kcat = needs("kcat", install="Debian/Ubuntu: apt-get install -y kcat")
KCAT_TIMEOUT_S = 120
WAIT_S = 90  # generous: librdkafka's group rounds take seconds on a loaded machine
# Fast group rounds for every librdkafka client the tests start (kcat -G, confluent-kafka).
GROUP_SETTINGS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "300"}


@pytest.fixture
def broker(tmp_path):
    """A broker process with both listeners on free ports."""
    process = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    process.start()
    assert process.kafka_port, "the Kafka listener is on by default"
    yield process
    assert process.stop() == 0, process.log_text()


def kcat(broker: BrokerProcess, *args: str, input: bytes | None = None,
         timeout: float = KCAT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run kcat against the broker's Kafka port to the end; fails the test if it fails."""
    result = subprocess.run(["kcat", "-b", broker.kafka_bootstrap, *args], input=input,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
    return result


def kcat_json_records(output: bytes) -> list[dict]:
    """kcat -C -J output: one JSON object per record."""
    return [json.loads(line) for line in output.splitlines() if line.startswith(b"{")]


def sluice(broker: BrokerProcess, *args: str, input: bytes | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the ``sluice`` CLI against the broker's Sluice port."""
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sluice.client.cli", *args], input=input, capture_output=True,
        timeout=timeout, env=subprocess_env(SLUICE_BOOTSTRAP=broker.bootstrap),
    )
    assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
    return result


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """Poll ``check`` until it returns something true (its value), for at most ``timeout``
    seconds. For state other processes change (a group's members) that no event announces."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # a polling interval, not synchronisation: check() decides


class KcatMember:
    """A ``kcat -G`` group member: its assignments as it reports them on stderr
    (``% Group g rebalanced (memberid ...): assigned: t [0], t [1]``), its records on stdout
    (``partition:offset`` per line)."""

    def __init__(self, broker: BrokerProcess, group: str, topics: Sequence[str],
                 log: Path) -> None:
        settings = [arg for k, v in {**GROUP_SETTINGS, "auto.offset.reset": "earliest"}.items()
                    for arg in ("-X", f"{k}={v}")]
        self.proc = subprocess.Popen(
            ["kcat", "-b", broker.kafka_bootstrap, "-G", group, *settings, "-u",
             "-f", "%p:%o\\n", *topics],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.log = log
        self.assigned: set[tuple[str, int]] | None = None  # None: not (or no longer) assigned
        self.consumed: list[tuple[int, int]] = []
        self._events: queue.Queue = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(stream, kind), daemon=True)
                         for stream, kind in ((self.proc.stderr, "err"), (self.proc.stdout, "out"))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, kind: str) -> None:
        with open(self.log, "ab") as log:
            for line in iter(stream.readline, b""):
                if kind == "err":
                    log.write(line)
                    log.flush()
                self._events.put((kind, line.decode(errors="replace").strip()))
        self._events.put((kind, None))

    def _apply(self, kind: str, line: str) -> None:
        if kind == "out":
            partition, offset = line.split(":")
            self.consumed.append((int(partition), int(offset)))
        elif "rebalanced" in line and "assigned:" in line:
            listed = line.split("assigned:", 1)[1].strip()
            self.assigned = set() if not listed else {
                (tp.split(" [")[0].strip(), int(tp.split(" [")[1].rstrip("]")))
                for tp in listed.split(",")}
        elif "rebalanced" in line and "revoked:" in line:
            self.assigned = None

    def wait(self, check: Callable[[KcatMember], bool], what: str,
             timeout: float = WAIT_S) -> None:
        """Take what kcat printed until ``check(self)`` holds (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not check(self):
            try:
                kind, line = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; kcat said: "
                                     f"{self.log.read_text(errors='replace')[-2000:]}") from None
            if line is None:
                if self.proc.poll() is not None and not check(self):
                    raise AssertionError(f"kcat exited ({self.proc.returncode}) before {what}")
                continue
            self._apply(kind, line)

    def stop(self) -> int:
        """Stop it as Ctrl-C does: kcat closes its consumer, which leaves the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            for reader in self._readers:
                reader.join(timeout=10)
            self.proc.stdout.close()
            self.proc.stderr.close()
