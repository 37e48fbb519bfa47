"""The ``sluice`` command line's arguments: every command, flag, help text and value check.

Only argparse: building the parser imports nothing of the client or broker. Only the chosen
command's arguments are built (``build_parser`` looks at the command word first), and a
command's code is named as ``"module:function"`` and imported when it runs, so ``sluice
topics list`` loads neither trio nor the broker nor the record code.
"""

from __future__ import annotations

import argparse
import os
from typing import NamedTuple

from sluice.client.bootstrap import DEFAULT_BOOTSTRAP
from sluice.client.escapes import unescape

ACKS = ("0", "1", "all", "-1")
# protocol.compression.NAMES without "none" (that module imports the codecs: too slow to load
# for a parser; tests/client/test_cli_parser.py checks the two agree).
COMPRESSION = ("gzip", "snappy", "lz4", "zstd")


class UsageError(Exception):
    """A bad command line (exit 2), detected while parsing or after."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and examples kept as written."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see --help)")


# -- value checks (argparse ``type=``) ------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def config_value(text: str) -> tuple[str, int]:
    key, value = key_value(text)
    try:
        return key, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: value must be an integer, got {value!r}") from None


def acks_value(text: str):
    if text not in ACKS:
        raise argparse.ArgumentTypeError(f"must be 0, 1 or all, got {text!r}")
    return "all" if text in ("all", "-1") else int(text)


def at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return integer


count = at_least(0)  # a number of records, an offset, a partition
positive = at_least(1)  # a partition count, a number of records to send


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def separator(text: str) -> bytes:
    """A delimiter or key separator: escapes allowed, never empty."""
    try:
        value = unescape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value


# -- shared options --------------------------------------------------------------------------


def add_connection(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap`` and ``--timeout``: every command that talks to a broker has them."""
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT[,HOST:PORT...]",
        default=os.environ.get("SLUICE_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="broker addresses, tried in turn; the client learns the others from them "
        f"(default $SLUICE_BOOTSTRAP or {DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--timeout", type=seconds, metavar="SECONDS",
        help="give up on a broker that does not answer a request within this long "
        "(default: the client's, 30 s)",
    )


def add_compression(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compression", choices=COMPRESSION,
                        help="compress each batch's records with this codec (default: none)")


def leaf(actions, name: str, run: str, help: str, epilog: str,
         description: str | None = None) -> Parser:
    """A subcommand that runs ``run`` ("module:function")."""
    parser = actions.add_parser(name, help=help, epilog=epilog, description=description or help)
    parser.set_defaults(run=run)
    return parser


# -- topics ----------------------------------------------------------------------------------

TOPICS_EXAMPLES = """examples:
  sluice topics create orders --partitions 3 --config retention_ms=86400000
  sluice topics list
  sluice topics list -l                      # with partitions, records, bytes, retention
  sluice topics describe orders
  sluice topics alter orders --partitions 6 --config retention_ms=3600000
  sluice topics delete orders
"""


def build_topics(parser: Parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    module = "sluice.client.cli_topics"
    create = leaf(actions, "create", f"{module}:create", "create a topic", TOPICS_EXAMPLES)
    create.add_argument("name")
    create.add_argument("--partitions", type=positive, default=1, help="partition count (default 1)")
    create.add_argument("--config", type=config_value, action="append", metavar="KEY=VALUE",
                        help="topic setting, e.g. retention_ms=86400000 (repeatable)")
    lister = leaf(actions, "list", f"{module}:list_topics", "list topics", TOPICS_EXAMPLES)
    lister.add_argument("-l", "--long", action="store_true",
                        help="one row per topic: partitions, records, bytes, retention")
    describe = leaf(actions, "describe", f"{module}:describe",
                    "a topic's settings and partitions: start/end offsets, bytes, segments",
                    TOPICS_EXAMPLES)
    describe.add_argument("name")
    alter = leaf(actions, "alter", f"{module}:alter",
                 "add partitions to a topic or change its settings", TOPICS_EXAMPLES)
    alter.add_argument("name")
    alter.add_argument("--partitions", type=positive, metavar="N",
                       help="the new partition count (more than now: partitions are only added)")
    alter.add_argument("--config", type=config_value, action="append", metavar="KEY=VALUE",
                       help="set a topic setting, e.g. retention_ms=3600000 (repeatable)")
    delete = leaf(actions, "delete", f"{module}:delete", "delete a topic and its data",
                  TOPICS_EXAMPLES)
    delete.add_argument("name")
    for sub in (create, lister, describe, alter, delete):
        add_connection(sub)


# -- produce ---------------------------------------------------------------------------------

PRODUCE_EXAMPLES = r"""examples:
  echo hello | sluice produce orders
  printf 'user1:clicked\nuser2:paid\n' | sluice produce orders --key-separator :
  sluice produce orders --acks all --header source=cli < events.txt
  sluice produce orders --compression zstd < events.txt
  find . -print0 | sluice produce paths -0          # NUL-separated records
  sluice produce images --whole --key cat.png < cat.png
  sluice tail orders --from-beginning --format json | sluice produce copy --format json
  sluice produce orders --print-offsets < events.txt  # "TOPIC PARTITION OFFSET" per record
"""
PRODUCE_DESCRIPTION = """Produce records read from stdin: one per line by default (the newline is
not part of the record; nothing else is stripped, a '\\r' included), or split at --delimiter,
or the whole input as one record (--whole). Interactively, each line is sent as it is typed;
Ctrl-D ends, Ctrl-C or SIGTERM stops reading and delivers what was read (exit 130/143).
The count of records produced is printed on stderr at the end (--quiet: not)."""


def build_produce(parser: Parser) -> None:
    parser.set_defaults(run="sluice.client.cli_produce:produce")
    parser.add_argument("topic")
    framing = parser.add_mutually_exclusive_group()
    framing.add_argument("--delimiter", type=separator, metavar="SEP",
                         help=r"records end at SEP (default \n; escapes \n \r \t \0 \\ \xHH)")
    framing.add_argument("-0", "--null", dest="delimiter", action="store_const", const=b"\0",
                         help=r"records end at a NUL byte (as --delimiter '\0')")
    framing.add_argument("--whole", action="store_true",
                         help="all of stdin is one record (binary files)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the key of every record")
    keys.add_argument("--key-separator", type=separator, metavar="SEP",
                      help="split each record at the first SEP into key and value "
                      "(a record without SEP is an error)")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text (default): records as they are; json: each record is a JSON "
                        "object as 'sluice tail --format json' prints (key, value, headers, "
                        "timestamp, partition; others ignored)")
    parser.add_argument("--partition", type=count, metavar="P",
                        help="write to partition P (default: by key, else spread)")
    parser.add_argument("--acks", type=acks_value, default=1, help="0, 1 or all (default 1)")
    parser.add_argument("--header", type=key_value, action="append", metavar="KEY=VALUE",
                        help="a header on every record (repeatable)")
    parser.add_argument("--timestamp", metavar="TIME",
                        help="the timestamp of every record: epoch ms, ISO 8601, or 15m (ago) "
                        "(default: when it is sent)")
    parser.add_argument("--print-offsets", action="store_true",
                        help="print 'TOPIC PARTITION OFFSET' on stdout for each record once "
                        "acknowledged, in input order (not with --acks 0)")
    add_compression(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no count on stderr")
    add_connection(parser)


# -- tail ------------------------------------------------------------------------------------

TAIL_EXAMPLES = r"""examples:
  sluice tail orders                    # the last 10 records of the topic, oldest first
  sluice tail orders -f                 # ... then follow new records until Ctrl-C
  sluice tail orders -n 100 --partition 1
  sluice tail orders --from-beginning -n 100   # the first 100 records
  sluice tail orders --offset 42 --partition 1
  sluice tail orders --since 15m --format json
  sluice tail orders --since 2024-05-01T12:00:00Z
  sluice tail orders --format '%p:%o %T %k=%s\n'
  sluice tail orders --group billing -f  # as a member of group billing, committing as it prints
"""
TAIL_DESCRIPTION = """Print a topic's records, like tail.

Where it starts: --from-beginning, --offset N, --since TIME, else the last N records of the
topic (-n, default 10: the newest N across the chosen partitions by timestamp, printed oldest
first). With --group G it starts at the group's committed offsets.

How many: -n N is always a number of records printed: the last N, or with a start flag (or
--group) the first N from there. Without -f it stops after them, or at the end offsets seen
when it started. -f keeps printing new records until Ctrl-C or SIGTERM (exit 130/143).

Formats: text (the value), json (one lossless object per line: key and value are strings when
they are UTF-8, else {"base64": "..."}; headers a list of [key, value] pairs; timestamp in ms
and time in ISO 8601 UTC), or a format string as kcat's -f: %t topic, %p partition, %o offset,
%T timestamp (ms), %D time (ISO 8601 UTC), %k key, %s value, %K and %S their sizes (-1 if
null), %h headers (k=v,...), %% a percent sign; escapes \\n \\r \\t \\0 \\\\. No newline is added.

With --group G it consumes as a member of group G: it reads the partitions the group assigns
it, from the group's committed offsets (partitions without one: the end, or the first record
with --from-beginning; it says which on stderr), and commits what it has printed after every
batch; on Ctrl-C or SIGTERM it leaves the group."""


def build_tail(parser: Parser) -> None:
    parser.set_defaults(run="sluice.client.tail:run")
    parser.add_argument("topic")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new records until Ctrl-C or SIGTERM")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the first record")
    start.add_argument("--offset", type=count, metavar="N",
                       help="start at offset N (>= 0; for the last N records use -n N)")
    start.add_argument("--since", metavar="TIME",
                       help="start at the first record at/after TIME (epoch ms, 30s/15m/2h/1d "
                       "ago, or ISO 8601)")
    parser.add_argument("--partition", type=count, metavar="P", help="only partition P")
    parser.add_argument("-n", type=count, metavar="N",
                        help="print N records: the last N (default 10), or with a start flag "
                        "the first N from there")
    parser.add_argument("--format", default="text", metavar="FORMAT",
                        help="text (default: values), json (lossless, one object per line), "
                        "or a kcat-like format string such as '%%k %%s\\n' (see above)")
    parser.add_argument("--group", metavar="G",
                        help="consume as a member of group G, committing what is printed")
    add_connection(parser)


# -- groups ----------------------------------------------------------------------------------

GROUPS_EXAMPLES = """examples:
  sluice groups list
  sluice groups describe billing
  sluice groups reset-offsets billing --topic orders --to-earliest          # dry run
  sluice groups reset-offsets billing --topic orders:0,1 --to-offset 42 --execute
  sluice groups reset-offsets billing --all-topics --to-datetime 2024-05-01T00:00:00Z --execute
  sluice groups delete billing
  sluice tail orders --group billing -f     # consume as a member of billing, committing
"""
RESET_DESCRIPTION = """Move a group's committed offsets, as kafka-consumer-groups --reset-offsets
does. It prints each partition's current and new offset and changes nothing unless --execute is
given. The group must have no members (stop its consumers first). Offsets beyond a partition's
log are moved to its start or end."""


def topic_partitions(text: str) -> tuple[str, list[int] | None]:
    """``TOPIC`` or ``TOPIC:P,P,...``."""
    topic, sep, parts = text.partition(":")
    if not topic:
        raise argparse.ArgumentTypeError(f"expected TOPIC or TOPIC:P,P..., got {text!r}")
    if not sep:
        return topic, None
    try:
        return topic, [count(p) for p in parts.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"bad partition list in {text!r}") from None


def build_groups(parser: Parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    module = "sluice.client.cli_groups"
    lister = leaf(actions, "list", f"{module}:list_groups", "groups with state and member count",
                  GROUPS_EXAMPLES)
    describe = leaf(actions, "describe", f"{module}:describe",
                    "members, committed offsets, end offsets and lag", GROUPS_EXAMPLES)
    describe.add_argument("group")
    delete = leaf(actions, "delete", f"{module}:delete",
                  "delete groups and their committed offsets (groups without members)",
                  GROUPS_EXAMPLES)
    delete.add_argument("groups", nargs="+", metavar="group")
    reset = leaf(actions, "reset-offsets", f"{module}:reset_offsets",
                 "move a group's committed offsets", GROUPS_EXAMPLES, RESET_DESCRIPTION)
    reset.add_argument("group")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--topic", type=topic_partitions, action="append", metavar="TOPIC[:P,...]",
                       help="a topic, or some of its partitions (repeatable)")
    which.add_argument("--all-topics", action="store_true",
                       help="every topic the group has committed offsets for")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="to each partition's first record")
    to.add_argument("--to-latest", action="store_true", help="to each partition's end")
    to.add_argument("--to-offset", type=count, metavar="N", help="to offset N")
    to.add_argument("--to-datetime", metavar="TIME",
                    help="to the first record at/after TIME (epoch ms, 15m ago, ISO 8601)")
    reset.add_argument("--execute", action="store_true",
                       help="commit the new offsets (without it: a dry run)")
    for sub in (lister, describe, delete, reset):
        add_connection(sub)


# -- perf ------------------------------------------------------------------------------------

PERF_EXAMPLES = """examples:
  sluice perf produce --records 1000000 --record-size 100 --api batch
  sluice perf produce --records 500000 --api record --acks all
  sluice perf produce --records 1000000 --compression lz4
  sluice perf consume --records 1000000 --api batch
  sluice perf e2e --rate 5000 --records 20000
"""
PERF_DESCRIPTION = """Throughput and latency of the trio client against a broker:
  produce  records/s and MB/s until every record is acknowledged, and each batch's ack latency
  consume  records/s reading a topic from the beginning (at most what it holds when it starts)
  e2e      producer and consumer in one process at a fixed rate: send-to-receive latency
The live progress line is only drawn when stdout is a terminal. Ctrl-C or SIGTERM stops it
(exit 130/143)."""


def build_perf(parser: Parser) -> None:
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    run = "sluice.client.perf:run"
    produce = leaf(modes, "produce", run, "produce records as fast as possible", PERF_EXAMPLES)
    consume = leaf(modes, "consume", run, "consume a topic from the beginning", PERF_EXAMPLES)
    e2e = leaf(modes, "e2e", run, "end-to-end latency at a fixed rate", PERF_EXAMPLES)
    for mode, records in ((produce, 1_000_000), (consume, 1_000_000), (e2e, 20_000)):
        mode.add_argument("--topic", default="perf", help="topic (default perf)")
        mode.add_argument("--records", type=positive, default=records, metavar="N",
                          help=f"records to send or read (default {records:,})")
        mode.add_argument("--api", choices=["batch", "record"], default="batch",
                          help="batch: send_batch()/batches(); record: send()/async for "
                          "(default batch)")
        add_connection(mode)
    consume.add_argument("--record-size", type=positive, default=100, metavar="BYTES",
                         help="value bytes, for the MB/s figure (default 100)")
    for mode, linger in ((produce, 5), (e2e, 0)):
        mode.add_argument("--record-size", type=positive, default=100, metavar="BYTES",
                          help="value bytes (default 100)")
        mode.add_argument("--partitions", type=positive, default=1,
                          help="partitions if the topic is created (default 1)")
        mode.add_argument("--acks", type=acks_value, default=1, help="0, 1 or all (default 1)")
        mode.add_argument("--linger-ms", type=float, default=linger, metavar="MS",
                          help=f"producer linger (default {linger})")
        add_compression(mode)
    e2e.add_argument("--rate", type=positive, default=5000, help="records/s (default 5000)")


# -- the whole parser ------------------------------------------------------------------------

EXAMPLES = """examples:
  sluice broker
  sluice topics create orders --partitions 3
  echo hi | sluice produce orders
  sluice tail orders -f
  sluice groups list
  sluice perf produce --records 1000000

exit codes: 0 success (also when stdout closes, e.g. | head), 1 a Sluice error (unknown topic,
broker unreachable or not answering...), 2 a bad command line or settings, 130 Ctrl-C,
143 SIGTERM.
"""


def build_broker(parser: Parser) -> None:
    from sluice.broker import __main__ as broker_main

    parser.epilog = broker_main.EXAMPLES
    parser.description = broker_main.DESCRIPTION
    broker_main.build_parser(parser)
    parser.set_defaults(run="sluice.broker.__main__:run")


MIGRATE_DESCRIPTION = """Convert a data directory written by Sluice before record batch v2 (magic-1
batches with msgpack records) to Kafka's record batch v2, in place: the broker refuses such a
directory at start until it is converted. Offsets, timestamps, leader epochs and producer
fields are kept; every batch is validated first. Stop the broker before running it; an
interrupted migration is completed by running it again."""


def build_migrate(parser: Parser) -> None:
    parser.set_defaults(run="sluice.broker.storage.migrate:run")
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="the data directory")


class Command(NamedTuple):
    help: str
    build: object  # adds the command's arguments to its parser
    description: str | None = None
    epilog: str | None = None


COMMANDS = {
    "broker": Command("run a broker in the foreground", build_broker),
    "topics": Command("create, list, describe, alter and delete topics", build_topics,
                      epilog=TOPICS_EXAMPLES),
    "produce": Command("produce records from stdin (lines, NUL-separated, whole, JSON)",
                       build_produce, PRODUCE_DESCRIPTION, PRODUCE_EXAMPLES),
    "tail": Command("print records of a topic; -f follows", build_tail, TAIL_DESCRIPTION,
                    TAIL_EXAMPLES),
    "groups": Command("list, describe and delete consumer groups; reset their offsets",
                      build_groups, epilog=GROUPS_EXAMPLES),
    "perf": Command("measure throughput and latency", build_perf, PERF_DESCRIPTION,
                    PERF_EXAMPLES),
    "migrate": Command("convert an old data directory to record batch v2", build_migrate,
                       MIGRATE_DESCRIPTION, "example:\n  sluice migrate --data-dir ./sluice-data\n"),
}


def build_parser(argv: list[str]) -> Parser:
    """The parser for ``argv``: every command listed, only the chosen one's arguments built."""
    parser = Parser(
        prog="sluice",
        description="Sluice: a Kafka-style append-only log broker and its tools.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, epilog=command.epilog,
                                  description=command.description or command.help)
        if name == chosen:
            command.build(sub)
    return parser


def client_options(args) -> dict:
    """Keyword arguments for a client from the shared options (``--timeout``)."""
    if args.timeout is None:
        return {}
    return {"request_timeout_ms": max(1, round(args.timeout * 1000))}
