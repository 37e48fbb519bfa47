#!/usr/bin/env python3
"""How Sluice's throughput and memory change with scale (issue 6, part 3).

    python tests/perf/scaling.py [--quick] [--reps 1] [--big-log-gib 2] [--json out.json]

Starts its own broker (``python -m sluice.broker --data-dir TMP --port 0``; a fresh one for each of
the four sections, so the memory figures of a section do not carry another's state) and
prints one markdown table per section (progress goes to stderr):

1. partitions (1, 4, 16, 64): one producer process sends keyless records with
   ``Producer.send_batch`` (the sticky partitioner moves to the next partition each time a
   batch is sealed), then one consumer process assigned every partition reads them all;
2. concurrency (1, 4, 16) on a 16-partition topic: that many producer processes (one
   ``Producer`` each, keyless ``send_batch``, the records split evenly between them), then
   that many consumer processes (one ``Consumer`` each, assigned partitions ``i::n``);
   aggregate records/s over the span from the first process's start to the last one's end;
3. record size (100 B, 1 KiB, 10 KiB, 100 KiB values, the same number of bytes each): produce
   and consume records/s and MB/s on one partition;
4. log size: fetch from offset 0 of a large log (``--big-log-gib``, default 10) with the head of its
   first segment evicted from the page cache (``posix_fadvise(DONTNEED)`` after
   ``fdatasync``; ``--drop-caches`` also writes 1 to /proc/sys/vm/drop_caches, which touches
   the whole machine) -- the broker's cold path, which warms cold ranges in a worker thread --
   then the same range again (now cached), vs a fresh small log just written. Each read is
   done by a raw reader (blocking socket, sans-IO protocol, no record decoding: the broker's
   fetch path) and by a ``sluice.client.Consumer`` process (what an application gets). The table
   shows how much of the range was in the page cache before each read (``mincore``).

Every figure is repeated ``--reps`` times (default 1 here, so that a full run stays well under
ten minutes -- about three on the 2-core VM; cells show the median and, with more
repetitions, every value). Broker memory is
``VmRSS`` (after the step) and ``VmHWM`` (its peak during the step: the peak is reset through
/proc/PID/clear_refs before each step) from /proc/PID/status; broker CPU from
/proc/PID/stat. Producers and consumers are separate processes (``scaling.py --worker``),
started and made ready (connected, metadata fetched, values built) before a common start
signal, so process start-up is not timed. ``--quick`` is a smoke mode of a few seconds with
tiny sizes and fewer steps (used by tests/perf/test_scaling_smoke.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import mmap
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from broker_bench import Client as RawClient  # noqa: E402 - the same lean protocol client
from compare import execute_and_report, machine_line  # noqa: E402 - as the comparison's

MIB = 1024 * 1024
GIB = 1024 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
READY, GO, RESULT = "READY", "GO", "RESULT "
SEND_CHUNK = 10_000  # records per send_batch call (fewer for large values: see chunk_for)
FETCH_BYTES = 8 * MIB  # raw reader: bytes asked per fetch


# -- /proc helpers ------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all threads)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_mib(pid: int) -> dict:
    """``{"rss": VmRSS, "hwm": VmHWM}`` in MiB (None if unreadable)."""
    out = {"rss": None, "hwm": None}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            out["hwm"] = int(line.split()[1]) / 1024
    return out


def reset_peak(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (Linux >= 4.0; our own child)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (iowait and idle count as idle)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- page cache ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def cached_fraction(path: Path, offset: int, length: int) -> float | None:
    """Share of the pages of ``path[offset:offset+length]`` in the page cache (``mincore`` on
    a private mapping, which faults nothing in); None if it cannot tell."""
    try:
        size = path.stat().st_size
        start = offset - offset % PAGE
        length = min(offset + length, size) - start
        if length <= 0:
            return None
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_COPY, offset=start)
        try:
            anchor = ctypes.c_char.from_buffer(mm)
            pages = (length + PAGE - 1) // PAGE
            vec = ctypes.create_string_buffer(pages)
            rc = _libc.mincore(ctypes.addressof(anchor), length, vec)
            del anchor
            if rc != 0:
                return None
            return sum(b & 1 for b in vec.raw) / pages
        finally:
            mm.close()
    except (OSError, ValueError, BufferError):
        return None


def evict(path: Path, length: int) -> None:
    """Write back, then drop ``path[0:length]`` from the page cache (this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_all_caches() -> bool:
    """``sync; echo 1 > /proc/sys/vm/drop_caches`` (root only; the whole machine's cache)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


# -- the broker ---------------------------------------------------------------------------------


class Broker:
    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.data = self.dir / "data"
        self.log_path = self.dir / "broker.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sluice.broker", "--data-dir", str(self.data), "--port", "0",
                 "--host", "127.0.0.1", "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=env,
            )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"broker did not start: {tail_of(self.log_path)}")
            if line.startswith("listening on "):
                self.address = line.split()[-1]
                self.port = int(self.address.rsplit(":", 1)[1])
                return

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def segment_files(self, topic: str, partition: int = 0) -> list[Path]:
        return sorted((self.data / f"{topic}-{partition}").glob("*.log"))


def _pump(stream, lines: queue.Queue) -> None:
    """Every line of a child's stdout onto ``lines`` (as str), then None at EOF."""
    for raw in stream:
        lines.put(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    lines.put(None)


def tail_of(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- admin calls from the orchestrator ----------------------------------------------------------


def admin(address: str, op: str, *args):
    import trio
    from sluice import client

    async def run():
        async with client.Admin(address, client_id="scaling-admin") as a:
            if op == "create":
                name, partitions = args
                await a.create_topic(name, partitions)
            elif op == "delete":
                await a.delete_topic(args[0])
            elif op == "ends":
                name, partitions = args
                got = await a.list_offsets({(name, p): "latest" for p in range(partitions)})
                return [got[(name, p)][0] if got.get((name, p)) else 0
                        for p in range(partitions)]
        return None

    return trio.run(run)


# -- worker processes ---------------------------------------------------------------------------


def chunk_for(value_size: int) -> int:
    """Records per ``send_batch`` call: 10,000, or about 4 MiB of values if that is fewer."""
    return max(1, min(SEND_CHUNK, (4 * MIB) // max(1, value_size)))


async def _wait_go() -> None:
    import trio

    print(READY, flush=True)
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != GO:
        raise SystemExit(f"expected {GO!r}, got {line!r}")


async def work_produce(p: dict) -> dict:
    from sluice import client

    n, size = p["records"], p["value_size"]
    value = os.urandom(size)
    items = [value] * n  # keyless: the sticky partitioner spreads the batches
    step = chunk_for(size)
    chunks = [items[i : i + step] for i in range(0, n, step)]
    results = []
    async with client.Producer(p["address"], client_id=p.get("client_id", "scaling-producer"),
                               acks=p.get("acks", 1)) as prod:
        await prod.partitions_for(p["topic"])
        await _wait_go()
        gc.collect()
        gc.freeze()
        cpu0, t0 = self_cpu_s(), time.monotonic()
        for chunk in chunks:
            results.append(await prod.send_batch(p["topic"], chunk))
        await prod.flush()
        t1, cpu1 = time.monotonic(), self_cpu_s()
    acked = 0
    for result in results:
        try:
            acked += len(await result)
        except Exception:  # noqa: BLE001 - a failed batch counts as not acknowledged
            pass
    return {"t0": t0, "t1": t1, "cpu_s": cpu1 - cpu0, "records": n, "acked": acked,
            "bytes": n * size}


async def work_consume(p: dict) -> dict:
    import trio
    from sluice import client

    parts = [tuple(x) for x in p["partitions"]]
    async with client.Consumer(p["address"], client_id=p.get("client_id", "scaling-consumer"),
                               auto_offset_reset="earliest") as cons:
        cons.assign(parts)
        if p.get("records") is not None:
            target = p["records"]
        else:
            begins = await cons.beginning_offsets(parts)
            ends = await cons.end_offsets(parts)
            target = sum(ends[tp] - begins[tp] for tp in parts)
        got = 0
        await _wait_go()
        gc.collect()
        gc.freeze()
        cpu0, t0 = self_cpu_s(), time.monotonic()
        with trio.move_on_after(p.get("timeout_s", 300)):
            if target > 0:
                async for records in cons.batches():
                    got += len(records)
                    if got >= target:
                        break
        t1, cpu1 = time.monotonic(), self_cpu_s()
    # every value of a step has the same size: no per-record work in the timed loop
    return {"t0": t0, "t1": t1, "cpu_s": cpu1 - cpu0, "records": got, "expected": target,
            "bytes": got * p["value_size"]}


WORK = {"produce": work_produce, "consume": work_consume}


def worker_main(role: str, params: str) -> int:
    import trio

    result = trio.run(WORK[role], json.loads(params))
    print(RESULT + json.dumps(result), flush=True)
    return 0


class Worker:
    """One worker process: its stdout lines arrive on a queue (so every wait has a deadline)."""

    def __init__(self, role: str, params: dict, errdir: Path, tag: str) -> None:
        self.role = role
        self.err_path = errdir / f"{tag}.stderr"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", role,
                 json.dumps(params)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                cwd=REPO,
            )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.lines), daemon=True).start()

    def expect(self, prefix: str, deadline: float) -> str:
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise WorkerError(f"{self.role} worker: no {prefix.strip()!r} "
                                  f"(exit {self.proc.poll()}): {tail_of(self.err_path)}")
            if line.startswith(prefix):
                return line
            if time.monotonic() > deadline:
                raise WorkerError(f"{self.role} worker: timed out waiting for {prefix.strip()}")

    def go(self) -> None:
        self.proc.stdin.write(GO + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class WorkerError(RuntimeError):
    pass


def run_group(broker: Broker, role: str, params: list[dict], workdir: Path,
              timeout: float) -> dict:
    """Start one worker per ``params``, wait until all are ready, start them together and
    collect their figures: aggregate records/s over first start -> last end, broker CPU over
    the same window, broker VmRSS after and VmHWM during it."""
    deadline = time.monotonic() + timeout
    workers = [Worker(role, p, workdir, f"{role}-{i}-{time.monotonic_ns()}")
               for i, p in enumerate(params)]
    try:
        for w in workers:
            w.expect(READY, deadline)
        peak_reset = reset_peak(broker.pid)
        cpu0 = proc_cpu_s(broker.pid)
        for w in workers:
            w.go()
        results = [json.loads(w.expect(RESULT, deadline)[len(RESULT):]) for w in workers]
        cpu1 = proc_cpu_s(broker.pid)
        mem = proc_mem_mib(broker.pid)
        for w in workers:
            w.proc.wait(max(1, deadline - time.monotonic()))
    finally:
        for w in workers:
            w.kill()
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    records = sum(r["records"] for r in results)
    out = {
        "processes": len(results),
        "records": records,
        "bytes": sum(r["bytes"] for r in results),
        "span_s": span,
        "records_per_s": records / span if span > 0 else 0.0,
        "mb_per_s": sum(r["bytes"] for r in results) / span / 1e6 if span > 0 else 0.0,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "broker_cpu_s": cpu1 - cpu0,
        "broker_cpu_pct": 100 * (cpu1 - cpu0) / span if span > 0 else 0.0,
        "rss_mib": mem["rss"],
        "hwm_mib": mem["hwm"] if peak_reset else None,
    }
    if role == "produce":
        out["acked"] = sum(r["acked"] for r in results)
    else:
        out["expected"] = sum(r["expected"] for r in results)
    return out


def write_log(port: int, topic: str, total_bytes: int, value_size: int) -> dict:
    """Append ``total_bytes`` of ~1 MiB batches (``value_size`` values), 8 requests in
    flight, acks=1. Returns MB/s and the records written."""
    from sluice.protocol import messages as m
    from sluice.protocol.batch import build_batch

    per_batch = max(1, MIB // (value_size + 16))
    now = int(time.time() * 1000)
    batch = bytes(build_batch([(None, os.urandom(value_size), [], now)] * per_batch))
    count = max(1, -(-total_bytes // len(batch)))
    request = m.ProduceRequest(acks=1, timeout_ms=30_000, partitions=[
        m.ProducePartition(topic=topic, partition=0, records=batch)])
    raw = RawClient(port)
    t0 = time.monotonic()
    sent = done = 0
    try:
        while done < count:
            while sent < count and sent - done < 8:
                raw.send(request)
                sent += 1
            response = raw.receive()
            error = response.partitions[0].error
            if error:
                raise RuntimeError(f"produce to {topic} failed: error {error} "
                                   f"{response.partitions[0].message}")
            done += 1
    finally:
        raw.close()
    elapsed = time.monotonic() - t0
    return {"bytes": count * len(batch), "records": count * per_batch,
            "mb_per_s": count * len(batch) / elapsed / 1e6, "seconds": elapsed}


def raw_read(port: int, topic: str, nbytes: int) -> dict:
    """Fetch from offset 0 until ``nbytes`` of batches arrived (``FETCH_BYTES`` per fetch,
    one at a time, nothing decoded but each response's last batch header)."""
    from sluice.protocol import messages as m
    from sluice.protocol.batch import parse_header, split_batches

    raw = RawClient(port)
    offset = got = fetches = 0
    t0 = time.monotonic()
    try:
        for _ in range(nbytes // 4096 + 10):  # bounded: every useful fetch is >= one batch
            if got >= nbytes:
                break
            raw.send(m.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=FETCH_BYTES,
                                    partitions=[m.FetchPartition(topic=topic, partition=0,
                                                                 offset=offset,
                                                                 max_bytes=FETCH_BYTES)]))
            response = raw.receive()
            part = response.partitions[0]
            if part.error:
                raise RuntimeError(f"fetch from {topic} failed: error {part.error} {part.message}")
            data = part.records
            positions, _ = split_batches(data)
            if not positions:
                break
            offset = parse_header(data, positions[-1][0]).next_offset
            got += len(data)
            fetches += 1
    finally:
        raw.close()
    elapsed = time.monotonic() - t0
    return {"bytes": got, "records": offset, "fetches": fetches,
            "mb_per_s": got / elapsed / 1e6 if elapsed > 0 else 0.0, "seconds": elapsed}


# -- the run ------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict[str, dict] = {"partitions": {}, "concurrency": {}, "record_size": {},
                                      "log_size": {}}
        self.notes: dict[str, list[str]] = {k: [] for k in self.rows}
        self.errors: list[str] = []
        self.load: list[tuple[str, float]] = []
        self.idle_rss: dict[str, list[float]] = {}
        self.brokers = 0

    # rows[section][row label] = {figure: [value per rep]}
    def add(self, section: str, row: str, figure: str, value) -> None:
        self.rows[section].setdefault(row, {}).setdefault(figure, []).append(value)

    def error(self, message: str) -> None:
        self.errors.append(message)
        log(f"  error: {message}")

    def note_load(self, when: str) -> None:
        self.load.append((when, os.getloadavg()[0]))

    def execute(self) -> None:
        a = self.args
        self.workdir = Path(tempfile.mkdtemp(prefix="sluice-scaling-", dir=a.tmp_dir))
        self.started = datetime.datetime.now(datetime.UTC)
        try:
            for name, section in (("partitions", self.partitions),
                                  ("concurrency", self.concurrency),
                                  ("record_size", self.record_size),
                                  ("log_size", self.log_size)):
                if name not in a.sections:
                    continue
                self.note_load(f"{name} start")
                log(f"== {name} (load average {os.getloadavg()[0]:.2f})")
                busy0 = machine_busy()
                try:
                    section()
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    self.error(f"{name}: {exc}")
                finally:
                    idle = self.idle_rss.get(name)
                    if idle:
                        self.notes[name].append(
                            f"a fresh broker for every step"
                            f"{'' if name != 'log_size' else ' (here: for the section)'}; "
                            f"its VmRSS when idle: {span_text(idle)} MiB")
                    busy1 = machine_busy()
                    if busy1[1] > busy0[1]:
                        share = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
                        self.notes[name].append(
                            f"whole machine CPU busy during the section: {share:.0%} of "
                            f"{os.cpu_count()} cores (this run and everything else on it)")
            self.note_load("end")
        finally:
            if a.keep_tmp:
                log(f"kept {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.finished = datetime.datetime.now(datetime.UTC)

    @contextlib.contextmanager
    def fresh_broker(self, section: str):
        """A broker of its own for one step (memory figures carry no earlier step's state),
        stopped and its data removed afterwards."""
        self.brokers += 1
        broker = Broker(self.workdir, f"{section}-{self.brokers}")
        try:
            self.idle_rss.setdefault(section, []).append(proc_mem_mib(broker.pid)["rss"])
            yield broker
        finally:
            broker.stop()
            shutil.rmtree(broker.dir, ignore_errors=True)

    def group(self, broker: Broker, role: str, params: list[dict]) -> dict:
        budget = 120 + sum(p.get("records") or 0 for p in params) / 5_000
        return run_group(broker, role, params, self.workdir, budget)

    # 1 -----------------------------------------------------------------------------------------
    def partitions(self) -> None:
        a = self.args
        for rep in range(a.reps):
            for count in a.partition_counts:
                row = f"{count}"
                topic = f"part-{count}-{rep}"
                try:
                    with self.fresh_broker("partitions") as broker:
                        admin(broker.address, "create", topic, count)
                        p = self.group(broker, "produce", [{
                            "address": broker.address, "topic": topic, "records": a.records,
                            "value_size": a.value_size}])
                        ends = admin(broker.address, "ends", topic, count)
                        c = self.group(broker, "consume", [{
                            "address": broker.address, "topic": topic,
                            "partitions": [(topic, i) for i in range(count)],
                            "value_size": a.value_size}])
                        self.add("partitions", row, "produce records/s", p["records_per_s"])
                        self.add("partitions", row, "consume records/s", c["records_per_s"])
                        self.add("partitions", row, "partitions with records",
                                 sum(1 for e in ends if e))
                        self.add("partitions", row, "records per partition min-max",
                                 f"{min(ends):,}-{max(ends):,}")
                        self.add("partitions", row, "broker CPU µs/record (produce+consume)",
                                 (p["broker_cpu_s"] + c["broker_cpu_s"]) / a.records * 1e6)
                        self.add("partitions", row, "broker VmHWM MiB (produce)", p["hwm_mib"])
                        self.add("partitions", row, "broker VmHWM MiB (consume)", c["hwm_mib"])
                        self.add("partitions", row, "broker VmRSS MiB after", c["rss_mib"])
                        self.check(p, c, a.records, f"partitions {count}")
                        log(f"  {count} partitions: produce {p['records_per_s']:,.0f} rec/s, "
                            f"consume {c['records_per_s']:,.0f} rec/s, RSS {c['rss_mib']:.0f} MiB")
                except (WorkerError, RuntimeError, OSError) as exc:
                    self.error(f"partitions {count} rep {rep + 1}: {exc}")

    def check(self, p: dict, c: dict, expected: int, what: str) -> None:
        if p["acked"] != expected or c["records"] != expected:
            self.error(f"{what}: {p['acked']:,} acknowledged and {c['records']:,} consumed "
                       f"of {expected:,}")

    # 2 -----------------------------------------------------------------------------------------
    def concurrency(self) -> None:
        a = self.args
        partitions = a.concurrency_partitions
        for rep in range(a.reps):
            for n in a.concurrency_levels:
                topic = f"conc-{n}-{rep}"
                per = [a.records // n + (1 if i < a.records % n else 0) for i in range(n)]
                try:
                    with self.fresh_broker("concurrency") as broker:
                        admin(broker.address, "create", topic, partitions)
                        p = self.group(broker, "produce", [{
                            "address": broker.address, "topic": topic, "records": k,
                            "value_size": a.value_size, "client_id": f"producer-{i}"}
                            for i, k in enumerate(per)])
                        c = self.group(broker, "consume", [{
                            "address": broker.address, "topic": topic, "client_id": f"consumer-{i}",
                            "partitions": [(topic, j) for j in range(i, partitions, n)],
                            "value_size": a.value_size}
                            for i in range(n)])
                        for role, r in (("producers", p), ("consumers", c)):
                            row = f"{n} {role}"
                            self.add("concurrency", row, "aggregate records/s", r["records_per_s"])
                            self.add("concurrency", row, "aggregate MB/s", r["mb_per_s"])
                            self.add("concurrency", row, "broker CPU s", r["broker_cpu_s"])
                            self.add("concurrency", row, "broker CPU % of one core",
                                     r["broker_cpu_pct"])
                            self.add("concurrency", row, "client CPU s (all processes)",
                                     r["client_cpu_s"])
                            self.add("concurrency", row, "broker VmRSS MiB after", r["rss_mib"])
                            self.add("concurrency", row, "broker VmHWM MiB", r["hwm_mib"])
                        self.check(p, c, a.records, f"concurrency {n}")
                        log(f"  {n} producers {p['records_per_s']:,.0f} rec/s (broker "
                            f"{p['broker_cpu_pct']:.0f}% CPU), {n} consumers "
                            f"{c['records_per_s']:,.0f} rec/s, RSS {c['rss_mib']:.0f} MiB")
                except (WorkerError, RuntimeError, OSError) as exc:
                    self.error(f"concurrency {n} rep {rep + 1}: {exc}")

    # 3 -----------------------------------------------------------------------------------------
    def record_size(self) -> None:
        a = self.args
        for rep in range(a.reps):
            for size in a.value_sizes:
                records = max(a.min_records, a.size_bytes // size)
                row = human_bytes(size)
                topic = f"size-{size}-{rep}"
                try:
                    with self.fresh_broker("record_size") as broker:
                        admin(broker.address, "create", topic, 1)
                        p = self.group(broker, "produce", [{
                            "address": broker.address, "topic": topic, "records": records,
                            "value_size": size}])
                        c = self.group(broker, "consume", [{
                            "address": broker.address, "topic": topic, "partitions": [(topic, 0)],
                            "value_size": size}])
                        self.add("record_size", row, "records", records)
                        self.add("record_size", row, "produce records/s", p["records_per_s"])
                        self.add("record_size", row, "produce MB/s", p["mb_per_s"])
                        self.add("record_size", row, "consume records/s", c["records_per_s"])
                        self.add("record_size", row, "consume MB/s", c["mb_per_s"])
                        self.add("record_size", row, "broker VmHWM MiB (produce)", p["hwm_mib"])
                        self.add("record_size", row, "broker VmHWM MiB (consume)", c["hwm_mib"])
                        self.add("record_size", row, "broker VmRSS MiB after", c["rss_mib"])
                        self.check(p, c, records, f"record size {size}")
                        log(f"  {row}: produce {p['records_per_s']:,.0f} rec/s "
                            f"{p['mb_per_s']:,.1f} MB/s, consume {c['records_per_s']:,.0f} rec/s "
                            f"{c['mb_per_s']:,.1f} MB/s")
                except (WorkerError, RuntimeError, OSError) as exc:
                    self.error(f"record size {size} rep {rep + 1}: {exc}")

    # 4 -----------------------------------------------------------------------------------------
    def log_size(self) -> None:
        with self.fresh_broker("log_size") as broker:
            self.log_size_on(broker)

    def log_size_on(self, broker: Broker) -> None:
        a = self.args
        head = a.head_mib * MIB
        big = int(a.big_log_gib * GIB)
        size = a.log_value_size
        free = shutil.disk_usage(broker.dir).free
        if free < big + head + GIB:
            raise RuntimeError(f"{free / GIB:.1f} GiB free in {broker.dir}, the big log "
                               f"needs {(big + head + GIB) / GIB:.1f} GiB: pass a smaller "
                               "--big-log-gib or another --tmp-dir")
        admin(broker.address, "create", "log-big", 1)
        admin(broker.address, "create", "log-small", 1)
        w = write_log(broker.port, "log-big", big, size)
        mem = proc_mem_mib(broker.pid)
        self.notes["log_size"].append(
            f"big log: {w['bytes'] / GIB:.2f} GiB ({w['records']:,} records of {size:,} B in "
            f"~1 MiB batches) written with a raw pipelined producer at {w['mb_per_s']:,.0f} "
            f"MB/s; broker VmRSS after writing it {mem['rss']:.0f} MiB, VmHWM {mem['hwm']:.0f} "
            f"MiB")
        log(f"  wrote {w['bytes'] / GIB:.2f} GiB at {w['mb_per_s']:,.0f} MB/s")
        s = write_log(broker.port, "log-small", head, size)
        self.notes["log_size"].append(
            f"small log: {s['bytes'] / MIB:.0f} MiB, written just before it is read "
            f"(page-cached); every read covers the first {a.head_mib} MiB of its log")
        segments = broker.segment_files("log-big")
        first = segments[0]
        self.notes["log_size"].append(
            f"big log segments: {len(segments)} (first {first.stat().st_size / MIB:,.0f} MiB); "
            f"its head is evicted with posix_fadvise(DONTNEED) after fdatasync"
            + (" and the whole machine's page cache dropped (drop_caches)" if a.drop_caches
               else ""))
        dropped = []

        def make_cold() -> float | None:
            evict(first, head + 16 * MIB)
            if a.drop_caches:
                dropped.append(drop_all_caches())
            return cached_fraction(first, 0, head)

        for rep in range(a.reps):
            steps = [("fresh small log", "log-small", None),
                     (f"{w['bytes'] / GIB:.2f} GiB log, head evicted", "log-big", make_cold),
                     (f"{w['bytes'] / GIB:.2f} GiB log, head again (cached)", "log-big", None)]
            for label, topic, prepare in steps:
                target_records = None  # the consumer reads what the raw reader read
                path = broker.segment_files(topic)[0]
                for reader in ("raw reader", "client consumer"):
                    row = f"{label} | {reader}"
                    try:
                        cached = prepare() if prepare else cached_fraction(path, 0, head)
                        reset_peak(broker.pid)
                        cpu0 = proc_cpu_s(broker.pid)
                        if reader == "raw reader":
                            r = raw_read(broker.port, topic, head)
                            records, mbps = r["records"], r["mb_per_s"]
                            rps = r["records"] / r["seconds"] if r["seconds"] > 0 else 0.0
                            target_records = r["records"]
                        elif target_records is None:
                            raise RuntimeError("skipped: the raw read before it failed")
                        else:
                            r = self.group(broker, "consume", [{
                                "address": broker.address, "topic": topic,
                                "partitions": [(topic, 0)], "records": target_records,
                                "value_size": size}])
                            records, mbps, rps = r["records"], r["mb_per_s"], r["records_per_s"]
                        cpu = proc_cpu_s(broker.pid) - cpu0
                        mem = proc_mem_mib(broker.pid)
                        self.add("log_size", row, "page cache before read",
                                 None if cached is None else f"{cached:.0%}")
                        self.add("log_size", row, "MB/s", mbps)
                        self.add("log_size", row, "records/s", rps)
                        self.add("log_size", row, "records read", records)
                        self.add("log_size", row, "broker CPU s", cpu)
                        self.add("log_size", row, "broker VmHWM MiB", mem["hwm"])
                        log(f"  {row}: {mbps:,.0f} MB/s, {rps:,.0f} rec/s (cached before: "
                            f"{'?' if cached is None else f'{cached:.0%}'})")
                    except (WorkerError, RuntimeError, OSError) as exc:
                        self.error(f"log size {row} rep {rep + 1}: {exc}")
        self.notes["log_size"].append(
            "the raw reader fetches 8 MiB at a time and decodes nothing but each response's "
            "last batch header (the broker's fetch path); the consumer is a client.Consumer "
            "process. 'Evicted' means evicted from this machine's page cache, checked with "
            "mincore: on a VM the host may still hold the blocks, so a cold read here can be "
            "faster than the physical disk")
        if a.drop_caches:
            self.notes["log_size"].append(
                "drop_caches: " + ("written" if dropped and all(dropped) else "refused"))

    # -- report ---------------------------------------------------------------------------------

    def markdown(self) -> str:
        a = self.args
        out = [f"## Sluice scaling: {self.reps_line()}", "", f"{machine_line()}, commit {git_commit()}", ""]
        titles = {
            "partitions": f"### Partitions: one producer process, {a.records:,} keyless "
                          f"records of {a.value_size} B (send_batch, sticky partitioner), then "
                          "one consumer process assigned every partition",
            "concurrency": f"### Concurrency: {a.records:,} records of {a.value_size} B in all, "
                           f"on a {a.concurrency_partitions}-partition topic; N producer "
                           "processes (the records split evenly), then N consumer processes "
                           "(consumer i assigned partitions i, i+N, ...)",
            "record_size": f"### Record size: about {a.size_bytes / MIB:,.0f} MiB of values per "
                           f"size (at least {a.min_records:,} records), one partition, one "
                           "producer process then one consumer process",
            "log_size": f"### Log size: fetch from offset 0 of a {a.big_log_gib:g} GiB log vs "
                        f"a fresh {a.head_mib} MiB one ({a.log_value_size:,} B values)",
        }
        first_col = {"partitions": "partitions", "concurrency": "processes",
                     "record_size": "value size", "log_size": "log | reader"}
        for section, rows in self.rows.items():
            if section not in a.sections:
                continue
            out += [titles[section], ""]
            if not rows:
                out += ["(no figures: see the errors below)", ""]
                continue
            figures: list[str] = []
            for figs in rows.values():
                figures += [f for f in figs if f not in figures]
            head = first_col[section].split(" | ")
            out.append("| " + " | ".join(head + figures) + " |")
            out.append("|" + "---|" * (len(head) + len(figures)))
            for label, figs in rows.items():
                cells = label.split(" | ") + [cell(f, figs.get(f)) for f in figures]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
            out += [f"- {note}" for note in self.notes[section]]
            out.append("")
        out.append("load average (1 min): " + ", ".join(
            f"{when} {value:.2f}" for when, value in self.load))
        for e in self.errors:
            out.append(f"\nerror: {e}")
        return "\n".join(out) + "\n"

    def reps_line(self) -> str:
        a = self.args
        return (f"{a.reps} repetition(s){' (quick)' if a.quick else ''}, "
                f"{self.started:%Y-%m-%d %H:%M}-{self.finished:%H:%M} UTC")

    def as_json(self) -> dict:
        a = self.args
        return {
            "meta": {
                "started": self.started.isoformat(timespec="seconds"),
                "finished": self.finished.isoformat(timespec="seconds"),
                "machine": machine_line(), "commit": git_commit(), "quick": a.quick,
                "reps": a.reps, "records": a.records, "value_size": a.value_size,
                "partition_counts": a.partition_counts,
                "concurrency_levels": a.concurrency_levels,
                "concurrency_partitions": a.concurrency_partitions,
                "value_sizes": a.value_sizes, "size_bytes": a.size_bytes,
                "big_log_gib": a.big_log_gib, "head_mib": a.head_mib,
                "log_value_size": a.log_value_size, "drop_caches": a.drop_caches,
                "load_average": self.load,
            },
            "sections": self.rows,
            "notes": self.notes,
            "errors": self.errors,
        }


# -- helpers ------------------------------------------------------------------------------------


def span_text(values: list[float]) -> str:
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}-{high}"


def human_bytes(n: int) -> str:
    for unit, size in (("MiB", MIB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def fmt(figure: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if "records/s" in figure:
        return f"{value:,.0f}"
    if "MB/s" in figure or "MiB" in figure or "%" in figure:
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.2f}"


def cell(figure: str, values: list | None) -> str:
    if not values:
        return "-"
    if len(values) == 1 or all(v == values[0] for v in values):
        return fmt(figure, values[0])  # (the same in every repetition: shown once)
    numbers = [v for v in values if isinstance(v, (int, float))]
    if len(numbers) != len(values):
        return ", ".join(fmt(figure, v) for v in values)
    return (f"**{fmt(figure, statistics.median(numbers))}** "
            f"({', '.join(fmt(figure, v) for v in values)})")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + (" (work tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


SECTIONS = ("partitions", "concurrency", "record_size", "log_size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Sluice throughput and memory vs partitions, concurrency, record size and "
                    "log size.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: tiny sizes, fewer steps, a few seconds per section")
    p.add_argument("--reps", type=int, default=1, help="repetitions of every figure")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--records", type=int, default=None,
                   help="records per step of the partition and concurrency sections "
                        "(2,000,000; quick 20,000)")
    p.add_argument("--value-size", type=int, default=100,
                   help="value bytes in the partition and concurrency sections")
    p.add_argument("--partitions", default=None, help="partition counts (1,4,16,64)")
    p.add_argument("--concurrency", default=None, help="producer/consumer processes (1,4,16)")
    p.add_argument("--concurrency-partitions", type=int, default=16,
                   help="partitions of the concurrency topic")
    p.add_argument("--value-sizes", default=None,
                   help="value sizes in bytes (100,1024,10240,102400)")
    p.add_argument("--size-mib", type=float, default=None,
                   help="MiB of values per record size (128; quick 2)")
    p.add_argument("--min-records", type=int, default=None,
                   help="at least this many records per record size (1,000; quick 50)")
    p.add_argument("--big-log-gib", type=float, default=None,
                   help="size of the large log (10, the issue's figure; quick 0.0625); it needs "
                        "that much free space in --tmp-dir")
    p.add_argument("--head-mib", type=int, default=None,
                   help="MiB read from the head of each log, and the small log's size "
                        "(256; quick 8)")
    p.add_argument("--log-value-size", type=int, default=1024,
                   help="value bytes of the log-size section's records")
    p.add_argument("--drop-caches", action="store_true",
                   help="also write 1 to /proc/sys/vm/drop_caches before each cold read "
                        "(root; drops the whole machine's page cache, not just the head's)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="which sections to run")
    p.add_argument("--tmp-dir", default=None, help="parent of the temporary data dirs")
    p.add_argument("--keep-tmp", action="store_true", help="keep the data dirs afterwards")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {
        "records": 20_000 if q else 2_000_000,
        "partitions": "1,4" if q else "1,4,16,64",
        "concurrency": "1,2" if q else "1,4,16",
        "value_sizes": "100,10240" if q else "100,1024,10240,102400",
        "size_mib": 2 if q else 128,
        "min_records": 50 if q else 1000,
        "big_log_gib": 1 / 16 if q else 10,
        "head_mib": 8 if q else 256,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.partition_counts = int_list(args.partitions)
    args.concurrency_levels = int_list(args.concurrency)
    args.value_sizes = int_list(args.value_sizes)
    args.size_bytes = int(args.size_mib * MIB)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := [s for s in args.sections if s not in SECTIONS]:
        p.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.reps < 1 or args.records < 1 or args.value_size < 1:
        p.error("--reps, --records and --value-size must be positive")
    if not all(n >= 1 for n in args.partition_counts + args.concurrency_levels + args.value_sizes):
        p.error("partition counts, process counts and value sizes must be positive")
    if args.big_log_gib * GIB < args.head_mib * MIB:
        p.error("--big-log-gib must be at least --head-mib")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    args = parse_args(argv)
    return execute_and_report(Run(args), args.json)


if __name__ == "__main__":
    sys.exit(main())
