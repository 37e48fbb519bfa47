"""Torture suite: quick mode by default; the long mode with ``-m slow`` or SLUICE_TORTURE=long."""

from __future__ import annotations

import pytest

from tests.torture.harness import FIGURES, LONG


def pytest_collection_modifyitems(config, items):
    selected_slow = "slow" in (config.getoption("-m") or "")
    if LONG or selected_slow:
        return
    skip = pytest.mark.skip(reason="long torture mode: run with -m slow or SLUICE_TORTURE=long")
    for item in items:
        if "tests/torture/" in item.nodeid and item.get_closest_marker("slow"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("torture figures")
    for scenario, figures in sorted(FIGURES.items()):
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{scenario}: {shown}")
