"""Smoke test of the peer comparison: ``compare.py --quick`` runs end to end against a broker
it starts itself, prints the markdown table, writes the JSON, and loses no record.
No timing assertions: the figures themselves are not checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

COMPARE = Path(__file__).resolve().parent / "compare.py"


def test_quick_comparison_produces_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--json", str(out), "--tmp-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    assert ("| figure | sluice acks=1 | sluice acks=all | sluice blocking acks=1 "
            "| sluice blocking acks=all |") in table
    for figure in ("produce records/s", "consume records/s", "e2e p99 ms",
                   "raw fetch MB/s", "records lost or duplicated", "loopback sendfile MB/s",
                   "produce per-record send records/s", "consume per-record records/s",
                   "e2e p99 ms, linger 5 ms"):
        assert figure in table, figure
    assert "sluice blocking acks=all / sluice acks=all: e2e p99 ms" in table

    data = json.loads(out.read_text())
    assert data["errors"] == []
    assert data["meta"]["records"] == 20_000
    for column in ("sluice acks=1", "sluice acks=all"):
        figures = data["figures"][column]
        assert figures["produce failed sends"] == [0]
        assert len(figures["produce records/s"]) == 1
    for column in ("sluice acks=1", "sluice acks=all", "sluice blocking acks=1",
                   "sluice blocking acks=all"):
        figures = data["figures"][column]
        assert figures["records lost or duplicated"] == [0]
        assert figures["produce per-record failed sends"] == [0]
    lost = [t for t in data["targets"] if t["target"].startswith("records lost")]
    assert lost and lost[0]["status"] == "met"
    # nothing left behind in the temp dir but the JSON
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]
