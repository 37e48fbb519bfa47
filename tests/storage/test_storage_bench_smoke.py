"""The storage benchmark's --quick mode runs and prints its table (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "perf" / "storage_bench.py"


def test_quick_benchmark_prints_its_table(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    table, _, figures = out.partition("\n{")
    assert table.startswith("| measurement | FileLog | baseline | ratio | target |")
    assert "append 64 KiB batches" in table and "unclean open" in table
    results = json.loads("{" + figures)
    assert results["lookup"]["segments"] == [1, 1000]
    assert list(tmp_path.iterdir()) == []
