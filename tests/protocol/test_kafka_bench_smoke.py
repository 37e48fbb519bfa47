"""The Kafka codec benchmark's --quick mode runs and prints every line (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "perf" / "kafka_codec_bench.py"


def test_quick_benchmark_prints_its_table():
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    table, _, figures = out.partition("\n{")
    assert table.startswith("| operation | Sluice (us) | kafka-python (us) |")
    results = json.loads("{" + figures)
    operations = [line["operation"] for line in results["lines"]]
    assert "decode Produce v8 request, 10 partitions, 1 KiB each" in operations
    assert "encode Fetch v11 response, 10 partitions (FileSlices)" in operations
    assert all(line["sluice"] > 0 for line in results["lines"])
    assert len(table.splitlines()) == 2 + len(operations)
