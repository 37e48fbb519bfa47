"""``sluice topics`` and ``sluice groups`` against a real broker: listings that say when they
are empty, topic alteration, group deletion and offset reset (dry run first), one-line errors,
``--version``, ``--timeout``."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import trio
from sluice.client import Admin, Consumer, Producer

from tests.e2e.cli_helpers import sluice
from tests.processes import subprocess_env


async def test_empty_listings_say_so_on_stderr(cli_env):
    topics = await sluice("topics", "list", env=cli_env)
    assert (topics.stdout, topics.stderr) == (b"", b"sluice topics list: no topics\n")
    groups = await sluice("groups", "list", env=cli_env)
    assert (groups.stdout, groups.stderr) == (b"", b"sluice groups list: no consumer groups\n")


async def test_topics_list_long_form(cli_env):
    await sluice("topics", "create", "b", "--partitions", "2", "--config",
                 "retention_ms=3600000", env=cli_env)
    await sluice("topics", "create", "a", "--config", "retention_ms=-1", "--config",
                 "retention_bytes=1048576", env=cli_env)
    await sluice("produce", "b", env=cli_env, stdin=b"1\n2\n3\n")
    names = await sluice("topics", "list", env=cli_env)
    assert names.stdout == b"a\nb\n"
    long = await sluice("topics", "list", "-l", env=cli_env)
    rows = [line.split(None, 4) for line in long.stdout.decode().splitlines()]
    assert rows[0] == ["TOPIC", "PARTITIONS", "RECORDS", "BYTES", "RETENTION"]
    assert [row[:3] for row in rows[1:]] == [["a", "1", "0"], ["b", "2", "3"]]
    assert [row[4] for row in rows[1:]] == ["1,048,576 bytes", "1h"]
    assert int(rows[2][3]) > 0


async def test_describe_names_the_partition_count_once(cli_env):
    await sluice("topics", "create", "d", "--partitions", "3", env=cli_env)
    described = await sluice("topics", "describe", "d", env=cli_env)
    assert described.stdout.count(b"partitions=") == 1


async def test_alter_adds_partitions_and_sets_configs(cli_env):
    await sluice("topics", "create", "t", "--partitions", "2", env=cli_env)
    result = await sluice("topics", "alter", "t", "--partitions", "4", "--config",
                          "retention_ms=3600000", env=cli_env)
    assert result.stdout == b"altered topic t: partitions 2 -> 4, retention_ms=3600000\n"
    described = (await sluice("topics", "describe", "t", env=cli_env)).stdout.decode()
    assert "partitions=4" in described and "retention_ms=3600000" in described
    await sluice("produce", "t", "--partition", "3", env=cli_env, stdin=b"in the new one\n")
    tailed = await sluice("tail", "t", "--partition", "3", env=cli_env)
    assert tailed.stdout == b"in the new one\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--partitions", "1"], 1, "sluice topics alter: topic 't' has 2 partitions; they can "
         "be added, not removed"),
        (["--config", "retention=5"], 1, "unknown config key(s) retention"),
        (["--config", "retention_ms=soon"], 2, "retention_ms: value must be an integer"),
        ([], 2, "nothing to change: give --partitions N and/or --config KEY=VALUE"),
    ],
)
async def test_bad_alterations_are_one_line(cli_env, args, code, message):
    await sluice("topics", "create", "t", "--partitions", "2", env=cli_env)
    result = await sluice("topics", "alter", "t", *args, env=cli_env, check=False)
    assert result.returncode == code
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


async def commit(bootstrap: str, group: str, offsets: dict) -> None:
    async with Admin(bootstrap) as admin:
        await admin.alter_group_offsets(group, offsets)


async def committed(cli_env, group: str) -> list[tuple[str, str, str]]:
    described = await sluice("groups", "describe", group, env=cli_env)
    rows = [line.split() for line in described.stdout.decode().splitlines()[2:]]
    return [(r[0], r[1], r[2]) for r in rows if len(r) == 6]


async def test_reset_offsets_is_a_dry_run_until_executed(cli_env, broker):
    await sluice("topics", "create", "r", "--partitions", "2", env=cli_env)
    # One batch per record: time lookups are per batch.
    async with Producer(broker.bootstrap, acks="all") as producer:
        for i in range(10):
            await producer.send("r", b"%d" % i, partition=i % 2, timestamp=1000 * (i + 1))
            await producer.flush()
    await commit(broker.bootstrap, "g", {("r", 0): 3, ("r", 1): 4})
    dry = await sluice("groups", "reset-offsets", "g", "--topic", "r", "--to-earliest",
                       env=cli_env)
    assert [line.split() for line in dry.stdout.decode().splitlines()] == [
        ["TOPIC", "PARTITION", "CURRENT", "NEW"], ["r", "0", "3", "0"], ["r", "1", "4", "0"]]
    assert dry.stderr == (b"dry run: nothing was changed; run again with --execute to commit "
                          b"these offsets\n")
    assert await committed(cli_env, "g") == [("r", "0", "3"), ("r", "1", "4")]
    cases = [
        (["--to-earliest"], ["0", "0"]),
        (["--to-latest"], ["5", "5"]),
        (["--to-offset", "2"], ["2", "2"]),
        (["--to-offset", "99"], ["5", "5"]),  # beyond the log: its end
        (["--to-datetime", "7000"], ["3", "3"]),  # the records of 7000 and 8000 ms
        (["--to-datetime", "1970-01-01T00:00:09.500Z"], ["5", "4"]),  # none in p0: its end
    ]
    for to, expected in cases:
        await sluice("groups", "reset-offsets", "g", "--all-topics", *to, "--execute",
                     env=cli_env)
        assert [c[2] for c in await committed(cli_env, "g")] == expected, to
    only = await sluice("groups", "reset-offsets", "g", "--topic", "r:1", "--to-offset", "1",
                        "--execute", env=cli_env)
    assert only.stdout.decode().splitlines()[-1] == "committed the new offsets of group g"
    assert [c[2] for c in await committed(cli_env, "g")] == ["5", "1"]


async def test_reset_offsets_refuses_a_group_with_members(cli_env, broker):
    await sluice("topics", "create", "busy", env=cli_env)
    async with Consumer(broker.bootstrap, group_id="live", topics=["busy"]):
        result = await sluice("groups", "reset-offsets", "live", "--topic", "busy",
                              "--to-earliest", "--execute", env=cli_env, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "sluice groups reset-offsets: group live has 1 member(s): its offsets can be reset "
        "only while it has none (stop its consumers first)")


async def test_reset_offsets_of_a_new_group_and_bad_partitions(cli_env):
    await sluice("topics", "create", "fresh", "--partitions", "2", env=cli_env)
    await sluice("groups", "reset-offsets", "newgroup", "--topic", "fresh", "--to-latest",
                 "--execute", env=cli_env)
    assert await committed(cli_env, "newgroup") == [("fresh", "0", "0"), ("fresh", "1", "0")]
    bad = await sluice("groups", "reset-offsets", "newgroup", "--topic", "fresh:5",
                       "--to-latest", env=cli_env, check=False)
    assert (bad.returncode, bad.stderr.decode().strip()) == (
        1, "sluice groups reset-offsets: fresh has partitions 0..1, not 5")


async def test_groups_delete(cli_env, broker):
    await sluice("topics", "create", "d", env=cli_env)
    await commit(broker.bootstrap, "old", {("d", 0): 0})
    deleted = await sluice("groups", "delete", "old", env=cli_env)
    assert deleted.stdout == b"deleted group old\n"
    missing = await sluice("groups", "delete", "old", env=cli_env, check=False)
    assert (missing.returncode, missing.stderr) == (1, b"sluice groups delete: no group 'old'\n")
    described = await sluice("groups", "describe", "old", env=cli_env, check=False)
    assert described.stderr == b"sluice groups describe: no group 'old'\n"
    async with Consumer(broker.bootstrap, group_id="live", topics=["d"]):
        busy = await sluice("groups", "delete", "live", env=cli_env, check=False)
    assert busy.returncode == 1
    assert busy.stderr == (b"sluice groups delete: group 'live' has 1 member(s); stop them "
                           b"first\n")


@pytest.mark.parametrize("args", [["tail", "x"], ["produce", "x"], ["topics", "describe", "x"],
                                  ["topics", "alter", "x", "--partitions", "2"]])
async def test_an_unknown_topic_is_named_alike_everywhere(cli_env, args):
    result = await sluice(*args, env=cli_env, stdin=b"v\n", check=False)
    assert result.returncode == 1
    assert result.stderr.decode().endswith(": unknown topic 'x'\n"), result.stderr


async def test_version():
    result = await sluice("--version", env=subprocess_env())
    assert result.stdout.decode().startswith("sluice ")
    assert result.stdout.split()[1][:1].isdigit()


# -- the request timeout ---------------------------------------------------------------------


async def test_timeout_gives_up_on_a_broker_that_never_answers():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel does) and never answers
        env = subprocess_env(SLUICE_BOOTSTRAP=f"127.0.0.1:{silent.getsockname()[1]}")
        with trio.fail_after(20):
            result = await sluice("topics", "list", "--timeout", "1", env=env, check=False)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sluice topics list: "), lines
    assert "time" in lines[0], lines  # says it timed out


def test_every_broker_command_has_the_timeout_flag():
    from sluice.client.cli_parser import build_parser

    leaves = [["topics", a] for a in ("create", "list", "describe", "alter", "delete")]
    leaves += [["groups", a] for a in ("list", "describe", "delete", "reset-offsets")]
    leaves += [["produce"], ["tail"]] + [["perf", m] for m in ("produce", "consume", "e2e")]
    for words in leaves:
        result = subprocess.run([sys.executable, "-m", "sluice.client.cli", *words, "--help"],
                                capture_output=True, text=True, env=subprocess_env(), timeout=30)
        assert "--timeout SECONDS" in result.stdout, words
        assert "--bootstrap HOST:PORT" in result.stdout, words
    args = build_parser(["tail"]).parse_args(["tail", "t", "--timeout", "2.5"])
    from sluice.client.cli_parser import client_options

    assert client_options(args) == {"request_timeout_ms": 2500}
