"""``sluice``: the command line. One subcommand per job; user errors are one line on stderr.

Exit codes: 0 success (also Ctrl-C on ``tail -f`` and a closed stdout pipe), 1 a Sluice error
(unknown topic, broker unreachable...), 2 a bad command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio
from sluice.client import perf, tail
from sluice.client.admin import Admin
from sluice.client.bootstrap import DEFAULT_BOOTSTRAP, parse_bootstrap
from sluice.client.lifecycle import single_exception
from sluice.client.producer import Producer
from sluice.protocol.errors import SluiceError


class UsageError(Exception):
    """A bad command line detected after parsing."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and examples kept as written."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("SLUICE_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="broker HOST:PORT (default $SLUICE_BOOTSTRAP or 127.0.0.1:9092)",
    )


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def acks_value(text: str):
    if text not in ("0", "1", "all", "-1"):
        raise argparse.ArgumentTypeError(f"acks must be 0, 1 or all, got {text!r}")
    return "all" if text in ("all", "-1") else int(text)


# -- topics ------------------------------------------------------------------------------------


async def topics_create(args) -> int:
    configs = {}
    for key, value in args.config or []:
        try:
            configs[key] = int(value)
        except ValueError:
            raise UsageError(f"--config {key}: value must be an integer, got {value!r}") from None
    async with Admin(args.bootstrap) as admin:
        await admin.create_topic(args.name, args.partitions, configs)
    print(f"created topic {args.name} with {args.partitions} partition(s)")
    return 0


async def topics_list(args) -> int:
    async with Admin(args.bootstrap) as admin:
        for name in await admin.list_topics():
            print(name)
    return 0


async def topics_describe(args) -> int:
    async with Admin(args.bootstrap) as admin:
        info = await admin.describe_topic(args.name)
    configs = " ".join(f"{k}={v}" for k, v in sorted(info.configs.items()))
    print(f"topic {info.name}  partitions={len(info.partitions)}  {configs}")
    print(f"{'partition':>9} {'start':>12} {'end':>12} {'bytes':>14} {'segments':>8}")
    for p in info.partitions:
        print(f"{p.partition:>9} {p.start_offset:>12} {p.end_offset:>12} "
              f"{p.size_bytes:>14} {p.segments:>8}")
    return 0


async def topics_delete(args) -> int:
    async with Admin(args.bootstrap) as admin:
        await admin.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return 0


# -- produce -----------------------------------------------------------------------------------


async def read_lines(stream):
    """Lines of a binary stream (without the newline), read in a worker thread."""
    rest = b""
    while True:
        chunk = await trio.to_thread.run_sync(stream.read1, 1 << 16)
        if not chunk:
            if rest:
                yield rest
            return
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line


async def produce(args) -> int:
    headers = [(k, v.encode()) for k, v in args.header or []] or None
    key = args.key.encode() if args.key is not None else None
    separator = args.key_separator.encode() if args.key_separator else None
    failed: list[BaseException] = []
    count = 0
    async with Producer(args.bootstrap, acks=args.acks) as producer:
        await producer.partitions_for(args.topic)
        handles = []
        async for line in read_lines(sys.stdin.buffer):
            record_key = key
            if separator is not None:
                record_key, sep, line = line.partition(separator)
                if not sep:
                    raise UsageError(f"line {count + 1} has no key separator {args.key_separator!r}")
            handles.append(await producer.send(
                args.topic, line, key=record_key, headers=headers, partition=args.partition
            ))
            count += 1
        await producer.flush()
        for handle in handles:
            if handle.batch.error is not None and handle.batch.error not in failed:
                failed.append(handle.batch.error)
    if failed:
        raise failed[0]
    return 0


# -- groups ------------------------------------------------------------------------------------


async def groups_list(args) -> int:
    async with Admin(args.bootstrap) as admin:
        groups = await admin.list_groups()
    if groups:
        width = max(5, *(len(g.group_id) for g in groups))
        print(f"{'GROUP':<{width}} {'STATE':<11} {'MEMBERS':>7}")
        for g in groups:
            print(f"{g.group_id:<{width}} {g.state:<11} {g.members:>7}")
    return 0


def dash(value) -> str:
    return "-" if value is None else str(value)


async def groups_describe(args) -> int:
    async with Admin(args.bootstrap) as admin:
        info = await admin.describe_group(args.group)
    print(f"group {info.group_id}  state={info.state}  epoch={info.epoch}  "
          f"members={len(info.members)}")
    rows = [(r.topic, str(r.partition), dash(r.committed), str(r.end_offset), dash(r.lag),
             r.member_id or "-") for r in info.partitions]
    header = ("TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER")
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    for row in [header, *rows]:
        print(f"{row[0]:<{widths[0]}}  " + "  ".join(
            f"{cell:>{w}}" for cell, w in zip(row[1:5], widths[1:5], strict=True)) + f"  {row[5]}")
    print(f"total lag {info.total_lag}")
    if info.members:
        print("members:")
    for mem in info.members:
        parts = ", ".join(f"{t}[{p}]" for t, p in mem.partitions) or "(none)"
        print(f"  {mem.member_id}  {mem.client_id or '-'}  {parts}")
    return 0


# -- the parser --------------------------------------------------------------------------------

TOPICS_EXAMPLES = """examples:
  sluice topics create orders --partitions 3 --config retention_ms=86400000
  sluice topics list
  sluice topics describe orders
  sluice topics delete orders
"""
PRODUCE_EXAMPLES = """examples:
  echo hello | sluice produce orders
  printf 'user1:clicked\\nuser2:paid\\n' | sluice produce orders --key-separator :
  sluice produce orders --acks all --header source=cli < events.txt
"""

GROUPS_EXAMPLES = """examples:
  sluice groups list
  sluice groups describe billing
  sluice tail orders --group billing -f     # consume as a member of billing, committing
"""


def build_parser() -> Parser:
    parser = Parser(
        prog="sluice",
        description="Sluice: a Kafka-style append-only log broker and its tools.",
        epilog="examples:\n  sluice broker\n  sluice topics create orders --partitions 3\n"
        "  echo hi | sluice produce orders\n  sluice tail orders -f\n"
        "  sluice perf produce --records 1000000\n",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from sluice.broker import __main__ as broker_main

    broker = commands.add_parser(
        "broker", help="run a broker in the foreground", epilog=broker_main.EXAMPLES,
        description="Run a Sluice broker in the foreground (Ctrl-C stops it cleanly).",
    )
    broker_main.build_parser(broker)
    broker.set_defaults(run=broker_main.run, sync=True)

    topics = commands.add_parser("topics", help="create, list, describe and delete topics",
                                 epilog=TOPICS_EXAMPLES)
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a topic", epilog=TOPICS_EXAMPLES)
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=1, help="partition count (default 1)")
    create.add_argument("--config", type=key_value, action="append", metavar="KEY=VALUE",
                        help="topic setting, e.g. retention_ms=86400000 (repeatable)")
    create.set_defaults(run=topics_create)
    lister = actions.add_parser("list", help="list topics", epilog=TOPICS_EXAMPLES)
    lister.set_defaults(run=topics_list)
    describe = actions.add_parser("describe", help="partitions with offsets, bytes, segments",
                                  epilog=TOPICS_EXAMPLES)
    describe.add_argument("name")
    describe.set_defaults(run=topics_describe)
    delete = actions.add_parser("delete", help="delete a topic and its data",
                                epilog=TOPICS_EXAMPLES)
    delete.add_argument("name")
    delete.set_defaults(run=topics_delete)
    for sub in (topics, create, lister, describe, delete):
        add_bootstrap(sub)

    prod = commands.add_parser("produce", help="produce one record per stdin line",
                               epilog=PRODUCE_EXAMPLES)
    prod.add_argument("topic")
    keys = prod.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the key of every record")
    keys.add_argument("--key-separator", metavar="SEP",
                      help="split each line at the first SEP into key and value")
    prod.add_argument("--partition", type=int, help="write to this partition (default: by key)")
    prod.add_argument("--acks", type=acks_value, default=1, help="0, 1 or all (default 1)")
    prod.add_argument("--header", type=key_value, action="append", metavar="KEY=VALUE",
                      help="a header on every record (repeatable)")
    prod.set_defaults(run=produce)
    add_bootstrap(prod)

    groups = commands.add_parser("groups", help="list consumer groups, describe one with lag",
                                 epilog=GROUPS_EXAMPLES)
    group_actions = groups.add_subparsers(dest="action", metavar="ACTION", required=True)
    glist = group_actions.add_parser("list", help="groups with state and member count",
                                     epilog=GROUPS_EXAMPLES)
    glist.set_defaults(run=groups_list)
    gdescribe = group_actions.add_parser(
        "describe", help="members, committed offsets, end offsets and lag", epilog=GROUPS_EXAMPLES)
    gdescribe.add_argument("group")
    gdescribe.set_defaults(run=groups_describe)
    for sub in (groups, glist, gdescribe):
        add_bootstrap(sub)

    tail.add_parser(commands, add_bootstrap)
    perf.add_parser(commands, add_bootstrap, acks_value)
    return parser


def run(args) -> int:
    """Run a parsed command; turns errors into one line and an exit code."""
    prog = f"sluice {args.command}"
    try:
        if getattr(args, "sync", False):
            return args.run(args)
        return trio.run(args.run, args)
    except BaseException as exc:
        if isinstance(exc, BaseExceptionGroup):
            exc = single_exception(exc) or exc
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, BrokenPipeError):
            silence_stdout()
            return 0
        if isinstance(exc, UsageError):
            print(exc, file=sys.stderr)
            return 2
        if isinstance(exc, (SluiceError, ValueError, OSError)):
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1
        raise


def silence_stdout() -> None:
    """stdout is a closed pipe: point it at /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "bootstrap", None):
            parse_bootstrap(args.bootstrap)
    except (UsageError, ValueError) as exc:
        print(exc if isinstance(exc, UsageError) else f"sluice: {exc}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
