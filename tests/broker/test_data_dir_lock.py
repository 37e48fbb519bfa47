"""One broker per data directory: a second one is refused before it touches anything.

Two brokers on one directory used to both start and acknowledge writes; the log ended with
two batches at one offset, and stopping the second wrote a clean-shutdown marker under the
live first one. Real broker processes, as an operator would start them.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.processes import REPO, BrokerProcess, subprocess_env


def start_second(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sluice.broker", "--data-dir", str(data_dir), "--port", "0"],
        capture_output=True, text=True, timeout=30, env=subprocess_env(), cwd=REPO,
    )


def test_a_second_broker_on_the_same_data_directory_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    first = BrokerProcess(data_dir, tmp_path / "first.log")
    first.start()
    try:
        before = sorted(os.listdir(data_dir))
        second = start_second(data_dir)
        assert second.returncode == 1
        assert second.stdout == ""  # never listened
        # Its log says which directory it opens; the refusal itself is one line.
        lines = [line for line in second.stderr.strip().splitlines() if not line.startswith("time=")]
        assert len(lines) == 1, second.stderr
        assert str(data_dir.resolve()) in lines[0] and "in use by another broker" in lines[0]
        assert f"pid {first.proc.pid}" in lines[0]
        # It wrote nothing: no clean-shutdown marker under the live broker, no new files.
        assert sorted(os.listdir(data_dir)) == before
        assert ".clean-shutdown" not in before
    finally:
        assert first.stop() == 0
    # The lock goes with its broker: after a clean stop, and after a SIGKILL.
    again = BrokerProcess(data_dir, tmp_path / "again.log")
    again.start()
    again.kill()
    again.start()
    assert again.stop() == 0
