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
brackets) and NEW / BASE; then the same for the client process's CPU time per record
(user + system), which a machine shared with other work disturbs much less than throughput.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

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


def start_broker(tree: Path, data: str) -> tuple[subprocess.Popen, str]:
    broker = subprocess.Popen(
        [str(tree / ".venv" / "bin" / "python"), "-m", "sluice.broker", "--data-dir", data,
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree,
    )
    return broker, broker.stdout.readline().split()[-1]


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
    with tempfile.TemporaryDirectory() as base_data, tempfile.TemporaryDirectory() as new_data:
        brokers = {name: start_broker(tree, data)
                   for (name, tree), data in zip(trees.items(), (base_data, new_data), strict=True)}
        try:
            for rep in range(args.reps):
                order = ("base", "new") if rep % 2 == 0 else ("new", "base")
                for run in RUNS:
                    mode, api, _label = run
                    for name in order:
                        rate, cpu = perf(
                            trees[name], mode, "--bootstrap", brokers[name][1],
                            "--topic", f"perf-{api}-{rep}", "--records", str(args.records),
                            "--api", api,
                        )
                        rates[name, run].append(rate)
                        cpus[name, run].append(cpu / args.records * 1e6)
                        print(f"rep {rep + 1} {name} {mode} {api}: {rate:,.0f} records/s, "
                              f"{cpus[name, run][-1]:.2f} us CPU/record", file=sys.stderr, flush=True)
        finally:
            for broker, _ in brokers.values():
                broker.terminate()
                broker.wait(30)
    print(f"| {args.records:,} records of 100 B | base records/s | new records/s | new / base |")
    print("|---|---|---|---|")
    for run in RUNS:
        print(row(run, rates["base", run], rates["new", run], "{:,.0f}"))
    print()
    print("| client CPU per record | base us | new us | base / new |")
    print("|---|---|---|---|")
    for run in RUNS:
        print(row(run, cpus["new", run], cpus["base", run], "{:.2f}", swap=True))


def row(run, first: list[float], second: list[float], fmt: str, swap: bool = False) -> str:
    """A table row: each side's median and values, and second / first of the medians."""
    mode, _api, label = run
    base, new = (second, first) if swap else (first, second)
    cells = [f"{fmt.format(statistics.median(v))} ({', '.join(fmt.format(x) for x in v)})"
             for v in (base, new)]
    return f"| {mode} `{label}` | {cells[0]} | {cells[1]} | " \
        f"{statistics.median(second) / statistics.median(first):.2f} |"


if __name__ == "__main__":
    main()
