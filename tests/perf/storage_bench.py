"""Storage benchmark: FileLog against the bare file system, side by side in one run.

    python tests/perf/storage_bench.py            # full sizes (a 1 GiB recovery log)
    python tests/perf/storage_bench.py --quick    # small sizes, a CI smoke run
    python tests/perf/storage_bench.py --json     # also print the figures as JSON

Measures: append throughput of 64 KiB and 1 MiB batches (FileLog vs raw ``os.write`` of the
same bytes; target >= 80%); offset lookup on a 1-segment vs a 1,000-segment log (target within
2x); recovery after an unclean stop (the writer is SIGKILLed) with the last 10 MiB unflushed
(target well under 1 s), beside a full re-validation; reads of an older segment whose file is
kept open vs opened per read; RSS and descriptors of a log opened with 10 vs 1,000 segments. All files live in page cache: this measures the code, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sluice.broker.storage import FileLog, TopicConfig, ValidatedBatches
from sluice.broker.storage.files import HandleQuota
from sluice.protocol.batch import build_batch

KIB, MIB, GIB = 1024, 1024**2, 1024**3


def make_batch(size: int, ts: int = 0) -> bytearray:
    """One batch of about ``size`` bytes (a single record; storage never decodes it)."""
    return build_batch([(None, b"x" * max(size - 80, 1), [], ts)])


def best_of_interleaved(runs: int, *fns) -> list[float]:
    """Best time of each function over ``runs`` rounds, alternating them (a busy machine then
    slows both sides alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], fn())
    return best


# -- append --------------------------------------------------------------------------------


def bench_append(work: Path, batch_size: int, total: int, runs: int) -> dict:
    batches = [make_batch(batch_size, ts) for ts in range(8)]
    validated = [ValidatedBatches.parse(batch) for batch in batches]  # as the broker hands them
    count = max(total // len(batches[0]), 8)
    volume = count * len(batches[0])

    def raw() -> float:
        path = work / "raw.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        start = time.perf_counter()
        for i in range(count):
            os.write(fd, batches[i & 7])
        elapsed = time.perf_counter() - start
        os.close(fd)
        path.unlink()
        return elapsed

    def filelog() -> float:
        path = work / "log"
        log = FileLog.open(path, TopicConfig(max_message_bytes=2 * batch_size), recovery_point=None)
        start = time.perf_counter()
        for i in range(count):
            log.append(validated[i & 7])
        elapsed = time.perf_counter() - start
        log.delete()
        return elapsed

    raw_s, log_s = best_of_interleaved(runs, raw, filelog)
    return {
        "batch_bytes": len(batches[0]),
        "volume_bytes": volume,
        "raw_mb_s": volume / raw_s / MIB,
        "filelog_mb_s": volume / log_s / MIB,
        "ratio": raw_s / log_s,
    }


# -- lookup --------------------------------------------------------------------------------


def build_log(path: Path, batches: int, segment_bytes: int, batch_size: int = 200) -> FileLog:
    """A live log (as in a running broker: only the LRU's sealed segments stay loaded)."""
    log = FileLog.open(path, TopicConfig(segment_bytes=segment_bytes), recovery_point=None)
    template = make_batch(batch_size)
    for _ in range(batches):
        log.append(ValidatedBatches.parse(bytearray(template)))
    return log


def time_lookups(log: FileLog, offsets: list[int]) -> float:
    start = time.perf_counter()
    for offset in offsets:
        for piece in log.read(offset, 1).slices:
            piece.file.release()
    return (time.perf_counter() - start) / len(offsets) * 1e6


def bench_lookup(work: Path, batches: int, lookups: int) -> dict:
    batch = len(make_batch(200))
    one = build_log(work / "one", batches, GIB)
    many = build_log(work / "many", batches, batches * batch // 1_000)
    rng = random.Random(7)
    uniform = [rng.randrange(batches) for _ in range(lookups)]
    tail = [rng.randrange(batches - batches // 250, batches) for _ in range(lookups)]
    result = {"segments": [one.segment_count, many.segment_count]}
    for name, offsets in (("tail", tail), ("uniform", uniform)):
        one_us, many_us = best_of_interleaved(
            3, lambda o=offsets: time_lookups(one, o), lambda o=offsets: time_lookups(many, o)
        )
        result[name] = {"one_us": one_us, "many_us": many_us, "ratio": many_us / one_us}
    one.delete()  # no flush: durability is not what this measures
    many.delete()
    return result


def bench_read_on(work: Path, batches: int, budget: int) -> dict:
    """A consumer's reads: each from the offset after the previous read's last batch (the
    segment remembers where reads ended), against the same reads starting one offset into
    their first batch (an offset no read ended at: index lookup and header walk)."""
    log = FileLog.open(work / "read-on", TopicConfig(segment_bytes=GIB), recovery_point=None)
    template = build_batch([(None, b"x" * 60, [], 0)] * 3)  # 3 records: offset + 1 is inside
    for _ in range(batches):
        log.append(ValidatedBatches.parse(bytearray(template)))
    starts, offset = [], 0
    while offset < log.log_end_offset:
        starts.append(offset)
        result = log.read(offset, budget)
        for piece in result.slices:
            offset += piece.length // len(template) * 3
            piece.file.release()

    def timed(offsets: list[int]) -> float:
        began = time.perf_counter()
        for offset in offsets:
            for piece in log.read(offset, budget).slices:
                piece.file.release()
        return (time.perf_counter() - began) / len(offsets) * 1e6

    read_on_us, looked_up_us = best_of_interleaved(
        3, lambda: timed(starts), lambda: timed([o + 1 for o in starts])
    )
    log.delete()
    return {"reads": len(starts), "budget": budget, "read_on_us": read_on_us,
            "looked_up_us": looked_up_us, "ratio": read_on_us / looked_up_us}


def bench_sealed_reads(work: Path, batches: int, budget: int) -> dict:
    """A consumer catching up through an older (sealed) segment, ``budget`` bytes a read: with
    the segment's descriptor kept between reads (a token of the broker's ``HandleQuota``)
    against opened and closed for every read (the quota spent)."""
    template = build_batch([(None, b"x" * 200, [], 0)])
    logs = []
    for name, quota in (("kept", HandleQuota()), ("reopened", HandleQuota(0))):
        log = FileLog.open(work / name, TopicConfig(segment_bytes=GIB), recovery_point=None,
                           quota=quota)
        for _ in range(batches):
            log.append(ValidatedBatches.parse(bytearray(template)))
        log.roll()  # the data is in a sealed segment now
        logs.append(log)
    starts = list(range(0, batches, max(budget // len(template), 1)))

    def timed(log: FileLog) -> float:
        began = time.perf_counter()
        for offset in starts:
            for piece in log.read(offset, budget).slices:
                piece.file.release()
        return (time.perf_counter() - began) / len(starts) * 1e6

    kept_us, reopened_us = best_of_interleaved(3, lambda: timed(logs[0]), lambda: timed(logs[1]))
    for log in logs:
        log.delete()
    return {"reads": len(starts), "budget": budget, "kept_us": kept_us,
            "reopened_us": reopened_us, "ratio": reopened_us / kept_us}


# -- recovery ------------------------------------------------------------------------------


def write_then_die(path: str, total: int, unflushed: int, batch_size: int) -> None:
    """Child process: fill the log, flush all but the last ``unflushed`` bytes, then SIGKILL."""
    log = FileLog.open(Path(path), TopicConfig(), recovery_point=None)
    template = make_batch(batch_size)
    written = 0
    while written < total - unflushed:
        log.append(ValidatedBatches.parse(bytearray(template)))
        written += len(template)
    log.flush()
    print(log.flushed_offset, flush=True)
    while written < total:
        log.append(ValidatedBatches.parse(bytearray(template)))
        written += len(template)
    os.kill(os.getpid(), signal.SIGKILL)


def bench_recovery(work: Path, total: int, unflushed: int) -> dict:
    path = work / "crashed"
    child = subprocess.run(
        [sys.executable, __file__, "--child-crash", str(path), str(total), str(unflushed)],
        capture_output=True,
        text=True,
    )
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"writer ended with {child.returncode}: {child.stderr}")
    recovery_point = int(child.stdout.split()[0])
    backup = work / "crashed.bak"
    shutil.copytree(path, backup)

    def timed_open(point: int | None) -> tuple[float, FileLog]:
        start = time.perf_counter()
        log = FileLog.open(path, TopicConfig(), recovery_point=point)
        return time.perf_counter() - start, log

    recover_s, log = timed_open(recovery_point)
    end = log.log_end_offset
    log.close()
    clean_s, log = timed_open(None)
    log.close()
    shutil.rmtree(path)
    shutil.copytree(backup, path)
    full_s, log = timed_open(0)
    assert log.log_end_offset == end
    log.close()
    return {
        "log_bytes": total,
        "unflushed_bytes": unflushed,
        "recover_from_point_s": recover_s,
        "recover_everything_s": full_s,
        "clean_open_s": clean_s,
    }


# -- memory --------------------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_open(path: str) -> None:
    """Child process: RSS and descriptors added by opening the log and reading every segment."""
    fds = len(os.listdir("/proc/self/fd"))
    before = rss_kib()
    log = FileLog.open(Path(path), TopicConfig(segment_bytes=64 * KIB), recovery_point=None)
    for base in sorted(int(p.name[:20]) for p in Path(path).glob("*.log")):
        for piece in log.read(base, 1).slices:
            piece.file.release()
    print(rss_kib() - before, len(os.listdir("/proc/self/fd")) - fds)


def bench_memory(work: Path, counts: tuple[int, ...]) -> dict:
    result = {}
    template = make_batch(4 * KIB)
    for count in counts:
        path = work / f"segments-{count}"
        log = FileLog.open(path, TopicConfig(segment_bytes=64 * KIB), recovery_point=None)
        while log.segment_count < count:
            log.append(ValidatedBatches.parse(bytearray(template)))
        log.close()
        out = subprocess.run(
            [sys.executable, __file__, "--child-open", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        result[count] = {"rss_delta_kib": int(out[0]), "open_fds": int(out[1])}
        shutil.rmtree(path)
    return result


# -- report --------------------------------------------------------------------------------


def report(results: dict) -> str:
    rows = ["| measurement | FileLog | baseline | ratio | target |", "|---|---|---|---|---|"]
    for key, label in (("append_64k", "append 64 KiB batches"), ("append_1m", "append 1 MiB batches")):
        r = results[key]
        rows.append(
            f"| {label} (MiB/s, vs raw os.write) | {r['filelog_mb_s']:.0f} | {r['raw_mb_s']:.0f} "
            f"| {r['ratio']:.0%} | >= 80% |"
        )
    lookup = results["lookup"]
    for key, label in (("tail", "recent offsets"), ("uniform", "uniform random offsets")):
        r = lookup[key]
        rows.append(
            f"| offset lookup, {label} (us, {lookup['segments'][1]} vs {lookup['segments'][0]} "
            f"segment) | {r['many_us']:.1f} | {r['one_us']:.1f} | {r['ratio']:.2f}x | <= 2x |"
        )
    r = results["read_on"]
    rows.append(
        f"| a consumer's reads, {r['budget'] // KIB} KiB each: on from the last read's end vs "
        f"looked up (us) | {r['read_on_us']:.1f} | {r['looked_up_us']:.1f} | {r['ratio']:.2f}x | - |"
    )
    r = results["sealed_reads"]
    rows.append(
        f"| reads of an older segment, {r['budget'] // KIB} KiB each: file opened and closed per "
        f"read (handle quota spent) vs kept open (us) | {r['reopened_us']:.1f} | {r['kept_us']:.1f} "
        f"| {r['ratio']:.2f}x | - |"
    )
    rec = results["recovery"]
    rows.append(
        f"| unclean open, {rec['log_bytes'] / MIB:.0f} MiB log, last "
        f"{rec['unflushed_bytes'] / MIB:.0f} MiB unflushed (s) | {rec['recover_from_point_s']:.3f} "
        f"| {rec['recover_everything_s']:.3f} (re-validate all) | - | << 1 s |"
    )
    rows.append(f"| clean open of the same log (s) | {rec['clean_open_s']:.4f} | - | - | - |")
    mem = results["memory"]
    small, large = sorted(mem)
    rows.append(
        f"| RSS added by opening + reading every segment (KiB), {large} vs {small} segments "
        f"| {mem[large]['rss_delta_kib']} | {mem[small]['rss_delta_kib']} | - | flat |"
    )
    rows.append(
        f"| descriptors held after that, {large} vs {small} segments | {mem[large]['open_fds']} "
        f"| {mem[small]['open_fds']} | - | capped |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--child-crash", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-open", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_crash:
        path, total, unflushed = args.child_crash
        write_then_die(path, int(total), int(unflushed), 64 * KIB)
        return
    if args.child_open:
        measure_open(args.child_open)
        return
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-", dir=args.dir))
    try:
        quick = args.quick
        results = {
            "append_64k": bench_append(work, 64 * KIB, (8 if quick else 512) * MIB, 1 if quick else 3),
            "append_1m": bench_append(work, MIB, (8 if quick else 512) * MIB, 1 if quick else 3),
            "lookup": bench_lookup(work, 5_000 if quick else 200_000, 500 if quick else 20_000),
            "read_on": bench_read_on(work, 2_000 if quick else 100_000, 64 * KIB),
            "sealed_reads": bench_sealed_reads(work, 2_000 if quick else 100_000, 64 * KIB),
            "recovery": bench_recovery(work, (16 if quick else 1024) * MIB, (2 if quick else 10) * MIB),
            "memory": bench_memory(work, (10, 100 if quick else 1_000)),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
