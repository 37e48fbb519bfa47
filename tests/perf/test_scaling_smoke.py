"""Smoke test of the scaling figures: ``scaling.py --quick`` starts its own brokers, prints the
four markdown tables and writes the JSON. No timing assertions: the figures are not checked,
only that every step produced them and no record went missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCALING = Path(__file__).resolve().parent / "scaling.py"


def test_quick_scaling_prints_tables_and_json(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(SCALING), "--quick", "--json", str(out), "--tmp-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    for heading in ("### Partitions", "### Concurrency", "### Record size", "### Log size"):
        assert heading in table, heading
    for header in ("| partitions | produce records/s | consume records/s |",
                   "| processes | aggregate records/s |",
                   "| value size | records | produce records/s | produce MB/s |",
                   "| log | reader | page cache before read | MB/s |"):
        assert header in table, header
    assert "error:" not in table

    data = json.loads(out.read_text())
    assert data["errors"] == []
    assert data["meta"]["quick"] is True
    sections = data["sections"]
    assert set(sections["partitions"]) == {"1", "4"}
    assert set(sections["concurrency"]) == {"1 producers", "1 consumers",
                                            "2 producers", "2 consumers"}
    assert set(sections["record_size"]) == {"100 B", "10 KiB"}
    assert len(sections["log_size"]) == 6
    for rows in sections.values():
        for figures in rows.values():
            for values in figures.values():
                assert len(values) == 1  # one repetition each
    for row in sections["partitions"].values():
        assert row["broker VmRSS MiB after"][0] > 0
    reads = {row: figs["records read"][0] for row, figs in sections["log_size"].items()}
    assert all(n > 0 for n in reads.values()), reads
    # the brokers' data dirs are gone: only the JSON is left
    assert [p.name for p in tmp_path.iterdir()] == ["scaling.json"]
