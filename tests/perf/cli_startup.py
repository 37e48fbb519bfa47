"""Start-up time of the ``sluice`` command line against a local broker.

    python tests/perf/cli_startup.py             # 5 runs each, medians (issue 14's rule)
    python tests/perf/cli_startup.py --runs 9 --json

The baseline is ``python -c "import argparse, socket, msgpack"``: an interpreter that loads
what any such tool needs. The target: ``sluice topics list`` (the installed console script,
or ``python -m sluice.client.cli`` without one) in at most 4x the baseline's time, medians
of ``--runs``. Runs alternate between the commands, so a busy machine slows all of them
alike. Other commands are shown for comparison; only ``topics list`` has a target. A broker
(``--in-memory``, port 0) is started for the run and stopped after it.

The commands run as an installed tool runs: with bytecode caches. ``PYTHONDONTWRITEBYTECODE``
is dropped from their environment and each command runs once before the timed runs (without
a ``.pyc``, every start compiles the project's modules from source: ~20 ms for
``protocol.messages`` alone), as the baseline's modules (the standard library, msgpack) come
compiled when installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.processes

from tests.processes import read_announcement  # noqa: E402

TARGET_RATIO = 4.0
BASELINE = [sys.executable, "-c", "import argparse, socket, msgpack"]


def sluice_command() -> list[str]:
    script = Path(sys.executable).with_name("sluice")
    found = str(script) if script.exists() else shutil.which("sluice")
    return [found] if found else [sys.executable, "-m", "sluice.client.cli"]


def start_broker() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.broker", "--in-memory", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    announced = read_announcement(proc.stdout)
    if announced is None:
        proc.kill()
        raise SystemExit("the broker did not start")
    return proc, f"127.0.0.1:{announced.port}"


def measure(commands: dict[str, list[str]], runs: int, env: dict, stdin: bytes) -> dict:
    """Median wall time of each command, in seconds (runs interleaved, after a warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(runs + 1):
        for name, command in commands.items():
            began = time.perf_counter()
            result = subprocess.run(command, env=env, input=stdin, capture_output=True)
            if round_:
                times[name].append(time.perf_counter() - began)
            if result.returncode != 0:
                raise SystemExit(f"{name} failed: {result.stderr.decode().strip()}")
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    broker, address = start_broker()
    try:
        env = {**os.environ, "SLUICE_BOOTSTRAP": address}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        sluice = sluice_command()
        subprocess.run([*sluice, "topics", "create", "bench"], env=env, check=True,
                       capture_output=True)
        subprocess.run([*sluice, "produce", "bench", "-q"], env=env, check=True,
                       input=b"a\nb\nc\n")
        medians = measure({
            "baseline": BASELINE,
            "sluice topics list": [*sluice, "topics", "list"],
            "sluice --help": [*sluice, "--help"],
            "sluice groups list": [*sluice, "groups", "list"],
            "sluice tail bench": [*sluice, "tail", "bench"],
            "echo x | sluice produce bench": [*sluice, "produce", "bench", "-q"],
        }, args.runs, env, b"x\n")
    finally:
        broker.terminate()
        broker.wait()
    base = medians["baseline"]
    print(f"medians of {args.runs} runs; baseline: {' '.join(BASELINE[1:])!r} with {BASELINE[0]}")
    print("| command | median ms | x baseline | target |")
    print("|---|---:|---:|---|")
    for name, seconds in medians.items():
        target = f"<= {TARGET_RATIO:g}x" if name == "sluice topics list" else ""
        print(f"| {name} | {seconds * 1000:.1f} | {seconds / base:.2f} | {target} |")
    ratio = medians["sluice topics list"] / base
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"target {verdict}: sluice topics list at {ratio:.2f}x the baseline")
    if args.json:
        print(json.dumps({"runs": args.runs, "medians_s": medians, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
