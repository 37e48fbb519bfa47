"""The scripts in examples/ run against a real broker and print what they promise."""

import sys
from pathlib import Path

import pytest
import trio

from tests.processes import BrokerProcess, subprocess_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_broker(tmp_path):
    process = BrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    process.start()
    yield process
    process.stop()


async def run_example(name: str, *args: str) -> list[str]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / name), *args],
            capture_stdout=True, capture_stderr=True, env=subprocess_env(), check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


async def test_examples_run(examples_broker):
    bootstrap = ["--bootstrap", examples_broker.bootstrap]
    produced = await run_example("producer.py", *bootstrap, "--count", "6")
    assert len(produced) == 6 and all(line.startswith("greetings[") for line in produced)
    consumed = await run_example("consumer.py", *bootstrap, "--count", "6")
    assert sorted(line.split(": ", 1)[1] for line in consumed) == [f"hello {i}" for i in range(6)]
    shouted = await run_example("pipeline.py", *bootstrap, "--count", "5")
    assert shouted == ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO"]
