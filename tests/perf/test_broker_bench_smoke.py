"""The broker benchmark keeps working: its quick mode runs and prints every figure.

No timing assertion: a test asserts behaviour, the benchmark reports speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("broker_bench.py")


def test_quick_broker_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "fetch / loopback sendfile" in result.stdout
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {
        "produce acks=1 / raw append",
        "produce acks=all / raw append+fdatasync",
        "fetch / loopback sendfile",
    }
    assert all(v > 0 for v in report["median"].values())
