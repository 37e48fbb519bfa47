from __future__ import annotations

import pytest
from sluice.broker.storage import FileLog, MemoryLog, TopicConfig


class FakeClock:
    """A settable wall clock in milliseconds."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["file", "memory"])
def make_log(request, tmp_path, clock):
    """``make_log(**config) -> log``: the same suite runs against FileLog and MemoryLog."""
    logs = []

    def factory(**overrides):
        config = TopicConfig(**overrides)
        if request.param == "file":
            log = FileLog.open(tmp_path / f"t-{len(logs)}", config, recovery_point=None, now_ms=clock)
        else:
            log = MemoryLog(config, now_ms=clock)
        logs.append(log)
        return log

    yield factory
    for log in logs:
        log.close()
