"""``sluice tail``: print a topic's records, like ``tail`` (``-f`` follows new records).

The rules users see (where it starts, what ``-n`` means, the formats) are its help text, in
``client.cli_parser``. It runs on the blocking consumer: no trio, so it starts fast, and a
stop signal (``client.cli_signals``) is seen between two polls, at most ``POLL_WAIT_MS``
apart while the topic is idle; then it leaves its group, if any, and exits 130/143. Output is
written and flushed per fetched batch, so records show up as they arrive.
"""

from __future__ import annotations

import heapq
import sys
from collections import deque

from sluice.client.cli_parser import UsageError, client_options
from sluice.client.cli_signals import StopSignals
from sluice.client.formats import parse_time, renderer
from sluice.client.positions import chosen_positions
from sluice.client.sync import Consumer

DEFAULT_LAST = 10
POLL_WAIT_MS = 200  # a long poll's longest wait: how soon an idle tail sees a stop signal


def parse_since(text: str, now_ms: int | None = None) -> int:
    """``--since``: TIME as epoch ms; a time before 1970 is 0 (every record is at or after it,
    since record timestamps are never negative)."""
    return max(0, parse_time(text, now_ms))


def run(args) -> int:
    try:
        render = renderer(args.format)
        since = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    explicit_start = args.from_beginning or args.offset is not None or since is not None
    if (explicit_start or args.group) and args.follow and args.n is not None:
        raise UsageError("-n N after a start flag or --group prints N records and stops, "
                         "-f never stops: use one or the other")
    out = sys.stdout.buffer
    with StopSignals() as stop:
        if args.group:
            tail_group(args, render, out, stop)
        else:
            tail_partitions(args, since, render, out, stop)
    return stop.exit_code or 0


def write(out, data: bytes) -> None:
    if data:
        out.write(data)
        out.flush()


# -- without a group: chosen partitions, chosen start ------------------------------------------


def tail_partitions(args, since: int | None, render, out, stop: StopSignals) -> None:
    # "earliest": if retention removes records under it, it goes on from the new log start
    # (towards the end offsets it stops at), never jumps past them.
    with Consumer(args.bootstrap, client_id="sluice-tail", auto_offset_reset="earliest",
                  fetch_max_wait_ms=POLL_WAIT_MS, **client_options(args)) as consumer:
        count = consumer.partitions_for(args.topic)
        if args.partition is not None and args.partition >= count:
            raise ValueError(f"{args.topic} has partitions 0..{count - 1}, not {args.partition}")
        chosen = range(count) if args.partition is None else [args.partition]
        partitions = [(args.topic, p) for p in chosen]
        begins = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        last_n = not (args.from_beginning or args.offset is not None or since is not None)
        if last_n:
            n = DEFAULT_LAST if args.n is None else args.n
            starts = {tp: max(begins[tp], ends[tp] - n) for tp in partitions}
        else:
            found = None if since is None else consumer.offsets_for_times(
                {tp: since for tp in partitions})
            starts = chosen_positions(begins, ends, earliest=args.from_beginning,
                                      offset=args.offset, found=found)
        consumer.assign(partitions)
        for tp, offset in starts.items():
            consumer.seek(*tp, offset)
        if last_n:
            history = list(read_until(consumer, starts, ends, stop))
            write(out, render(newest(history, n)))
            if args.follow:  # on from the ends: what was fetched past them was not printed
                for tp, end in ends.items():
                    consumer.seek(*tp, end)
                for records in read_on(consumer, stop):
                    write(out, render(records))
            return
        source = read_on(consumer, stop) if args.follow else read_until(consumer, starts, ends, stop)
        printed = 0
        for records in source:
            if args.n is not None:
                records = records[: args.n - printed]
            printed += len(records)
            write(out, render(records))
            if args.n is not None and printed >= args.n:
                return


def read_until(consumer: Consumer, starts: dict, ends: dict, stop: StopSignals):
    """Record lists, each partition read up to its end offset in ``ends`` (no further)."""
    open_parts = {tp for tp in starts if starts[tp] < ends[tp]}
    while open_parts and not stop.requested:
        records = consumer.poll(timeout=POLL_WAIT_MS / 1000)
        if not records:
            continue
        tp = (records[0].topic, records[0].partition)
        end = ends[tp]
        if records[-1].offset + 1 >= end:
            open_parts.discard(tp)
            records = [r for r in records if r.offset < end]
        if records:
            yield records


def read_on(consumer: Consumer, stop: StopSignals):
    """Record lists as they arrive, until a stop signal."""
    while not stop.requested:
        records = consumer.poll(timeout=POLL_WAIT_MS / 1000)
        if records:
            yield records


def newest(chunks: list[list], n: int) -> list:
    """The ``n`` newest records of ``chunks`` by timestamp, oldest first. Each partition's
    records keep their offset order (the merge takes partitions' sequences as they are)."""
    by_partition: dict[tuple[str, int], list] = {}
    for records in chunks:
        by_partition.setdefault((records[0].topic, records[0].partition), []).extend(records)
    merged = heapq.merge(*by_partition.values(), key=lambda r: r.timestamp)
    return list(deque(merged, maxlen=n))


# -- as a member of a group ----------------------------------------------------------------------


def tail_group(args, render, out, stop: StopSignals) -> None:
    if args.partition is not None or args.offset is not None or args.since is not None:
        raise UsageError("--group starts at the group's committed offsets and the group picks "
                         "the partitions: drop --partition/--offset/--since")
    reset = "earliest" if args.from_beginning else "latest"
    with Consumer(args.bootstrap, group_id=args.group, topics=[args.topic],
                  auto_offset_reset=reset, auto_commit=False, client_id="sluice-tail",
                  fetch_max_wait_ms=POLL_WAIT_MS, **client_options(args)) as consumer:
        partitions = [(args.topic, p) for p in range(consumer.partitions_for(args.topic))]
        ends = consumer.end_offsets(partitions)
        say_where_it_starts(args, consumer.committed(partitions))
        printed = 0
        while not stop.requested and (args.n is None or printed < args.n):
            if not args.follow and caught_up(consumer, ends):
                break
            records = consumer.poll(timeout=POLL_WAIT_MS / 1000)
            if not records:
                continue
            if args.n is not None:
                records = records[: args.n - printed]
            printed += len(records)
            write(out, render(records))
            last = records[-1]
            consumer.commit({(last.topic, last.partition): last.offset + 1})


def say_where_it_starts(args, committed: dict) -> None:
    """On stderr: which partitions have no committed offset, and so where they start."""
    missing = sorted(p for (_, p), offset in committed.items() if offset is None)
    if not missing:
        return
    where = ("at the first record" if args.from_beginning
             else "at the end, with new records (--from-beginning: at the first record)")
    which = ", ".join(map(str, missing))
    print(f"sluice tail: group {args.group} has no committed offset for {args.topic} "
          f"partition(s) {which}: starting {where}", file=sys.stderr)


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
