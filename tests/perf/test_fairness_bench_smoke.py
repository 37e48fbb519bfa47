"""The fairness benchmark keeps working: its quick mode runs and reports every figure.

No timing assertion: a test asserts behaviour, the benchmark reports speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("fairness_bench.py")


def test_quick_fairness_bench_measures_a_baseline_beside_this_checkout(tmp_path):
    """Both builds run (the baseline from ``git archive`` of a revision) and report every
    figure, side by side."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--baseline", "HEAD", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "loaded / quiet e2e p99" in result.stdout
    reports = json.loads(out.read_text())
    assert len(reports) == 2 and "this checkout" in reports
    for report in reports.values():
        assert {"quiet e2e p99 ms", "loaded e2e p99 ms", "heavy producer MiB/s"} <= set(report)
        assert all(v > 0 for values in report.values() for v in values)
