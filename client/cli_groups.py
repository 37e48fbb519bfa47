"""``sluice groups``: list, describe and delete consumer groups, reset their committed offsets
(blocking ``Admin``)."""

from __future__ import annotations

import sys

from sluice.client.cli_parser import UsageError, client_options
from sluice.client.cli_topics import print_table
from sluice.client.formats import parse_time
from sluice.client.positions import chosen_positions
from sluice.client.sync_admin import Admin
from sluice.protocol.errors import GroupIdNotFoundError, GroupNotEmptyError


def admin(args) -> Admin:
    return Admin(args.bootstrap, **client_options(args))


def list_groups(args) -> int:
    with admin(args) as a:
        groups = a.list_groups()
    if not groups:
        print("sluice groups list: no consumer groups", file=sys.stderr)
        return 0
    width = max(5, *(len(g.group_id) for g in groups))
    states = max(11, *(len(g.state) for g in groups))
    print(f"{'GROUP':<{width}} {'KIND':<8} {'STATE':<{states}} {'MEMBERS':>7}")
    for g in groups:
        print(f"{g.group_id:<{width}} {g.kind:<8} {g.state:<{states}} {g.members:>7}")
    return 0


def dash(value) -> str:
    return "-" if value is None else str(value)


def describe(args) -> int:
    with admin(args) as a:
        info = a.describe_group(args.group)
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


def delete(args) -> int:
    with admin(args) as a:
        a.delete_groups(args.groups)
    for group in args.groups:
        print(f"deleted group {group}")
    return 0


# -- reset-offsets -------------------------------------------------------------------------------


def reset_offsets(args) -> int:
    """Plan new offsets, print them, and commit them only with ``--execute``."""
    target_time = None
    if args.to_datetime is not None:
        try:
            target_time = max(0, parse_time(args.to_datetime))
        except ValueError as exc:
            raise UsageError(f"--to-datetime: {exc}") from None
    with admin(args) as a:
        try:
            info = a.describe_group(args.group)
            committed = {(r.topic, r.partition): r.committed for r in info.partitions}
            members = len(info.members)
        except GroupIdNotFoundError:  # a group that never committed: its offsets start here
            committed, members = {}, 0
        if members:
            raise GroupNotEmptyError(
                f"group {args.group} has {members} member(s): its offsets can be reset only "
                "while it has none (stop its consumers first)")
        partitions = chosen_partitions(a, args, committed)
        begins = {tp: v[0] for tp, v in a.list_offsets({tp: "earliest" for tp in partitions}).items()}
        ends = {tp: v[0] for tp, v in a.list_offsets({tp: "latest" for tp in partitions}).items()}
        found = None if target_time is None else a.list_offsets(
            {tp: target_time for tp in partitions})
        new = chosen_positions(begins, ends, earliest=args.to_earliest, latest=args.to_latest,
                               offset=args.to_offset, found=found)
        print_table(["TOPIC", "PARTITION", "CURRENT", "NEW"],
                    [[t, p, dash(committed.get((t, p))), new[(t, p)]] for t, p in partitions])
        if args.execute:
            a.alter_group_offsets(args.group, new)
    if args.execute:
        print(f"committed the new offsets of group {args.group}")
    else:
        print("dry run: nothing was changed; run again with --execute to commit these offsets",
              file=sys.stderr)
    return 0


def chosen_partitions(a: Admin, args, committed: dict) -> list[tuple[str, int]]:
    """``--all-topics``: every partition the group has an offset for; else ``--topic``s."""
    if args.all_topics:
        chosen = sorted(tp for tp, offset in committed.items() if offset is not None)
        if not chosen:
            raise ValueError(f"group {args.group} has no committed offsets: name the topics "
                             "with --topic")
        return chosen
    out = []
    for topic, wanted in args.topic:
        count = len(a.describe_topic(topic).partitions)
        bad = [p for p in wanted or () if p >= count]
        if bad:
            raise ValueError(f"{topic} has partitions 0..{count - 1}, not {bad[0]}")
        out += [(topic, p) for p in (wanted if wanted is not None else range(count))]
    return sorted(set(out))
