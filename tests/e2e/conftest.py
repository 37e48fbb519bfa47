"""End-to-end fixtures: real broker processes (``python -m sluice.broker``) on 127.0.0.1.

``broker`` starts one on a free port in a temporary data dir and parses ``listening on``;
``BrokerProcess.kill`` is kill -9 and ``start`` can bring it back on the same port and dir.
"""

from __future__ import annotations

import sys

import pytest

from tests.processes import BrokerProcess, subprocess_env


@pytest.fixture
def broker(tmp_path):
    process = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def cli_env(broker):
    """Environment for ``sluice`` subprocesses aimed at the test broker."""
    return subprocess_env(SLUICE_BOOTSTRAP=broker.bootstrap)


SLUICE = [sys.executable, "-m", "sluice.client.cli"]
