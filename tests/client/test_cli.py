"""The ``sluice`` command line without a broker: output formats, escapes, the parser's help,
and what a short command imports (the fast start: no trio, no broker)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sluice.client.cli_parser import COMMANDS, build_parser
from sluice.client.escapes import unescape
from sluice.client.formats import (
    bytes_from_json,
    bytes_to_json,
    compile_format,
    iso_time,
    parse_time,
    record_from_json,
    renderer,
)
from sluice.client.records import Record


def subprocess_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "SLUICE_BOOTSTRAP"}


@given(st.one_of(st.none(), st.binary(), st.text().map(str.encode)))
def test_json_bytes_round_trip_and_strings_mean_their_utf8(data):
    encoded = json.loads(json.dumps(bytes_to_json(data)))
    assert bytes_from_json(encoded, "value") == data
    if isinstance(encoded, str):
        assert encoded.encode() == data


def test_json_record_fields_are_checked():
    assert record_from_json(b'{"value": "v", "topic": "ignored", "offset": 3}', "r") == {
        "value": b"v"}
    full = record_from_json(
        b'{"key": {"base64": "/w=="}, "value": null, "headers": [["a", "1"], ["a", "2"]], '
        b'"timestamp": 5, "partition": 1}', "r")
    assert full == {"key": b"\xff", "value": None, "headers": [("a", b"1"), ("a", b"2")],
                    "timestamp": 5, "partition": 1}
    for text, message in [
        (b"[1]", "r must be a JSON object"),
        (b"{", "r is not valid JSON"),
        (b'{"value": {"base64": "!"}}', "is not valid base64"),
        (b'{"headers": {"a": "1"}}', "headers must be a list of [key, value] pairs"),
        (b'{"headers": [["a", null]]}', "a header value must be a string"),
        (b'{"timestamp": -1}', "timestamp must be an integer in 0..9223372036854775807"),
        (b'{"timestamp": 9223372036854775808}', "timestamp must be an integer in 0.."),
        (b'{"partition": "0"}', "partition must be an integer in 0..2147483647"),
    ]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            record_from_json(text, "r")


def record(**fields) -> Record:
    base = dict(topic="t", partition=1, offset=7, timestamp=1714564800123, key=None,
                value=b"v", headers=[])
    return Record(**{**base, **fields})


def test_renderers():
    assert renderer("text")([record(), record(value=None)]) == b"v\n\n"
    line = json.loads(renderer("json")([record(key=b"\xff", headers=[("h", b"1")])]))
    assert line == {"topic": "t", "partition": 1, "offset": 7, "timestamp": 1714564800123,
                    "time": "2024-05-01T12:00:00.123Z", "key": {"base64": "/w=="},
                    "value": "v", "headers": [["h", "1"]]}
    fmt = renderer(r"%k|%s|%K|%S|%h\t%%\0")
    assert fmt([record(headers=[("a", b"1"), ("b", b"2")])]) == b"|v|-1|1|a=1,b=2\t%\0"
    with pytest.raises(ValueError, match="unknown field %x"):
        compile_format("%x")
    with pytest.raises(ValueError, match="unknown field %"):
        compile_format("trailing %")


def test_times():
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("90s", now_ms=100_000) == 10_000
    assert parse_time("1969-12-31T23:59:59Z") == -1000
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(2**62) is None
    with pytest.raises(ValueError, match="cannot read the time 'soon'"):
        parse_time("soon")


def test_escapes():
    assert unescape(r"a\tb\n\0\\\x41é") == b"a\tb\n\0\\A\xc3\xa9"
    with pytest.raises(ValueError, match=r"unknown escape \\q"):
        unescape(r"\q")
    with pytest.raises(ValueError, match="a lone"):
        unescape("x\\")


def every_parser():
    """Each command's parser and sub-parsers, built as for that command."""
    stack = [build_parser([name]) for name in COMMANDS]
    while stack:
        parser = stack.pop()
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def test_compression_choices_are_the_codecs():
    from sluice.client.cli_parser import COMPRESSION
    from sluice.protocol.compression import NAMES

    assert set(COMPRESSION) == set(NAMES) - {"none"}


def test_every_flag_has_help():
    missing = [
        f"{parser.prog} {action.option_strings or action.dest}"
        for parser in every_parser() for action in parser._actions
        if action.option_strings and action.help is None
    ]
    assert missing == []


def help_of(*words: str) -> str:
    result = subprocess.run([sys.executable, "-m", "sluice.client.cli", *words, "--help"],
                            capture_output=True, text=True, env=subprocess_env(), timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_is_plain_text_and_each_perf_mode_lists_its_own_flags():
    assert "``" not in help_of("tail")
    consume = help_of("perf", "consume").split("examples:")[0]
    assert "--records N" in consume and "--rate" not in consume and "--acks" not in consume
    assert "--rate" in help_of("perf", "e2e").split("examples:")[0]


IMPORTS = """
import sys
from sluice.client.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --help
    pass
heavy = sorted(m for m in sys.modules if m == "trio" or m.startswith("sluice.broker"))
print(heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("words", [["topics", "list"], ["groups", "list"], ["tail", "t"],
                                   ["produce", "t"], ["--help"], ["tail", "--help"]])
def test_short_commands_import_neither_trio_nor_the_broker(words):
    unreachable = [] if words[-1] == "--help" else ["--bootstrap", "127.0.0.1:1"]
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, *words, *unreachable], capture_output=True, text=True,
        env=subprocess_env(), timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.stderr.splitlines()[-1] == "[]", result.stderr


def test_chosen_positions():
    from sluice.client.positions import chosen_positions

    a, b = ("t", 0), ("t", 1)
    begins, ends = {a: 2, b: 0}, {a: 10, b: 5}
    assert chosen_positions(begins, ends, earliest=True) == {a: 2, b: 0}
    assert chosen_positions(begins, ends, latest=True) == {a: 10, b: 5}
    assert chosen_positions(begins, ends, offset=1) == {a: 2, b: 1}  # kept within the log
    assert chosen_positions(begins, ends, offset=7) == {a: 7, b: 5}
    assert chosen_positions(begins, ends, found={a: (4, 100), b: None}) == {a: 4, b: 5}
    with pytest.raises(ValueError):
        chosen_positions(begins, ends)
