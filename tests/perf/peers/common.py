"""Small shared pieces: CPU clocks from /proc, ports, payloads, percentiles, worker I/O."""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import time
from collections import deque

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULT_PREFIX = "RESULT "
READY_LINE = "READY"
SEQ_BYTES = 8
STAMP_BYTES = 8


def proc_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.02)


def make_key(i: int) -> bytes:
    """16-byte key of record ``i``."""
    return b"k%015d" % i


def make_values(n: int, value_size: int, start: int = 0) -> list[bytes]:
    """``n`` values of ``value_size`` bytes, each starting with its sequence number (u64 BE),
    so a consumer can tell lost and duplicated records apart."""
    size = max(value_size, SEQ_BYTES)
    pad = os.urandom(size - SEQ_BYTES)
    return [i.to_bytes(SEQ_BYTES, "big") + pad for i in range(start, start + n)]


def seq_of(value: bytes) -> int:
    return int.from_bytes(value[:SEQ_BYTES], "big")


def stamped_value(seq: int, pad: bytes) -> bytes:
    """A latency-probe value: sequence, CLOCK_MONOTONIC ns (shared by all processes of the
    machine), padding."""
    return seq.to_bytes(SEQ_BYTES, "big") + time.monotonic_ns().to_bytes(STAMP_BYTES, "big") + pad


def stamp_of(value: bytes) -> int:
    return int.from_bytes(value[SEQ_BYTES : SEQ_BYTES + STAMP_BYTES], "big")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


class Timer:
    """Wall time, own CPU and a server's CPU over a timed section."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Timer:
        # Setup data (pre-built values, keys) must not burden the collector while timing:
        # the same for every system.
        gc.collect()
        gc.freeze()
        self.cpu0 = self_cpu_seconds()
        self.srv0 = proc_cpu_seconds(self.server_pid)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self.t0
        self.client_cpu = self_cpu_seconds() - self.cpu0
        self.server_cpu = proc_cpu_seconds(self.server_pid) - self.srv0

    def figures(self) -> dict:
        return {
            "elapsed_s": self.elapsed,
            "client_cpu_s": self.client_cpu,
            "server_cpu_s": self.server_cpu,
        }


def throughput(timer: Timer, records: int, value_size: int, **extra) -> dict:
    out = timer.figures()
    out.update(
        records=records,
        records_per_s=records / timer.elapsed if timer.elapsed > 0 else 0.0,
        mb_per_s=records * value_size / timer.elapsed / 1e6 if timer.elapsed > 0 else 0.0,
    )
    out.update(extra)
    return out


def latency_summary(latencies_ns: list[int]) -> dict:
    lat = sorted(x / 1e6 for x in latencies_ns)
    return {
        "samples": len(lat),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
    }


def check_sequence(seqs, expected: int) -> dict:
    """Lost and duplicated records, given the sequence numbers consumed."""
    seen = set(seqs)
    total = len(seqs) if hasattr(seqs, "__len__") else None
    lost = sum(1 for i in range(expected) if i not in seen)
    return {"consumed": total, "lost": lost, "duplicates": (total - len(seen)) if total else 0}


class Acked:
    """Delivery handles of a Sluice producer (trio or blocking), counted as they complete:
    ``settle`` takes the completed ones from the front (without waiting), so a producer
    checked every so often keeps a bounded number of handles alive, as the peers' harnesses
    keep a bounded number of replies; after ``flush`` it counts them all."""

    def __init__(self) -> None:
        self.pending: deque = deque()
        self.count = 0

    def add(self, handle) -> None:
        self.pending.append(handle)

    def settle(self) -> int:
        """Take the completed handles at the front; the number acknowledged so far."""
        pending = self.pending
        while pending and pending[0].done():
            self.count += pending.popleft().batch.error is None
        return self.count


def emit_ready() -> None:
    print(READY_LINE, flush=True)


def emit_result(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stdout.flush()
