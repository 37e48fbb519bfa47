"""``sluice tail``: print a topic's records, like ``tail`` (``-f`` follows new records).

Where it starts: ``--from-beginning``, ``--offset N``, ``--since TIME``, else the last ``-n``
(default 10) records of each partition. Where it stops: without ``-f``, at the end offsets
seen when it started; with ``-f``, never (Ctrl-C). With an explicit start, ``-n N`` also stops
it after N records. Output is written and flushed per fetched batch, so records show up as
they arrive.

With ``--group G`` it consumes as a member of group G: it reads the partitions the group
assigns it, from the group's committed offsets (partitions without one: the first record with
``--from-beginning``, else the end), and commits what it has printed after every batch; ``-n N``
stops after N records; without ``-f`` it stops once its partitions are caught up.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
from datetime import datetime

import trio
from sluice.client.consumer import Consumer

DEFAULT_LAST = 10
EXAMPLES = """examples:
  sluice tail orders                    # the last 10 records of each partition
  sluice tail orders -f                 # ... then follow new records until Ctrl-C
  sluice tail orders --from-beginning -n 100
  sluice tail orders --offset 42 --partition 1
  sluice tail orders --since 15m --format json
  sluice tail orders --since 2024-05-01T12:00:00
  sluice tail orders --group billing -f  # as a member of group billing, committing as it prints
"""
RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """A time as epoch ms: ``1714564800000``, ``15m`` (ago), or ISO 8601."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    match = RELATIVE.match(text)
    if match:
        return now_ms - int(float(match.group(1)) * UNITS_MS[match.group(2)])
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise ValueError(
            f"--since: cannot read {text!r} (use epoch ms, 30s/15m/2h/1d, or ISO 8601)"
        ) from None


def text_of(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def render(records, fmt: str) -> bytes:
    if fmt == "json":
        return "".join(
            json.dumps({
                "topic": r.topic, "partition": r.partition, "offset": r.offset,
                "timestamp": r.timestamp, "key": text_of(r.key), "value": text_of(r.value),
                "headers": {k: text_of(v) for k, v in r.headers},
            }) + "\n"
            for r in records
        ).encode()
    return b"".join((r.value or b"") + b"\n" for r in records)


async def start_positions(consumer: Consumer, args, partitions) -> dict:
    """The first offset to print per partition, per the start flags."""
    begins = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    if args.from_beginning:
        return begins
    if args.offset is not None:
        return {tp: min(max(args.offset, begins[tp]), ends[tp]) for tp in partitions}
    if args.since is not None:
        found = await consumer.offsets_for_times({tp: parse_since(args.since) for tp in partitions})
        return {tp: ends[tp] if found[tp] is None else found[tp][0] for tp in partitions}
    last = DEFAULT_LAST if args.n is None else args.n
    return {tp: max(begins[tp], ends[tp] - last) for tp in partitions}


def caught_up(consumer: Consumer, ends: dict) -> bool:
    """Joined, assignment settled, and every owned partition read up to ``ends``."""
    group = consumer._group
    if not group.joined or any(group.plan()) or group.revoking:
        return False
    for tp in consumer.assignment():
        pos = consumer.position(*tp)
        if pos is None or pos < ends.get(tp, 0):
            return False
    return True


async def run_group(args, out) -> int:
    if args.partition is not None or args.offset is not None or args.since is not None:
        raise ValueError("--group starts at the group's committed offsets and the group picks "
                         "the partitions: drop --partition/--offset/--since")
    reset = "earliest" if args.from_beginning else "latest"
    async with Consumer(args.bootstrap, group_id=args.group, topics=[args.topic],
                        auto_offset_reset=reset, auto_commit=False,
                        client_id="sluice-tail") as consumer:
        count = await consumer.partitions_for(args.topic)
        ends = await consumer.end_offsets([(args.topic, p) for p in range(count)])
        printed = 0
        while args.n is None or printed < args.n:
            if not args.follow and caught_up(consumer, ends):
                break
            records = None
            with trio.move_on_after(float("inf") if args.follow else 0.1):
                records = await consumer.getmany()
            if not records:
                continue
            if args.n is not None:
                records = records[: args.n - printed]
            printed += len(records)
            out.write(render(records, args.format))
            out.flush()
            last = records[-1]
            await consumer.commit({(last.topic, last.partition): last.offset + 1})
    return 0


async def run(args) -> int:
    out = sys.stdout.buffer
    if args.group:
        return await run_group(args, out)
    explicit_start = args.from_beginning or args.offset is not None or args.since is not None
    limit = args.n if explicit_start else None
    async with Consumer(args.bootstrap, auto_offset_reset="latest") as consumer:
        count = await consumer.partitions_for(args.topic)
        chosen = range(count) if args.partition is None else [args.partition]
        if args.partition is not None and not 0 <= args.partition < count:
            raise ValueError(f"{args.topic} has partitions 0..{count - 1}, not {args.partition}")
        partitions = [(args.topic, p) for p in chosen]
        starts = await start_positions(consumer, args, partitions)
        ends = await consumer.end_offsets(partitions)
        # Assign and seek with no await in between: the first fetch starts at the right place.
        consumer.assign(partitions)
        for tp, offset in starts.items():
            consumer.seek(*tp, offset)
        open_parts = {tp for tp in partitions if args.follow or starts[tp] < ends[tp]}
        printed = 0
        while open_parts and (limit is None or printed < limit):
            records = await consumer.getmany()
            tp = (records[0].topic, records[0].partition)
            if not args.follow:
                records = [r for r in records if r.offset < ends[tp]]
                if not records or records[-1].offset + 1 >= ends[tp]:
                    open_parts.discard(tp)
            if limit is not None:
                records = records[: limit - printed]
            printed += len(records)
            out.write(render(records, args.format))
            out.flush()
    return 0


def add_parser(commands, add_bootstrap) -> None:
    tail = commands.add_parser(
        "tail", help="print records of a topic; -f follows", epilog=EXAMPLES,
        description=__doc__.split("\n\n")[1],
    )
    tail.add_argument("topic")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the first record")
    start.add_argument("--offset", type=int, metavar="N", help="start at offset N")
    start.add_argument("--since", metavar="TIME",
                       help="start at the first record at/after TIME (ms, 15m, ISO 8601)")
    tail.add_argument("--partition", type=int, help="only this partition")
    tail.add_argument("-n", type=int, metavar="N",
                      help="with a start flag: stop after N records; else: the last N records")
    tail.add_argument("--format", choices=["text", "json"], default="text")
    tail.add_argument("--group", metavar="G",
                      help="consume as a member of group G, committing what is printed")
    tail.set_defaults(run=run)
    add_bootstrap(tail)

