#!/usr/bin/env python3
"""Fairness benchmark: a small producer/consumer pair beside a producer of 8 MiB batches.

    python tests/perf/fairness_bench.py [--baseline REV] [--reps 3] [--seconds 4]
                                        [--rate 1000] [--quick] [--json out.json]

Per broker build and repetition, on one broker process:

* quiet: the small pair alone -- ``--rate`` records/s of ``--value-size`` bytes through
  ``sluice.client.Producer`` (acks=1) to ``Consumer`` in another process (the e2e workers of
  compare.py); latency from the monotonic timestamp in each value; a metadata round trip
  measured every 10 ms from this process meanwhile;
* loaded: the same, while a separate process produces 8 MiB batches to another topic as fast
  as the broker takes them (``--heavy-in-flight`` requests pipelined, acks=1).

``--baseline REV`` runs the same measurements against the broker (and protocol) of git
revision REV first, extracted to a temporary directory (the clients are this checkout's), so
before and after are measured side by side in one run; ``--candidate REV`` measures a
revision instead of the working tree (so edits during a long run change nothing). The table shows the median of the
repetitions and every repetition; "loaded / quiet p99" is the figure issue 13 asks to keep
within 10x. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO)]

from compare import run_e2e  # noqa: E402
from peers.common import percentile  # noqa: E402
from sluice.protocol import messages as m  # noqa: E402
from sluice.protocol.batch import build_batch  # noqa: E402

from tests.perf.broker_bench import Client, pipeline  # noqa: E402
from tests.processes import read_announcement  # noqa: E402

MIB = 1024 * 1024
HEAVY_TOPIC = "heavy"
SMALL_TOPIC = "small"
PROBE_INTERVAL_S = 0.01


# -- the broker builds ---------------------------------------------------------------------------


class Build:
    """A broker to measure: this checkout's, or a git revision's extracted to ``root``."""

    def __init__(self, label: str, import_root: Path | None) -> None:
        self.label = label
        self.import_root = import_root  # a directory holding sluice/{broker,protocol}, or None

    def env(self) -> dict:
        env = dict(os.environ)
        paths = [str(self.import_root)] if self.import_root else []
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO), env.get("PYTHONPATH", "")])
        return env

    def check_imports(self) -> None:
        """The broker child must import this build's code, not the installed checkout's."""
        out = subprocess.run(
            [sys.executable, "-c", "import sluice.broker.server as s; print(s.__file__)"],
            capture_output=True, text=True, env=self.env(), cwd=self.import_root or REPO,
            check=True,
        ).stdout.strip()
        expected = self.import_root if self.import_root else REPO
        if not Path(out).resolve().is_relative_to(expected.resolve()):
            raise RuntimeError(f"{self.label}: the broker imports {out}, not {expected}")

    def start(self, workdir: Path) -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.broker", "--data-dir", str(workdir / "data"),
             "--port", "0", "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=open(workdir / "broker.log", "ab"), env=self.env(),
            cwd=self.import_root or REPO,
        )
        announced = read_announcement(proc.stdout)
        if announced is None:
            proc.kill()
            raise RuntimeError(f"{self.label}: broker did not start")
        return proc, announced.port


def revision_build(role: str, rev: str, into: Path) -> Build:
    short = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev],
                           capture_output=True, text=True, check=True).stdout.strip()
    return Build(f"{role} {short}", extract_revision(rev, into))


def extract_revision(rev: str, into: Path) -> Path:
    """``into/sluice/{broker,protocol}`` from git revision ``rev`` (namespace package layout)."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "broker", "protocol"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    package = into / "sluice"
    package.mkdir()
    for name in ("broker", "protocol"):
        (package / name).symlink_to(src / name)
    return into


# -- load and probes -----------------------------------------------------------------------------


def heavy_batch() -> bytes:
    """One batch just under the default max_message_bytes (8 MiB): 8 records of ~1 MiB."""
    value = os.urandom(MIB - 2048)
    now = time.time_ns() // 1_000_000
    return bytes(build_batch([(None, value, [], now)] * 8))


def heavy_producer(port: int, in_flight: int) -> None:
    """Role ``heavy``: produce 8 MiB batches until stdin closes; print MiB/s and count."""
    batch = heavy_batch()
    client = Client(port)
    request = m.ProduceRequest(acks=1, timeout_ms=30_000, partitions=[
        m.ProducePartition(topic=HEAVY_TOPIC, partition=0, records=batch)])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    start = time.perf_counter()
    acked = pipeline(client, request, in_flight, lambda sent: not stop.is_set())
    elapsed = time.perf_counter() - start
    client.close()
    print(json.dumps({"batches": acked, "mib_per_s": acked * len(batch) / MIB / elapsed}))


class MetadataProbe:
    """Round trips of a one-topic metadata request every 10 ms, in a thread of this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rtts_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> MetadataProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        client = Client(self.port)
        request = m.MetadataRequest(topics=[SMALL_TOPIC])
        while not self._stop.wait(PROBE_INTERVAL_S):
            began = time.perf_counter()
            client.request(request)
            self.rtts_ms.append((time.perf_counter() - began) * 1000)
        client.close()


def small_pair(port: int, pid: int, args: argparse.Namespace, rep: int, phase: str) -> dict:
    """The e2e workers of compare.py: consumer process READY first, then the producer."""
    expected = int(args.rate * (args.warmup + args.seconds))
    params = {
        "address": f"127.0.0.1:{port}", "server_pid": pid, "topic": f"{SMALL_TOPIC}-{phase}-{rep}",
        "value_size": args.value_size, "acks": 1, "rate": args.rate, "expected": expected,
        "warmup_records": int(args.rate * args.warmup), "delete": True,
        "timeout_s": args.warmup + args.seconds + 60, "e2e_linger_ms": 0,
    }
    result = run_e2e("sluice", params, args.warmup + args.seconds + 120)
    consumed = result["consume"]
    if consumed["lost"] or consumed["duplicates"]:
        raise RuntimeError(f"small pair lost {consumed['lost']}, duplicated {consumed['duplicates']}")
    return consumed


def create_heavy_topic(port: int) -> None:
    client = Client(port)
    # Deleted after each repetition, which bounds the disk it takes (about 1 GiB).
    response = client.request(m.CreateTopicsRequest(topics=[m.TopicSpec(
        name=HEAVY_TOPIC, partitions=1, configs={"segment_bytes": 64 * MIB})]))
    client.close()
    assert response.topics[0].error == 0, response


def delete_heavy_topic(port: int) -> None:
    client = Client(port)
    client.request(m.DeleteTopicsRequest(topics=[HEAVY_TOPIC]))
    client.close()


def measure(build: Build, args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    proc, port = build.start(workdir)
    try:
        measure_on(build, proc, port, args, add)
    except BaseException:
        log = (workdir / "broker.log").read_text(errors="replace")[-2000:]
        print(f"{build.label}: the run failed; broker exit code {proc.poll()}; its log ends:\n"
              f"{log}", file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return rows


def measure_on(build: Build, proc: subprocess.Popen, port: int, args, add) -> None:
    for rep in range(args.reps):
        print(f"{build.label}: repetition {rep + 1}/{args.reps} (load average "
              f"{os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        with MetadataProbe(port) as probe:
            quiet = small_pair(port, proc.pid, args, rep, "quiet")
        add("quiet e2e p50 ms", quiet["p50_ms"])
        add("quiet e2e p99 ms", quiet["p99_ms"])
        add("quiet e2e max ms", quiet["max_ms"])
        add("quiet metadata p99 ms", percentile(sorted(probe.rtts_ms), 99))
        create_heavy_topic(port)
        heavy = subprocess.Popen(
            [sys.executable, __file__, "heavy", str(port), str(args.heavy_in_flight)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(0.5)  # let the heavy producer reach full speed
            with MetadataProbe(port) as probe:
                loaded = small_pair(port, proc.pid, args, rep, "loaded")
        finally:
            out, _ = heavy.communicate(timeout=120)  # closing stdin stops it
        delete_heavy_topic(port)
        figures = json.loads(out)
        add("loaded e2e p50 ms", loaded["p50_ms"])
        add("loaded e2e p99 ms", loaded["p99_ms"])
        add("loaded e2e max ms", loaded["max_ms"])
        add("loaded metadata p99 ms", percentile(sorted(probe.rtts_ms), 99))
        add("loaded metadata max ms", max(probe.rtts_ms, default=float("nan")))
        add("heavy producer MiB/s", figures["mib_per_s"])
        add("loaded / quiet e2e p99", loaded["p99_ms"] / quiet["p99_ms"])


def table(results: dict[str, dict[str, list[float]]], reps: int) -> str:
    labels = list(results)
    names = list(next(iter(results.values())))
    lines = ["| figure | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in names:
        cells = []
        for label in labels:
            values = results[label][name]
            every = ", ".join(f"{v:,.1f}" for v in values)
            cells.append(f"**{statistics.median(values):,.1f}** ({every})" if reps > 1
                         else f"{values[0]:,.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["heavy"]:
        heavy_producer(int(argv[1]), int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the broker of this git revision, first")
    parser.add_argument("--candidate", metavar="REV",
                        help="measure the broker of this git revision instead of the working tree")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured e2e seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="e2e warm-up seconds")
    parser.add_argument("--rate", type=int, default=1000, help="small pair records/s")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--heavy-in-flight", type=int, default=4,
                        help="8 MiB produce requests the heavy producer keeps pipelined")
    parser.add_argument("--quick", action="store_true", help="small and fast (CI smoke)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.seconds, args.warmup = 1, 1.0, 0.2
    tmp = Path(tempfile.mkdtemp(prefix="sluice-fairness-"))
    try:
        builds = []
        if args.baseline:
            builds.append(revision_build("baseline", args.baseline, tmp / "baseline"))
        if args.candidate:
            builds.append(revision_build("candidate", args.candidate, tmp / "candidate"))
        else:
            builds.append(Build("this checkout", None))
        results = {}
        for i, build in enumerate(builds):
            build.check_imports()
            workdir = tmp / f"run-{i}"
            workdir.mkdir()
            results[build.label] = measure(build, args, workdir)
            shutil.rmtree(workdir / "data", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"small pair: {args.rate:,} records/s of {args.value_size} B, acks=1, "
          f"{args.seconds:g} s measured after {args.warmup:g} s; heavy: 8 MiB batches, "
          f"{args.heavy_in_flight} in flight, acks=1; cells: median (every repetition)")
    print(table(results, args.reps))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
