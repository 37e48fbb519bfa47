#!/usr/bin/env python3
"""Measure Sluice, Redis Streams and NATS JetStream side by side, on this machine, in one run.

    python tests/perf/compare.py [--records N] [--value-size 100] [--reps R]
                                 [--systems sluice,redis,nats] [--quick] [--json out.json]

Every server is started here on 127.0.0.1 (a free port) with its data in a temporary
directory, and stopped at the end. Nothing is installed: a peer whose server binary or Python
client is missing is reported as skipped. Each figure is measured ``--reps`` times (the
systems take turns within a repetition, so machine noise spreads over all of them); the table
shows the median and every repetition. See docs/PERF.md for what each figure means.

Workload per system and repetition (one partition / stream, N records of --value-size bytes,
16-byte keys where the system has keys):
  produce   N records as fast as the client's batch API allows; acknowledged records/s, MB/s
  consume   the same N records from the beginning; records/s, MB/s; records lost
  e2e       --e2e-rate records/s for --e2e-seconds (after a warm-up) from a producer process
            to a consumer process; latency p50/p99/max from the timestamp in the value
Sluice runs as four variants: its trio client and its blocking client (``sluice.client.sync``),
each at acks=1 and acks=all (fsync before the ack). For both clients it also measures one
``send`` per record then ``flush`` (per-record send), ``for record in consumer`` (per-record
consume), and the e2e test at every ``--e2e-lingers`` value (the first gives the plain "e2e"
rows, comparable with the peers'); the blocking client only that. Sluice's "raw fetch"
reads the produced partition again and again (as many bytes as the sendfile test) without
decoding records, once with a plain socket reader (recv_into, like the sendfile baseline) and
once through the client library's connection layer.
Raw limits: loopback sendfile of a page-cached file, disk append with and without fdatasync.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO)]

from peers import raw  # noqa: E402
from peers.common import READY_LINE, RESULT_PREFIX  # noqa: E402
from peers.servers import SERVERS, Skipped  # noqa: E402

FETCH_SOCKET = "raw fetch MB/s (socket reader, no decode)"
PER_RECORD_SEND = "produce per-record send records/s"
PER_RECORD_CONSUME = "consume per-record records/s"
BLOCKING_E2E_FACTOR = 1.5  # target: the blocking client's e2e p99 at most this x the trio one's
PER_RECORD_SEND_TARGET = 500_000
FETCH_CLIENT = "raw fetch MB/s (client connection, no decode)"
PYTHON_CLIENTS = {"redis": ("redis", "hiredis"), "nats": ("nats",)}


@dataclass
class Variant:
    label: str  # column heading
    system: str  # which server / worker module
    params: dict = field(default_factory=dict)  # extra worker parameters (acks)

    @property
    def slug(self) -> str:
        return self.label.replace(" ", "-").replace("=", "")


def variants_for(system: str) -> list[Variant]:
    if system == "sluice":
        return [Variant(f"sluice{client} acks={acks}", "sluice", {"acks": acks, **params})
                for client, params in (("", {}), (" blocking", {"client": "blocking"}))
                for acks in (1, "all")]
    return [Variant(system, system)]


def e2e_suffix(linger: float | None, first: float | None) -> str:
    """The e2e rows' name suffix for a Sluice linger: none for the first (the peers' rows)."""
    return "" if linger == first else f", linger {linger:g} ms"


def trio_column(col: str) -> str:
    """The trio client's column of the same acks as a blocking client's column."""
    return col.replace(" blocking", "")


# -- running workers ---------------------------------------------------------------------------


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def worker_argv(system: str, role: str, params: dict) -> list[str]:
    return [sys.executable, "-m", "peers.worker", system, role, json.dumps(params)]


def parse_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


class WorkerError(RuntimeError):
    pass


def run_worker(system: str, role: str, params: dict, timeout: float) -> dict:
    proc = subprocess.run(
        worker_argv(system, role, params), capture_output=True, text=True, env=worker_env(),
        timeout=timeout, cwd=REPO,
    )
    result = parse_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise WorkerError(f"{system} {role} failed (exit {proc.returncode}): "
                          f"{tail(proc.stderr or proc.stdout)}")
    return result


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def run_e2e(system: str, params: dict, timeout: float) -> dict:
    """Consumer process first (subscribed and READY), then the producer process."""
    consumer = subprocess.Popen(
        worker_argv(system, "e2e-consume", params), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=worker_env(), cwd=REPO,
    )
    try:
        line = consumer.stdout.readline()
        if line.strip() != READY_LINE:
            consumer.kill()
            out, err = consumer.communicate(timeout=10)
            raise WorkerError(f"{system} e2e consumer did not get ready: {tail(line + out + err)}")
        produced = run_worker(system, "e2e-produce", params, timeout)
        out, err = consumer.communicate(timeout=timeout)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
    consumed = parse_result(out)
    if consumer.returncode != 0 or consumed is None:
        raise WorkerError(f"{system} e2e consumer failed: {tail(err or out)}")
    return {"produce": produced, "consume": consumed}


# -- the run -----------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures: dict[str, dict[str, list]] = {}  # column -> figure -> one value per rep
        self.raw: dict[str, list] = {}
        self.skipped: dict[str, str] = {}
        self.errors: list[str] = []
        self.versions: dict[str, str] = {}
        self.machine = machine_line()

    def add(self, column: str, figure: str, value, rep: int | None = None) -> None:
        """Record one repetition's value (padded with None so index == repetition)."""
        values = self.figures.setdefault(column, {}).setdefault(figure, [])
        while rep is not None and len(values) < rep:
            values.append(None)
        values.append(value)

    def add_raw(self, figure: str, value) -> None:
        self.raw.setdefault(figure, []).append(value)

    def note_error(self, message: str) -> None:
        self.errors.append(message)
        print(f"  error: {message}", file=sys.stderr, flush=True)

    def execute(self) -> None:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="sluice-compare-", dir=args.tmp_dir))
        self.workdir = workdir
        servers = {}
        try:
            for system in args.systems:
                missing = [m for m in PYTHON_CLIENTS.get(system, ()) if not importable(m)]
                if missing:
                    self.skip(system, f"skipped: Python client {', '.join(missing)} not "
                                      "installed (pip install -e '.[perf]')")
                    continue
                server = SERVERS[system](workdir)
                try:
                    server.start()
                except Skipped as exc:
                    self.skip(system, str(exc))
                    continue
                servers[system] = server
                self.versions[system] = server.version
                log(f"started {system} on {server.address} (pid {server.pid})")
            variants = [v for s in args.systems if s in servers for v in variants_for(s)]
            for rep in range(args.reps):
                self.add_raw("load average (1 min) at start", os.getloadavg()[0])
                log(f"repetition {rep + 1}/{args.reps} (load average {os.getloadavg()[0]:.2f})")
                self.measure_raw(workdir, sendfile="sluice" not in servers)
                for variant in variants:
                    self.measure(variant, servers[variant.system], rep)
        finally:
            for server in servers.values():
                server.stop()
            if args.keep_tmp:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def skip(self, system: str, message: str) -> None:
        self.skipped[system] = message
        print(f"{system}: {message}", flush=True)

    def measure_sendfile(self) -> None:
        r = raw.loopback_sendfile(self.workdir, self.args.sendfile_mib << 20)
        self.add_raw("loopback sendfile MB/s", r["mb_per_s"])
        log(f"  raw: loopback sendfile {r['mb_per_s']:.0f} MB/s")

    def measure_raw(self, workdir: Path, sendfile: bool) -> None:
        """Disk appends at the start of a repetition; loopback sendfile too unless it is
        measured right before Sluice's raw fetch (the pair the target compares)."""
        a = self.args
        if sendfile:
            self.measure_sendfile()
        r = raw.disk_append(workdir, a.append_mib << 20, sync=False)
        self.add_raw("disk append MB/s (1 MiB writes)", r["mb_per_s"])
        r = raw.disk_append(workdir, a.append_sync_mib << 20, sync=True)
        self.add_raw("disk append + fdatasync per MiB, MB/s", r["mb_per_s"])
        log(f"  raw: append "
            f"{self.raw['disk append MB/s (1 MiB writes)'][-1]:.0f} MB/s, append+fdatasync "
            f"{self.raw['disk append + fdatasync per MiB, MB/s'][-1]:.0f} MB/s")

    def measure(self, variant: Variant, server, rep: int) -> None:
        a = self.args
        col = variant.label
        topic = f"bench-{variant.slug}-{rep}"
        base = {"address": server.address, "server_pid": server.pid, "topic": topic,
                "records": a.records, "value_size": a.value_size, **variant.params}
        budget = 60 + a.records / 2000  # generous: a worker that takes this long is stuck
        sluice = variant.system == "sluice"
        lost = 0
        try:
            if variant.params.get("client") != "blocking":
                lost += self.measure_batches(variant, base, rep, budget)
            if sluice:
                lost += self.measure_records(variant, base, rep, budget)
        except (WorkerError, subprocess.TimeoutExpired) as exc:
            self.note_error(f"{col} rep {rep + 1}: {exc}")
            lost = None
        expected = int(a.e2e_rate * (a.e2e_warmup + a.e2e_seconds))
        lingers = a.e2e_lingers if sluice else [None]
        for linger in lingers:
            suffix = e2e_suffix(linger, lingers[0])
            e2e_params = {**base, "topic": f"{topic}-e2e{linger}", "rate": a.e2e_rate,
                          "expected": expected, "warmup_records": int(a.e2e_rate * a.e2e_warmup),
                          "timeout_s": a.e2e_warmup + a.e2e_seconds + 20, "delete": True,
                          "e2e_linger_ms": linger}
            try:
                e = run_e2e(variant.system, e2e_params, a.e2e_warmup + a.e2e_seconds + 60)
                pe, ce = e["produce"], e["consume"]
                self.add(col, "e2e p50 ms" + suffix, ce["p50_ms"], rep=rep)
                self.add(col, "e2e p99 ms" + suffix, ce["p99_ms"], rep=rep)
                self.add(col, "e2e max ms" + suffix, ce["max_ms"], rep=rep)
                self.add(col, "e2e client CPU s (both processes)" + suffix,
                         pe["client_cpu_s"] + ce["client_cpu_s"], rep=rep)
                self.add(col, "e2e server CPU s" + suffix, ce["server_cpu_s"], rep=rep)
                if lost is not None:
                    lost += ce["lost"] + ce["duplicates"]
                log(f"  {col}{suffix}: e2e p50 {ce['p50_ms']:.2f} ms, p99 {ce['p99_ms']:.2f} ms, "
                    f"max {ce['max_ms']:.2f} ms, lost {ce['lost']}")
            except (WorkerError, subprocess.TimeoutExpired) as exc:
                self.note_error(f"{col}{suffix} e2e rep {rep + 1}: {exc}")
                lost = None
        self.add(col, "records lost or duplicated", lost, rep=rep)

    def measure_batches(self, variant: Variant, base: dict, rep: int, budget: float) -> int:
        """Produce with the batch API, raw fetch (Sluice acks=1), consume; records lost."""
        a, col = self.args, variant.label
        p = run_worker(variant.system, "produce", base, budget)
        self.add(col, "produce records/s", p["records_per_s"], rep=rep)
        self.add(col, "produce MB/s", p["mb_per_s"], rep=rep)
        self.add(col, "produce client CPU s", p["client_cpu_s"], rep=rep)
        self.add(col, "produce server CPU s", p["server_cpu_s"], rep=rep)
        self.add(col, "produce CPU µs/record (client+server)",
                 (p["client_cpu_s"] + p["server_cpu_s"]) / a.records * 1e6, rep=rep)
        self.add(col, "produce failed sends", a.records - p["acked"], rep=rep)
        if variant.system == "sluice" and variant.params.get("acks") == 1:
            self.measure_sendfile()  # the baseline, measured right before the fetch
            passes = {**base, "min_bytes": a.sendfile_mib << 20}
            f = run_worker("sluice", "raw-fetch", {**passes, "reader": "socket"}, budget)
            self.add(col, FETCH_SOCKET, f["mb_per_s"], rep=rep)
            f = run_worker("sluice", "raw-fetch", {**passes, "reader": "client"}, budget)
            self.add(col, FETCH_CLIENT, f["mb_per_s"], rep=rep)
        c = run_worker(variant.system, "consume", {**base, "delete": True}, budget)
        self.add(col, "consume records/s", c["records_per_s"], rep=rep)
        self.add(col, "consume MB/s", c["mb_per_s"], rep=rep)
        self.add(col, "consume client CPU s", c["client_cpu_s"], rep=rep)
        self.add(col, "consume server CPU s", c["server_cpu_s"], rep=rep)
        self.add(col, "consume CPU µs/record (client+server)",
                 (c["client_cpu_s"] + c["server_cpu_s"]) / a.records * 1e6, rep=rep)
        log(f"  {col}: produce {p['records_per_s']:,.0f} rec/s, consume "
            f"{c['records_per_s']:,.0f} rec/s, lost {c['lost']}")
        return c["lost"] + c["duplicates"]

    def measure_records(self, variant: Variant, base: dict, rep: int, budget: float) -> int:
        """One ``send`` per record then ``flush``, then ``for record in consumer``."""
        a, col = self.args, variant.label
        params = {**base, "topic": base["topic"] + "-records", "api": "record"}
        p = run_worker(variant.system, "produce", params, budget)
        self.add(col, PER_RECORD_SEND, p["records_per_s"], rep=rep)
        self.add(col, "produce per-record failed sends", a.records - p["acked"], rep=rep)
        c = run_worker(variant.system, "consume", {**params, "delete": True}, budget)
        self.add(col, PER_RECORD_CONSUME, c["records_per_s"], rep=rep)
        log(f"  {col}: per-record send {p['records_per_s']:,.0f} rec/s, consume "
            f"{c['records_per_s']:,.0f} rec/s, lost {c['lost']}")
        return c["lost"] + c["duplicates"]

    # -- reporting ------------------------------------------------------------------------------

    def medians(self) -> dict:
        out = {col: {f: median(v) for f, v in figs.items()} for col, figs in self.figures.items()}
        out["raw"] = {f: median(v) for f, v in self.raw.items()}
        return out

    def paired(self, col: str, fig: str, other: str | None, other_fig: str) -> float | None:
        """Median over repetitions of ``col/fig`` divided by ``other/other_fig`` measured in
        the same repetition (``other`` None: a raw limit). Pairs measured minutes apart on a
        noisy machine would be a worse estimate than pairs measured side by side."""
        ours = self.figures.get(col, {}).get(fig, [])
        theirs = self.raw.get(other_fig, []) if other is None else \
            self.figures.get(other, {}).get(other_fig, [])
        ratios = [a / b for a, b in zip(ours, theirs, strict=False) if a is not None and b]
        return statistics.median(ratios) if ratios else None

    def ratios(self) -> list[tuple[str, float]]:
        rows = []
        for sluice_col in ("sluice acks=1", "sluice acks=all"):
            for peer in ("redis", "nats"):
                for fig in ("produce records/s", "consume records/s"):
                    ratio = self.paired(sluice_col, fig, peer, fig)
                    if ratio is not None:
                        rows.append((f"{sluice_col} / {peer}: {fig}", ratio))
        for fig in (FETCH_SOCKET, FETCH_CLIENT):
            ratio = self.paired("sluice acks=1", fig, None, "loopback sendfile MB/s")
            if ratio is not None:
                rows.append((f"{fig.replace(' MB/s', '')} / loopback sendfile", ratio))
        for col, fig in self.blocking_e2e():
            ratio = self.paired(col, fig, trio_column(col), fig)
            if ratio is not None:
                rows.append((f"{col} / {trio_column(col)}: {fig}", ratio))
        return rows

    def blocking_e2e(self) -> list[tuple[str, str]]:
        """The blocking client's e2e p99 figures: ``(column, figure)``."""
        return [(col, fig) for col, figs in self.figures.items() if " blocking" in col
                for fig in figs if fig.startswith("e2e p99 ms")]

    def targets(self) -> list[dict]:
        med = self.medians()
        s1, sall = med.get("sluice acks=1", {}), med.get("sluice acks=all", {})
        redis, nats_ = med.get("redis"), med.get("nats")
        rows = []

        def target(name: str, goal: str, value, ok, why_na: str = "") -> None:
            rows.append({"target": name, "goal": goal, "value": value,
                         "status": "n/a" if ok is None else ("met" if ok else "missed"),
                         "note": why_na})

        def vs(peer, peer_name, fig, factor, name):
            ratio = self.paired("sluice acks=1", fig, peer_name, fig)
            if ratio is None:
                target(name, f">= {factor}x", None, None, f"{peer_name} not measured")
                return
            target(name, f">= {factor}x", f"{ratio:.2f}x", ratio >= factor)

        vs(redis, "redis", "produce records/s", 5, "produce vs Redis Streams")
        vs(nats_, "nats", "produce records/s", 10, "produce vs NATS JetStream")
        vs(redis, "redis", "consume records/s", 3, "consume vs Redis Streams")
        peers = [p["produce records/s"] for p in (redis, nats_)
                 if p and p.get("produce records/s") is not None]
        ours = sall.get("produce records/s")
        if ours is None or not peers:
            target("acks=all produce ahead of both peers' produce", "> max(peers)", None, None,
                   "peers not measured")
        else:
            fig = "produce records/s"
            mine = self.figures["sluice acks=all"][fig]
            rivals = [self.figures[p][fig] for p in ("redis", "nats") if p in self.figures]
            ratios = []
            for i, value in enumerate(mine):
                best = [r[i] for r in rivals if i < len(r) and r[i] is not None]
                if value is not None and best:
                    ratios.append(value / max(best))
            ratio = statistics.median(ratios)
            target("acks=all produce ahead of both peers' produce", "> 1x the faster peer",
                   f"{ratio:.2f}x ({ours:,.0f} vs {max(peers):,.0f} rec/s)",
                   ratio > 1 and len(peers) == 2)
        p99 = s1.get("e2e p99 ms")
        target("e2e p99 (acks=1)", "<= 2 ms", None if p99 is None else f"{p99:.2f} ms",
               None if p99 is None else p99 <= 2.0)
        share = self.paired("sluice acks=1", FETCH_SOCKET, None, "loopback sendfile MB/s")
        if share is None:
            target("raw fetch vs loopback sendfile", ">= 70%", None, None, "not measured")
        else:
            target("raw fetch vs loopback sendfile", ">= 70%", f"{share:.1%}", share >= 0.70)
        for col, fig in self.blocking_e2e():
            ratio = self.paired(col, fig, trio_column(col), fig)
            name = f"{col} {fig} / the trio client's"
            if ratio is None:
                target(name, f"<= {BLOCKING_E2E_FACTOR}x", None, None, "not measured")
            else:
                target(name, f"<= {BLOCKING_E2E_FACTOR}x", f"{ratio:.2f}x",
                       ratio <= BLOCKING_E2E_FACTOR)
        for col, figs in med.items():
            rate = figs.get(PER_RECORD_SEND)
            if rate is not None:
                target(f"{col} per-record send", f">= {PER_RECORD_SEND_TARGET:,} records/s",
                       f"{rate:,.0f} records/s", rate >= PER_RECORD_SEND_TARGET)
        lost = [v for col in self.figures.values()
                for v in col.get("records lost or duplicated", [])]
        target("records lost (every system, every rep)", "0",
               "error" if None in lost else str(sum(lost)),
               None if not lost else (None not in lost and sum(lost) == 0))
        return rows

    def markdown(self) -> str:
        a = self.args
        cols = list(self.figures)
        lines = [
            f"## Sluice vs peers: {a.records:,} records of {a.value_size} B, {a.reps} rep(s)",
            "",
            f"{self.machine}; e2e at {a.e2e_rate:,} records/s for {a.e2e_seconds:g} s "
            f"(after {a.e2e_warmup:g} s warm-up; Sluice's plain e2e rows at linger "
            f"{a.e2e_lingers[0]:g} ms). Cells: median (every repetition). Ratios "
            "and targets: median of the per-repetition ratios (pairs measured side by side).",
            "",
        ]
        figures = []
        for col in cols:
            for fig in self.figures[col]:
                if fig not in figures:
                    figures.append(fig)
        lines.append("| figure | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for fig in figures:
            cells = [cell(fig, self.figures[col].get(fig)) for col in cols]
            lines.append(f"| {fig} | " + " | ".join(cells) + " |")
        lines += ["", "| raw limit (this machine, same run) | value |", "|---|---|"]
        for fig, values in self.raw.items():
            lines.append(f"| {fig} | {cell(fig, values)} |")
        ratios = self.ratios()
        if ratios:
            lines += ["", "| ratio (median of per-repetition ratios) | value |", "|---|---|"]
            lines += [f"| {name} | {value:.2f}x |" for name, value in ratios]
        lines += ["", "| target | goal | value | status |", "|---|---|---|---|"]
        for t in self.targets():
            value = t["value"] if t["value"] is not None else "-"
            status = t["status"] + (f" ({t['note']})" if t["note"] else "")
            lines.append(f"| {t['target']} | {t['goal']} | {value} | {status} |")
        for system, message in self.skipped.items():
            lines.append(f"\n{system}: {message}")
        for error in self.errors:
            lines.append(f"\nerror: {error}")
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict:
        a = self.args
        return {
            "meta": {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": self.machine,
                "python": platform.python_version(),
                "versions": self.versions,
                "records": a.records, "value_size": a.value_size, "reps": a.reps,
                "e2e_rate": a.e2e_rate, "e2e_seconds": a.e2e_seconds,
                "e2e_lingers": a.e2e_lingers,
                "systems": a.systems,
            },
            "figures": self.figures,
            "raw": self.raw,
            "medians": self.medians(),
            "ratios": dict(self.ratios()),
            "targets": self.targets(),
            "skipped": self.skipped,
            "errors": self.errors,
        }


# -- helpers -----------------------------------------------------------------------------------


def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def median(values: list):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(figure: str, value) -> str:
    if value is None:
        return "error"
    if "records/s" in figure:
        return f"{value:,.0f}"
    if "MB/s" in figure:
        return f"{value:,.1f}"
    if " ms" in figure:
        return f"{value:.2f}"
    if "CPU" in figure or "load" in figure:
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def cell(figure: str, values: list | None) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(figure, values[0])
    return f"**{fmt(figure, median(values))}** ({', '.join(fmt(figure, v) for v in values)})"


def machine_line() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}: {os.cpu_count()} cores ({model}), {mem:.0f} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure Sluice, Redis Streams and NATS JetStream side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=None, help="records per run (500000)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (>= 16)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each figure (3)")
    parser.add_argument("--systems", default=None, help="comma-separated: sluice,redis,nats")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: 20,000 records, Sluice only, 1 repetition, small raws")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--e2e-rate", type=int, default=5000, help="records/s of the e2e test")
    parser.add_argument("--e2e-seconds", type=float, default=None, help="measured e2e seconds (4)")
    parser.add_argument("--e2e-warmup", type=float, default=0.5, help="e2e warm-up seconds")
    parser.add_argument("--e2e-lingers", default="0,5",
                        help="Sluice producer linger_ms values of the e2e test (comma-separated)")
    parser.add_argument("--sendfile-mib", type=int, default=None, help="sendfile file size (256)")
    parser.add_argument("--append-mib", type=int, default=None, help="disk append size (512)")
    parser.add_argument("--append-sync-mib", type=int, default=None,
                        help="disk append + fdatasync size (128; capped at 10 s)")
    parser.add_argument("--tmp-dir", default=None, help="parent of the temporary data dir")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the data dir afterwards")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: print the table of a saved --json file")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "records": 20_000 if quick else 500_000,
        "reps": 1 if quick else 3,
        "systems": "sluice" if quick else "sluice,redis,nats",
        "e2e_seconds": 1.0 if quick else 4.0,
        "sendfile_mib": 32 if quick else 256,
        "append_mib": 32 if quick else 512,
        "append_sync_mib": 8 if quick else 128,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.e2e_lingers = [float(v) for v in args.e2e_lingers.split(",") if v.strip()]
    if not args.e2e_lingers:
        parser.error("--e2e-lingers needs at least one value")
    unknown = [s for s in args.systems if s not in SERVERS]
    if unknown:
        parser.error(f"unknown system(s): {', '.join(unknown)} (choose from sluice, redis, nats)")
    if args.value_size < 16:
        parser.error("--value-size must be at least 16 (sequence number and timestamp)")
    if args.records < 1 or args.reps < 1:
        parser.error("--records and --reps must be positive")
    return args


def render(path: Path) -> int:
    data = json.loads(path.read_text())
    meta = data["meta"]
    args = parse_args([
        "--records", str(meta["records"]), "--value-size", str(meta["value_size"]),
        "--reps", str(meta["reps"]), "--e2e-rate", str(meta["e2e_rate"]),
        "--e2e-seconds", str(meta["e2e_seconds"]), "--systems", ",".join(meta["systems"]),
        "--e2e-lingers", ",".join(f"{v:g}" for v in meta.get("e2e_lingers", [0])),
    ])
    run = Run(args)
    run.figures, run.raw = data["figures"], data["raw"]
    run.skipped, run.errors = data.get("skipped", {}), data.get("errors", [])
    run.machine = meta["machine"]
    print(f"<!-- measured {meta['date']} -->")
    print(run.markdown(), flush=True)
    return 0


def execute_and_report(run, json_path: Path | None) -> int:
    """Run a benchmark's ``run`` (``execute``, ``markdown``, ``as_json``, ``errors``): print its
    table, write its JSON to ``json_path`` if given; the exit status (1 if anything failed)."""
    started = time.monotonic()
    run.execute()
    print(run.markdown(), flush=True)
    if json_path:
        json_path.write_text(json.dumps(run.as_json(), indent=2) + "\n")
        log(f"wrote {json_path}")
    log(f"done in {time.monotonic() - started:.0f} s")
    return 1 if run.errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    return execute_and_report(Run(args), args.json)


if __name__ == "__main__":
    sys.exit(main())
