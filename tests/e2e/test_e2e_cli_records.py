"""``sluice produce`` and ``sluice tail`` against a real broker: binary-safe input modes,
lossless JSON both ways, kcat-like format strings, what ``-n`` means, strict input checks."""

from __future__ import annotations

import base64
import json

import pytest

from tests.e2e.cli_helpers import sluice

BINARY = b"\xff\x00line\nwith newline\r\n\x80"


async def topic(env, name: str, partitions: int = 1) -> None:
    await sluice("topics", "create", name, "--partitions", str(partitions), env=env)


async def tail_json(env, name: str, *args: str) -> list[dict]:
    result = await sluice("tail", name, "--from-beginning", "--format", "json", *args, env=env)
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_json_is_lossless_for_bytes_and_repeated_headers(cli_env):
    await topic(cli_env, "j")
    await sluice("produce", "j", "--whole", "--key", "k", "--header", "h=1", "--header", "h=2",
                 env=cli_env, stdin=BINARY)
    await sluice("produce", "j", env=cli_env, stdin=b"base64:/w==\n")
    binary, text = await tail_json(cli_env, "j")
    # Bytes that are not UTF-8 are an object; a string is always exactly its UTF-8 bytes.
    assert binary["value"] == {"base64": base64.b64encode(BINARY).decode()}
    assert text["value"] == "base64:/w=="
    assert binary["key"] == "k" and text["key"] is None
    assert binary["headers"] == [["h", "1"], ["h", "2"]]
    assert binary["time"].endswith("Z") and isinstance(binary["timestamp"], int)


async def test_json_output_produced_back_is_the_same_records(cli_env):
    await topic(cli_env, "src", 2)
    await topic(cli_env, "copy", 2)
    await sluice("produce", "src", "--whole", "--partition", "1", "--header", "a=x",
                 env=cli_env, stdin=BINARY)
    await sluice("produce", "src", "--key-separator", ":", "--partition", "0",
                 "--timestamp", "1700000000000", env=cli_env, stdin=b"alice:paid\n")
    exported = await sluice("tail", "src", "--from-beginning", "--format", "json", env=cli_env)
    await sluice("produce", "copy", "--format", "json", env=cli_env, stdin=exported.stdout)

    def essence(records):
        return sorted((r["partition"], r["timestamp"], json.dumps(r["key"]),
                       json.dumps(r["value"]), json.dumps(r["headers"])) for r in records)

    copied = await tail_json(cli_env, "copy")
    assert essence(copied) == essence(await tail_json(cli_env, "src"))
    assert {r["timestamp"] for r in copied} >= {1700000000000}


async def test_bad_json_input_stops_with_the_record_named(cli_env):
    await topic(cli_env, "j")
    result = await sluice("produce", "j", "--format", "json", env=cli_env, check=False,
                          stdin=b'{"value": "ok"}\n{"value": {"hex": "ff"}}\n{"value": "x"}\n')
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "sluice produce: 1 record(s) produced to j",
        "sluice produce: record 2: value must be a string, {\"base64\": \"...\"} or null, "
        "got {'hex': 'ff'}",
    ]


async def test_format_string_like_kcat(cli_env):
    await topic(cli_env, "f")
    await sluice("produce", "f", "--key-separator", "=", "--header", "src=cli",
                 "--timestamp", "2024-05-01T12:00:00Z", env=cli_env, stdin=b"k=v\n")
    await sluice("produce", "f", "--timestamp", "1714564801000", env=cli_env, stdin=b"nokey\n")
    result = await sluice("tail", "f", "--from-beginning", "--format",
                          r"%t %p:%o %T %D [%k] %K %s %S %h 100%%\n", env=cli_env)
    assert result.stdout.decode().splitlines() == [
        "f 0:0 1714564800000 2024-05-01T12:00:00.000Z [k] 1 v 1 src=cli 100%",
        "f 0:1 1714564801000 2024-05-01T12:00:01.000Z [] -1 nokey 5  100%",
    ]


@pytest.mark.parametrize(
    ("fmt", "message"),
    [("%q", "unknown field %q"), ("plain", "must be text, json or a format string"),
     (r"%s\q", r"unknown escape \q")],
)
async def test_bad_format_is_a_usage_error(cli_env, fmt, message):
    await topic(cli_env, "f")
    result = await sluice("tail", "f", "--format", fmt, env=cli_env, check=False)
    assert result.returncode == 2
    assert message in result.stderr.decode() and len(result.stderr.splitlines()) == 1


async def test_n_is_the_number_of_records_the_newest_across_partitions(cli_env):
    await topic(cli_env, "n", 3)
    rows = [(p, ts) for p, stamps in ((0, (1000, 4000)), (1, (2000, 5000)), (2, (3000, 6000)))
            for ts in stamps]
    lines = b"".join(
        json.dumps({"partition": p, "timestamp": ts, "value": str(ts)}).encode() + b"\n"
        for p, ts in rows)
    await sluice("produce", "n", "--format", "json", env=cli_env, stdin=lines)
    last = await sluice("tail", "n", "-n", "3", env=cli_env)
    assert last.stdout == b"4000\n5000\n6000\n"  # 3 records, oldest first, not 3 per partition
    default = await sluice("tail", "n", env=cli_env)
    assert default.stdout.split() == [b"1000", b"2000", b"3000", b"4000", b"5000", b"6000"]
    first = await sluice("tail", "n", "--from-beginning", "-n", "2", "--partition", "1",
                         env=cli_env)
    assert first.stdout == b"2000\n5000\n"
    nothing = await sluice("tail", "n", "-n", "0", env=cli_env)
    assert nothing.stdout == b""


async def test_since_before_1970_starts_at_the_first_record(cli_env):
    await topic(cli_env, "old")
    await sluice("produce", "old", env=cli_env, stdin=b"a\nb\n")
    result = await sluice("tail", "old", "--since", "1969-12-31T23:59:59.999Z", env=cli_env)
    assert result.stdout == b"a\nb\n"


async def test_null_delimited_and_whole_input_keep_every_byte(cli_env):
    await topic(cli_env, "bin")
    await sluice("produce", "bin", "-0", env=cli_env, stdin=b"one\nline\r\n\0two\0")
    await sluice("produce", "bin", "--delimiter", r"\r\n", env=cli_env, stdin=b"x\ny\r\nz")
    await sluice("produce", "bin", "--whole", env=cli_env, stdin=BINARY)
    values = [r["value"] for r in await tail_json(cli_env, "bin")]
    assert values == ["one\nline\r\n", "two", "x\ny", "z",
                      {"base64": base64.b64encode(BINARY).decode()}]


async def test_a_trailing_carriage_return_is_kept(cli_env):
    await topic(cli_env, "crlf")
    await sluice("produce", "crlf", env=cli_env, stdin=b"dos\r\nunix\n")
    assert [r["value"] for r in await tail_json(cli_env, "crlf")] == ["dos\r", "unix"]


async def test_produce_prints_the_count_and_offsets(cli_env):
    await topic(cli_env, "o", 2)
    result = await sluice("produce", "o", "--partition", "1", "--print-offsets", env=cli_env,
                          stdin=b"a\nb\nc\n")
    assert result.stdout == b"o 1 0\no 1 1\no 1 2\n"
    assert result.stderr == b"sluice produce: 3 record(s) produced to o\n"
    quiet = await sluice("produce", "o", "-q", env=cli_env, stdin=b"d\n")
    assert quiet.stderr == b"" and quiet.stdout == b""


async def test_a_record_without_the_key_separator_stops_the_input_clearly(cli_env):
    await topic(cli_env, "keys")
    result = await sluice("produce", "keys", "--key-separator", ":", env=cli_env, check=False,
                          stdin=b"a:1\nb:2\nno separator\nc:3\n")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "sluice produce: 2 record(s) produced to keys",
        "sluice produce: record 3 has no key separator ':': the records before it were "
        "produced; it and the rest of the input were not",
    ]
    stored = await tail_json(cli_env, "keys")
    assert [(r["key"], r["value"]) for r in stored] == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tail", "t", "--offset", "-5"], "argument --offset: must be an integer >= 0, got '-5'"),
        (["tail", "t", "-n", "-1"], "argument -n: must be an integer >= 0, got '-1'"),
        (["tail", "t", "--partition", "-1"], "argument --partition: must be an integer >= 0"),
        (["tail", "t", "--from-beginning", "-n", "5", "-f"], "-f never stops"),
        (["tail", "t", "--since", "yesterday"], "cannot read the time 'yesterday'"),
        (["produce", "t", "--key-separator", ""], "argument --key-separator: must not be empty"),
        (["produce", "t", "--delimiter", ""], "argument --delimiter: must not be empty"),
        (["produce", "t", "--acks", "0", "--print-offsets"], "needs acknowledgements"),
        (["produce", "t", "--format", "json", "--key-separator", ":"], "the object's \"key\""),
        (["produce", "t", "--timestamp", "1969-01-01T00:00:00Z"], "is before 1970"),
        (["produce", "t", "--timestamp", "9" * 20], "is beyond the largest timestamp"),
        (["produce", "t", "--whole", "-0"], "not allowed with argument"),
        (["perf", "consume", "--records", "0"], "argument --records: must be an integer >= 1"),
    ],
)
async def test_strict_input_checks(cli_env, args, message):
    await topic(cli_env, "t")
    result = await sluice(*args, env=cli_env, stdin=b"x\n", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert (await sluice("tail", "t", "--from-beginning", env=cli_env)).stdout == b""


async def test_a_partition_beyond_the_topic_is_named(cli_env):
    await topic(cli_env, "p", 2)
    for args in (["tail", "p", "--partition", "2"], ["produce", "p", "--partition", "2"]):
        result = await sluice(*args, env=cli_env, stdin=b"x\n", check=False)
        assert result.returncode == 1
        assert "p has partitions 0..1, not 2" in result.stderr.decode()
