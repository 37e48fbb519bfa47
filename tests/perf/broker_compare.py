#!/usr/bin/env python3
"""``broker_bench.py`` in two source trees, side by side in one run.

    python tests/perf/broker_compare.py BASE_TREE NEW_TREE [--reps 5] [--mib 512]

Each tree needs its own venv at ``TREE/.venv`` (``pip install -e .`` there) and runs its own
``tests/perf/broker_bench.py`` (one repetition, its own broker and data) in turn, the order
alternating between repetitions so that a pair sees the same machine. Prints, per figure,
each repetition's NEW / BASE ratio (the pairs ran back to back, so this cancels much of a
shared machine's swings), their median, and the two trees' medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = [
    "produce acks=1 MiB/s",
    "produce acks=all MiB/s",
    "fetch (raw reader) MiB/s",
    "raw append MiB/s",
    "raw append + fdatasync/MiB MiB/s",
    "loopback sendfile MiB/s",
]


def bench(tree: Path, mib: int, out: Path) -> dict[str, float]:
    subprocess.run(
        [str(tree / ".venv" / "bin" / "python"), str(tree / "tests" / "perf" / "broker_bench.py"),
         "--mib", str(mib), "--reps", "1", "--json", str(out)],
        cwd=tree, check=True, stdout=subprocess.DEVNULL, timeout=1800,
    )
    return {name: values[0] for name, values in json.loads(out.read_text())["runs"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="sluice-compare-") as tmp:
        for rep in range(args.reps):
            order = [("base", args.base), ("new", args.new)]
            for label, tree in order if rep % 2 == 0 else reversed(order):
                runs[label].append(bench(tree.resolve(), args.mib, Path(tmp) / f"{label}.json"))
                print(f"rep {rep + 1} {label}: " + ", ".join(
                    f"{name} {runs[label][-1][name]:,.0f}" for name in FIGURES[:3]), flush=True)
    print(f"\n| figure ({args.mib} MiB per run) | " + " | ".join(
        f"rep {i + 1} new/base" for i in range(args.reps)) + " | median ratio | base median "
        "| new median |")
    print("|---" * (args.reps + 4) + "|")
    for name in FIGURES:
        base = [run[name] for run in runs["base"]]
        new = [run[name] for run in runs["new"]]
        ratios = [n / b for n, b in zip(new, base, strict=True)]
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in ratios)
              + f" | {statistics.median(ratios):.2f} | {statistics.median(base):,.0f} "
              f"| {statistics.median(new):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
