"""The Kafka clients benchmark keeps working: its quick mode starts a broker, runs every client
(Sluice's through the Sluice port, confluent-kafka and kafka-python through the Kafka port),
prints the table and the ratios, writes the JSON, and loses no record.

No timing assertion: a test asserts behaviour, the benchmark reports speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("kafka_clients_bench.py")
CLIENTS = ["sluice send_batch", "sluice send", "confluent-kafka", "kafka-python"]


def test_quick_kafka_clients_bench_reports_every_client(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), "--tmp-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| figure | " + " | ".join(CLIENTS) + " |" in result.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == []
    for client in CLIENTS:
        figures = report["figures"][client]
        assert figures["records lost, duplicated or unacknowledged"] == [0]
        assert all(len(figures[f]) == 1 and figures[f][0] > 0 for f in
                   ("produce records/s", "produce MB/s", "consume records/s", "consume MB/s"))
    assert set(report["ratios"]) == {
        f"{kafka} / {sluice}: {figure}" for kafka in CLIENTS[2:] for sluice in CLIENTS[:2]
        for figure in ("produce records/s", "consume records/s")}
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # the data dir is gone
