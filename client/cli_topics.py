"""``sluice topics``: create, list, describe, alter and delete topics (blocking ``Admin``)."""

from __future__ import annotations

import sys

from sluice.client.cli_parser import UsageError, client_options
from sluice.client.sync_admin import Admin


def admin(args) -> Admin:
    return Admin(args.bootstrap, **client_options(args))


def create(args) -> int:
    with admin(args) as a:
        a.create_topic(args.name, args.partitions, dict(args.config or []))
    print(f"created topic {args.name} with {args.partitions} partition(s)")
    return 0


def list_topics(args) -> int:
    with admin(args) as a:
        if args.long:
            infos = a.describe_topics()
            names = [info.name for info in infos]
        else:
            names = a.list_topics()
    if not names:
        print("sluice topics list: no topics", file=sys.stderr)
    elif args.long:
        print_table(["TOPIC", "PARTITIONS", "RECORDS", "BYTES", "RETENTION"],
                    [[info.name, len(info.partitions), records(info), bytes_of(info),
                      retention(info.configs)] for info in sorted(infos, key=lambda i: i.name)])
    else:
        print("\n".join(names))
    return 0


def records(info) -> int:
    """Records the topic holds now: end - start of each partition, summed."""
    return sum(p.end_offset - p.start_offset for p in info.partitions)


def bytes_of(info) -> int:
    return sum(p.size_bytes for p in info.partitions)


def retention(configs: dict) -> str:
    ms, size = configs.get("retention_ms", -1), configs.get("retention_bytes", -1)
    parts = [duration(ms) if ms >= 0 else "", f"{size:,} bytes" if size >= 0 else ""]
    return " or ".join(filter(None, parts)) or "forever"


def duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def print_table(header: list[str], rows: list[list]) -> None:
    """Left-aligned first column, right-aligned numbers, two spaces between."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        first = f"{row[0]:<{widths[0]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
        print(f"{first}  {rest}".rstrip())


def describe(args) -> int:
    with admin(args) as a:
        info = a.describe_topic(args.name)
    configs = " ".join(f"{k}={v}" for k, v in sorted(info.configs.items()) if k != "partitions")
    print(f"topic {info.name}  partitions={len(info.partitions)}  {configs}")
    print(f"{'partition':>9} {'start':>12} {'end':>12} {'bytes':>14} {'segments':>8}")
    for p in info.partitions:
        print(f"{p.partition:>9} {p.start_offset:>12} {p.end_offset:>12} "
              f"{p.size_bytes:>14} {p.segments:>8}")
    return 0


def alter(args) -> int:
    configs = dict(args.config or [])
    if args.partitions is None and not configs:
        raise UsageError("nothing to change: give --partitions N and/or --config KEY=VALUE")
    with admin(args) as a:
        before = a.describe_topic(args.name)
        a.alter_topic(args.name, args.partitions, configs)
    changes = [f"{k}={v}" for k, v in sorted(configs.items())]
    if args.partitions is not None:
        changes.insert(0, f"partitions {len(before.partitions)} -> {args.partitions}")
    print(f"altered topic {args.name}: {', '.join(changes)}")
    return 0


def delete(args) -> int:
    with admin(args) as a:
        a.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return 0
