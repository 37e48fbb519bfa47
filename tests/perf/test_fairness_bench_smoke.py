"""The fairness benchmark keeps working: its quick mode runs and reports every figure.

No timing assertion: a test asserts behaviour, the benchmark reports speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("fairness_bench.py")


def test_quick_fairness_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "loaded / quiet e2e p99" in result.stdout
    report = json.loads(out.read_text())["this checkout"]
    assert {"quiet e2e p99 ms", "loaded e2e p99 ms", "heavy producer MiB/s"} <= set(report)
    assert all(v > 0 for values in report.values() for v in values)
