"""Ctrl-C (SIGINT) and SIGTERM stop every long-running ``sluice`` command alike: it delivers
what it accepted, leaves its group, and exits 130 or 143; nothing waits forever silently."""

from __future__ import annotations

import signal

import pytest
import trio
from sluice.client import Admin

from tests.e2e.cli_helpers import RUN_TIMEOUT_S, finish, read_line, sluice, start

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_interactive_produce_stops_on_a_signal(cli_env, signum):
    await sluice("topics", "create", "typed", env=cli_env)
    process = await start("produce", "typed", "--print-offsets", env=cli_env)
    # One line typed, and the input left open: the record is delivered before the next line
    # is read (its offset is printed), then the command waits for input.
    await process.stdin.send_all(b"first line\n")
    assert await read_line(process.stdout) == b"typed 0 0"
    process.send_signal(signum)
    code, stderr = await finish(process)
    assert code == EXIT[signum], stderr
    assert stderr.decode().strip() == "sluice produce: 1 record(s) produced to typed"
    tailed = await sluice("tail", "typed", "--from-beginning", env=cli_env)
    assert tailed.stdout == b"first line\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_tail_group_follow_leaves_the_group_on_a_signal(cli_env, broker, signum):
    await sluice("topics", "create", "events", "--partitions", "2", env=cli_env)
    process = await start("tail", "events", "--group", "watchers", "-f", env=cli_env)
    # A new group: it says where it starts, once it is a member.
    notice = await read_line(process.stderr)
    assert notice == (b"sluice tail: group watchers has no committed offset for events "
                      b"partition(s) 0, 1: starting at the end, with new records "
                      b"(--from-beginning: at the first record)")
    process.send_signal(signum)
    code, stderr = await finish(process)
    assert code == EXIT[signum], stderr
    # It left: the group has no members right away (not after a 10 s session timeout).
    async with Admin(broker.bootstrap) as admin:
        assert (await admin.describe_group("watchers")).members == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_tail_follow_stops_on_a_signal(cli_env, signum):
    await sluice("topics", "create", "live", env=cli_env)
    await sluice("produce", "live", env=cli_env, stdin=b"old\n")
    process = await start("tail", "live", "-f", env=cli_env)
    assert await read_line(process.stdout) == b"old"  # the last records, then it follows
    await sluice("produce", "live", env=cli_env, stdin=b"new\n")
    assert await read_line(process.stdout) == b"new"
    process.send_signal(signum)
    code, stderr = await finish(process)
    assert code == EXIT[signum], stderr
    assert stderr == b""


async def test_perf_consume_reads_what_the_topic_holds_instead_of_waiting(cli_env):
    await sluice("topics", "create", "few", env=cli_env)
    await sluice("produce", "few", env=cli_env,
                 stdin=b"".join(b"%d\n" % i for i in range(50)))
    result = await sluice("perf", "consume", "--topic", "few", "--records", "100", env=cli_env)
    assert result.stderr.decode().strip() == (
        "sluice perf consume: few holds 50 records, fewer than --records 100: reading those")
    assert result.stdout.decode().startswith("consume: 50 records in ")


async def test_perf_consume_of_an_empty_topic_says_so(cli_env):
    await sluice("topics", "create", "empty", env=cli_env)
    result = await sluice("perf", "consume", "--topic", "empty", env=cli_env, check=False)
    assert result.returncode == 1
    assert b"empty holds no records" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_perf_stops_on_a_signal(cli_env, signum):
    process = await start("perf", "e2e", "--rate", "100", "--records", "1000000", env=cli_env)
    # It runs once it has created its topic (its signal handlers are in place by then).
    async with Admin(cli_env["SLUICE_BOOTSTRAP"]) as admin:
        with trio.fail_after(RUN_TIMEOUT_S):
            while "perf" not in await admin.list_topics():
                assert process.poll() is None, "perf ended before it started"
                await trio.sleep(0.01)
    process.send_signal(signum)
    code, stderr = await finish(process)
    assert code == EXIT[signum], stderr
    assert b"Traceback" not in stderr

