#!/usr/bin/env python3
"""Both clients' produce and consume throughput in two source trees, side by side in one run.

    python tests/perf/client_compare.py BASE_TREE NEW_TREE [--reps 5] [--records 500000]

Each tree needs its own venv at ``TREE/.venv`` (``pip install -e .`` there). The measuring
code is this checkout's peer harness (``tests/perf/peers``: ``sluice_peer`` for the trio
client, ``sluice_blocking_peer`` for the blocking one, public APIs only), run with each tree's
Python, so the clients measured are that tree's. One broker (this checkout's) serves both.
Each repetition runs every measurement for each tree in turn, the order alternating between
repetitions so that a pair sees the same machine: for each client, ``send_batch`` (10,000
records a call) and one ``send`` per record, then flush, at acks=1 with 16-byte keys and
100-byte values; then reading it all back with the batch API (``getmany`` / ``poll``) and per
record (``async for`` / ``for``).

Prints one markdown row per measurement: each tree's median records/s (every value in
brackets), NEW / BASE of the medians and the median of the per-repetition ratios; then the
same for the client's CPU time per record (user + system, from the worker), which other work
on a shared machine disturbs less than throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from codec_compare import row  # noqa: E402
from peers.common import RESULT_PREFIX  # noqa: E402
from peers.servers import SERVERS  # noqa: E402

RUNS = [  # (client, api): the produce and the consume of that client and API
    ("trio", "batch"), ("trio", "record"), ("blocking", "batch"), ("blocking", "record"),
]
LABELS = {("trio", "batch"): ("send_batch", "getmany"),
          ("trio", "record"): ("send", "async for"),
          ("blocking", "batch"): ("send_batch", "poll"),
          ("blocking", "record"): ("send", "for record")}


def worker(tree: Path, role: str, params: dict) -> dict:
    """One measured role of the peer harness, with ``tree``'s Python."""
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "python"), "-m", "peers.worker", "sluice", role,
         json.dumps(params)],
        capture_output=True, text=True, cwd=HERE, timeout=600,
        env={**os.environ, "PYTHONPATH": str(HERE), "PYTHONHASHSEED": "0"},
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{tree} {role} failed: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", default=",".join(f"{c}-{a}" for c, a in RUNS),
                        help="which to measure: CLIENT-API pairs, comma-separated")
    args = parser.parse_args()
    runs = [tuple(r.split("-")) for r in args.runs.split(",")]
    if not set(runs) <= set(RUNS):
        parser.error(f"--runs: choose from {', '.join(f'{c}-{a}' for c, a in RUNS)}")
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    measures = [(mode, run) for run in runs for mode in ("produce", "consume")]
    rates: dict = {(name, m): [] for name in trees for m in measures}
    cpus: dict = {(name, m): [] for name in trees for m in measures}
    with tempfile.TemporaryDirectory() as data:
        server = SERVERS["sluice"](Path(data))
        server.start()
        try:
            for rep in range(args.reps):
                order = ("base", "new") if rep % 2 == 0 else ("new", "base")
                for run in runs:
                    for name in order:
                        client, api = run
                        params = {"address": server.address, "server_pid": server.pid,
                                  "topic": f"cmp-{name}-{client}-{api}-{rep}", "acks": 1,
                                  "records": args.records, "value_size": 100, "api": api,
                                  "delete": True}
                        if client == "blocking":
                            params["client"] = "blocking"
                        for mode in ("produce", "consume"):
                            result = worker(trees[name], mode, params)
                            rates[name, (mode, run)].append(result["records_per_s"])
                            cpus[name, (mode, run)].append(
                                result["client_cpu_s"] / args.records * 1e6)
                            print(f"rep {rep + 1} {name} {client} {mode} {api}: "
                                  f"{result['records_per_s']:,.0f} records/s, "
                                  f"{cpus[name, (mode, run)][-1]:.2f} us CPU/record",
                                  file=sys.stderr, flush=True)
        finally:
            server.stop()
    for title, table, fmt, higher_is_better in (
        (f"{args.records:,} records of 100 B: records/s", rates, "{:,.0f}", True),
        ("client CPU per record (us)", cpus, "{:.2f}", False),
    ):
        ratio = "new / base" if higher_is_better else "base / new"
        print(f"| {title} | base | new | {ratio} (medians) | {ratio} (median of pairs) |")
        print("|---|---|---|---|---|")
        for mode, run in measures:
            label = LABELS[run][mode == "consume"]
            print(row((mode, None, f"{run[0]} {label}"), table["base", (mode, run)],
                      table["new", (mode, run)], fmt, higher_is_better))
        print()


if __name__ == "__main__":
    main()
