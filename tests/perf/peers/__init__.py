"""Helpers of ``tests/perf/compare.py``: server launchers, per-system workers, raw limits.

Each worker runs in its own process (``python -m peers.worker SYSTEM ROLE PARAMS``), so a
figure's client CPU is that process's alone and an end-to-end producer and consumer never
share an interpreter.
"""
