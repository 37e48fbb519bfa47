#!/usr/bin/env python3
"""The client's produce and consume throughput in two source trees, side by side in one run.

    python tests/perf/codec_compare.py BASE_TREE NEW_TREE [--reps 5] [--records 1000000]

Each tree needs its own venv at ``TREE/.venv`` (``pip install -e .`` there). One broker of
each tree runs on its own temporary data directory. Each repetition runs, for each tree in
turn (the order alternating between repetitions, so that a pair sees the same machine):
``sluice perf produce`` with ``--api batch`` (``send_batch``) and ``--api record`` (one
``send`` per record) into fresh topics, then ``sluice perf consume`` with ``--api batch``
(``batches()``) and ``--api record`` (``async for record``) over what was produced.

Prints one markdown row per measurement: the median records/s of each tree (every value in
brackets), NEW / BASE of the medians, and the median of the per-repetition ratios (each pair
ran back to back, so this one cancels more of a shared machine's swings); then the same for
the CPU time per record (user + system) of the client process and of the broker, which other
work on the machine disturbs much less than throughput.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.processes

from tests.processes import read_announcement  # noqa: E402

RATE = re.compile(r"([\d,]+) records/s")
RUNS = [
    ("produce", "batch", "send_batch"),
    ("produce", "record", "send"),
    ("consume", "batch", "batches()"),
    ("consume", "record", "for record"),
]


def perf(tree: Path, *args: str) -> tuple[float, float]:
    """``sluice perf ARGS`` with ``tree``'s venv: (records/s, client CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "sluice"), "perf", *args], capture_output=True, text=True,
        cwd=tree, timeout=600, check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return float(RATE.search(done.stdout).group(1).replace(",", "")), cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_broker(tree: Path, data: str) -> tuple[subprocess.Popen, str]:
    broker = subprocess.Popen(
        [str(tree / ".venv" / "bin" / "python"), "-m", "sluice.broker", "--data-dir", data,
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree,
    )
    announced = read_announcement(broker.stdout)
    if announced is None:
        broker.kill()
        raise RuntimeError(f"{tree}: the broker did not start")
    return broker, f"127.0.0.1:{announced.port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    rates: dict = {(name, run): [] for name in trees for run in RUNS}
    cpus: dict = {(name, run): [] for name in trees for run in RUNS}
    broker_cpus: dict = {(name, run): [] for name in trees for run in RUNS}
    with tempfile.TemporaryDirectory() as base_data, tempfile.TemporaryDirectory() as new_data:
        brokers = {name: start_broker(tree, data)
                   for (name, tree), data in zip(trees.items(), (base_data, new_data), strict=True)}
        try:
            for rep in range(args.reps):
                order = ("base", "new") if rep % 2 == 0 else ("new", "base")
                for run in RUNS:
                    mode, api, _label = run
                    for name in order:
                        broker_before = cpu_seconds(brokers[name][0].pid)
                        rate, cpu = perf(
                            trees[name], mode, "--bootstrap", brokers[name][1],
                            "--topic", f"perf-{api}-{rep}", "--records", str(args.records),
                            "--api", api,
                        )
                        rates[name, run].append(rate)
                        cpus[name, run].append(cpu / args.records * 1e6)
                        broker_cpu = cpu_seconds(brokers[name][0].pid) - broker_before
                        broker_cpus[name, run].append(broker_cpu / args.records * 1e6)
                        print(f"rep {rep + 1} {name} {mode} {api}: {rate:,.0f} records/s, "
                              f"{cpus[name, run][-1]:.2f} us CPU/record", file=sys.stderr, flush=True)
        finally:
            for broker, _ in brokers.values():
                broker.terminate()
                broker.wait(30)
    for title, table, fmt, higher_is_better in (
        (f"{args.records:,} records of 100 B: records/s", rates, "{:,.0f}", True),
        ("client CPU per record (us)", cpus, "{:.2f}", False),
        ("broker CPU per record (us)", broker_cpus, "{:.2f}", False),
    ):
        ratio = "new / base" if higher_is_better else "base / new"
        print(f"| {title} | base | new | {ratio} (medians) | {ratio} (median of pairs) |")
        print("|---|---|---|---|---|")
        for run in RUNS:
            print(row(run, table["base", run], table["new", run], fmt, higher_is_better))
        print()


def row(run, base: list[float], new: list[float], fmt: str, higher_is_better: bool) -> str:
    """A table row: each side's median and values, the ratio of the medians and the median
    of the per-repetition ratios (oriented so that above 1 means the new tree is better)."""
    mode, _api, label = run
    cells = [f"{fmt.format(statistics.median(v))} ({', '.join(fmt.format(x) for x in v)})"
             for v in (base, new)]
    better, worse = (new, base) if higher_is_better else (base, new)
    ratios = [b / w for b, w in zip(better, worse, strict=True) if w]  # CPU ticks can be 0
    pairs = f"{statistics.median(ratios):.2f}" if ratios else "-"
    medians = statistics.median(better) / (statistics.median(worse) or float("nan"))
    return f"| {mode} `{label}` | {cells[0]} | {cells[1]} | {medians:.2f} | {pairs} |"


if __name__ == "__main__":
    main()
