"""The ``sluice`` command line against a real broker."""

from __future__ import annotations

import json
import subprocess

import pytest
import trio

from tests.e2e.cli_helpers import sluice
from tests.e2e.conftest import SLUICE
from tests.processes import subprocess_env


async def test_topics_produce_tail_roundtrip(cli_env):
    await sluice("topics", "create", "lines", "--partitions", "1", env=cli_env)
    listed = await sluice("topics", "list", env=cli_env)
    assert listed.stdout.split() == [b"lines"]
    lines = [f"line {i} ünïcode".encode() for i in range(50)]
    await sluice("produce", "lines", "--acks", "all", "--header", "src=test",
                 env=cli_env, stdin=b"\n".join(lines) + b"\n")
    tailed = await sluice("tail", "lines", "--from-beginning", "-n", "50", env=cli_env)
    assert tailed.stdout.splitlines() == lines
    described = await sluice("topics", "describe", "lines", env=cli_env)
    assert b" 50 " in described.stdout
    as_json = await sluice("tail", "lines", "--offset", "49", "--format", "json", env=cli_env)
    record = json.loads(as_json.stdout)
    assert (record["offset"], record["value"], record["headers"]) == (
        49, "line 49 ünïcode", [["src", "test"]]
    )


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_produce_compressed_then_tail(cli_env, broker, codec):
    lines = [b"compressed %d %s" % (i, codec.encode()) for i in range(200)]
    await sluice("topics", "create", codec, env=cli_env)
    await sluice("produce", codec, "--compression", codec, "--acks", "all", env=cli_env,
                 stdin=b"\n".join(lines) + b"\n")
    tailed = await sluice("tail", codec, "--from-beginning", "-n", "200", env=cli_env)
    assert tailed.stdout.splitlines() == lines
    # The broker stored the batch as sent: compressed (bits 0-2 of the attributes).
    stored = next((broker.data_dir / f"{codec}-0").glob("*.log")).read_bytes()
    assert stored[16] == 2 and stored[22] & 0x07 == {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec]


async def test_perf_produce_compressed(cli_env):
    result = await sluice("perf", "produce", "--records", "20000", "--compression", "lz4",
                          env=cli_env)
    assert "produce: 20,000 records" in result.stdout.decode()
    assert "compression=lz4" in result.stdout.decode()
    bad = await sluice("produce", "x", "--compression", "brotli", env=cli_env, check=False)
    assert bad.returncode == 2 and b"invalid choice: 'brotli'" in bad.stderr


async def test_perf_e2e_reports_every_record_and_its_latency(cli_env):
    result = await sluice("perf", "e2e", "--rate", "2000", "--records", "300", env=cli_env)
    line = result.stdout.decode().strip().splitlines()[-1]
    assert line.startswith("e2e: 300 records in "), line
    assert "latency p50 " in line and " ms, p99 " in line and "rate=2000/s, acks=1" in line


async def test_tail_follow_shows_new_record(cli_env):
    await sluice("topics", "create", "live", env=cli_env)
    tail = await trio.lowlevel.open_process(
        [*SLUICE, "tail", "live", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env,
    )
    try:
        # tail -f starts at the end, so produce until it shows up (no sleeps: it either
        # prints the record produced after it is ready, or the next one).
        got = b""
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                async def keep_producing():
                    for i in range(1000):
                        await sluice("produce", "live", env=cli_env, stdin=b"hello %d\n" % i)
                        if got:
                            return

                nursery.start_soon(keep_producing)
                got = await tail.stdout.receive_some(1000)
                nursery.cancel_scope.cancel()
        assert got.startswith(b"hello ")
    finally:
        tail.kill()
        await tail.wait()


async def test_tail_into_closed_pipe_exits_cleanly(cli_env, broker):
    await sluice("topics", "create", "many", env=cli_env)
    payload = b"".join(b"%05d %s\n" % (i, b"x" * 100) for i in range(5000))
    await sluice("produce", "many", env=cli_env, stdin=payload)
    command = " ".join([*SLUICE, "tail", "many", "--from-beginning"])
    with trio.fail_after(30):
        result = await trio.run_process(
            ["bash", "-c", f"{command} | head -1; echo status=${{PIPESTATUS[0]}} >&2"],
            capture_stdout=True, capture_stderr=True, env=cli_env,
        )
    assert result.stdout == b"00000 " + b"x" * 100 + b"\n"
    assert b"Traceback" not in result.stderr
    assert b"status=0" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "no-such-topic"],
        ["produce", "no-such-topic"],
        ["topics", "describe", "no-such-topic"],
        ["topics", "create", "bad/name"],
        ["tail", "x", "--bogus-flag"],
        ["topics", "list", "--bootstrap", "127.0.0.1:1"],
        ["topics", "list", "--bootstrap", "nonsense"],
    ],
)
async def test_user_errors_are_one_line(cli_env, args):
    result = await sluice(*args, env=cli_env, stdin=b"x\n", check=False)
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert "Traceback" not in lines[0]


async def test_a_bootstrap_list_is_tried_in_turn(cli_env, broker):
    """``--bootstrap`` takes a comma-separated list: an address nothing listens on first,
    then the broker's."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    dead = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    bootstrap = f"127.0.0.1:{dead},{broker.bootstrap}"
    await sluice("topics", "create", "listed", "--bootstrap", bootstrap, env=cli_env)
    result = await sluice("topics", "list", "--bootstrap", bootstrap, env=cli_env)
    assert b"listed" in result.stdout


async def test_help_has_examples(cli_env):
    for command in (["topics"], ["produce"], ["tail"], ["perf"], ["broker"]):
        result = await sluice(*command, "--help", env=subprocess_env())
        assert b"examples:" in result.stdout
