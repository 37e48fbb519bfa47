#!/usr/bin/env python3
"""Kafka's clients through Sluice's Kafka listener beside Sluice's own client, in one run.

    python tests/perf/kafka_clients_bench.py [--records 300000] [--value-size 100] [--reps 3]
                                             [--acks 1] [--clients ...] [--quick] [--json F]

One broker process (``python -m sluice.broker``, its data in a temporary directory) serves
both ports. Per repetition every client takes its turn, each in a fresh process
(``peers.worker``): produce ``--records`` records (16-byte keys, ``--value-size``-byte values)
to a new one-partition topic, acknowledged; then consume them from offset 0 and check none was
lost or duplicated. The clients:

  sluice send_batch   Sluice's trio client, ``send_batch`` of 10,000 records (its bulk API)
  sluice send         Sluice's trio client, one ``send`` per record (consumes as the above:
                      ``getmany``)
  confluent-kafka     librdkafka, ``produce`` per record, ``consume(10000)``, Kafka port
  kafka-python        pure Python, ``send`` per record, ``poll(max_records=10000)``, Kafka port

Each figure is the median over repetitions (every repetition shown); the ratios divide figures
measured in the same repetition, so machine noise weighs on both sides alike. Also reported:
the broker's CPU per record (from /proc), which says what each protocol costs the broker.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from compare import (  # noqa: E402
    WorkerError,
    cell,
    execute_and_report,
    importable,
    log,
    machine_line,
    median,
    run_worker,
)
from peers.servers import SluiceServer  # noqa: E402

FIGURES = ("produce records/s", "produce MB/s", "consume records/s", "consume MB/s",
           "broker CPU µs/record produced", "broker CPU µs/record consumed",
           "records lost, duplicated or unacknowledged")


@dataclass(frozen=True)
class Client:
    label: str  # column heading
    system: str  # peers.worker's module
    params: dict
    kafka: bool  # through the Kafka port (else the Sluice port)
    needs: str = ""  # the Python module it imports


CLIENTS = {c.label: c for c in (
    Client("sluice send_batch", "sluice", {"api": "batch"}, kafka=False),
    Client("sluice send", "sluice", {"api": "record"}, kafka=False),
    Client("confluent-kafka", "kafka", {"client": "confluent"}, kafka=True,
           needs="confluent_kafka"),
    Client("kafka-python", "kafka", {"client": "kafka-python"}, kafka=True, needs="kafka"),
)}


class Bench:
    """The figures of one run: column -> figure -> one value per repetition."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures: dict[str, dict[str, list]] = {c: {} for c in args.clients}
        self.errors: list[str] = []

    def execute(self) -> None:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="sluice-kafka-bench-", dir=args.tmp_dir))
        server = SluiceServer(workdir)
        try:
            server.start()
            if not server.kafka_address:
                raise RuntimeError("the broker did not start its Kafka listener")
            log(f"broker on {server.address} (sluice) and {server.kafka_address} (kafka), "
                f"pid {server.pid}")
            for rep in range(args.reps):
                log(f"repetition {rep + 1}/{args.reps} (load average {os.getloadavg()[0]:.2f})")
                for label in args.clients:
                    self.measure(CLIENTS[label], server, rep)
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def measure(self, client: Client, server: SluiceServer, rep: int) -> None:
        a = self.args
        params = {"address": server.kafka_address if client.kafka else server.address,
                  "admin_address": server.address, "server_pid": server.pid,
                  "topic": f"bench-{client.label.replace(' ', '-')}-{rep}",
                  "records": a.records, "value_size": a.value_size, "acks": a.acks,
                  "timeout_s": 60 + a.records / 2000, **client.params}
        budget = 2 * params["timeout_s"]  # a worker that takes this long is stuck
        figures = self.figures[client.label]
        try:
            p = run_worker(client.system, "produce", params, budget)
            c = run_worker(client.system, "consume", {**params, "delete": True}, budget)
        except (WorkerError, subprocess.TimeoutExpired) as exc:
            self.errors.append(f"{client.label} rep {rep + 1}: {exc}")
            log(f"  error: {self.errors[-1]}")
            return
        for figure, value in (
            ("produce records/s", p["records_per_s"]), ("produce MB/s", p["mb_per_s"]),
            ("consume records/s", c["records_per_s"]), ("consume MB/s", c["mb_per_s"]),
            ("broker CPU µs/record produced", p["server_cpu_s"] / a.records * 1e6),
            ("broker CPU µs/record consumed", c["server_cpu_s"] / a.records * 1e6),
            ("records lost, duplicated or unacknowledged",
             c["lost"] + c["duplicates"] + a.records - p["acked"]),
        ):
            figures.setdefault(figure, []).append(value)
        log(f"  {client.label}: produce {p['records_per_s']:,.0f} records/s, consume "
            f"{c['records_per_s']:,.0f} records/s, lost {c['lost']}")

    def ratios(self) -> dict[str, float]:
        """Each Kafka client's records/s over each Sluice client's, paired by repetition."""
        clients = [CLIENTS[label] for label in self.args.clients]
        out = {}
        for kafka in (c.label for c in clients if c.kafka):
            for sluice in (c.label for c in clients if not c.kafka):
                for figure in ("produce records/s", "consume records/s"):
                    pairs = zip(self.figures[kafka].get(figure, []),
                                self.figures[sluice].get(figure, []), strict=False)
                    ratios = [ours / theirs for ours, theirs in pairs if theirs]
                    if ratios:
                        out[f"{kafka} / {sluice}: {figure}"] = statistics.median(ratios)
        return out

    def markdown(self) -> str:
        a = self.args
        lines = [f"{a.records:,} records of {a.value_size} B (16 B keys), one partition, "
                 f"acks={a.acks}, {a.reps} repetition(s); median (each repetition)", "",
                 "| figure | " + " | ".join(a.clients) + " |",
                 "|---" * (len(a.clients) + 1) + "|"]
        for figure in FIGURES:
            lines.append(f"| {figure} | " + " | ".join(
                cell(figure, self.figures[c].get(figure)) for c in a.clients) + " |")
        ratios = self.ratios()
        if ratios:
            lines += ["", "| ratio (paired by repetition, median) | value |", "|---|---|"]
            lines += [f"| {name} | {value:.2f} |" for name, value in ratios.items()]
        lines += ["", f"Machine: {machine_line()}; load average {os.getloadavg()[0]:.2f}"]
        lines += [f"Error: {e}" for e in self.errors]
        return "\n".join(lines)

    def as_json(self) -> dict:
        a = self.args
        return {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                         "records": a.records, "value_size": a.value_size, "reps": a.reps,
                         "acks": a.acks, "clients": a.clients, "machine": machine_line()},
                "figures": self.figures,
                "median": {c: {f: median(v) for f, v in figs.items()}
                           for c, figs in self.figures.items()},
                "ratios": self.ratios(), "errors": self.errors}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Kafka's clients through Sluice's Kafka port beside Sluice's own client.")
    parser.add_argument("--records", type=int, help="records per client and repetition "
                        "(default 300000; --quick 2000)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (>= 8)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    parser.add_argument("--acks", default="1", choices=["0", "1", "all"],
                        help="producer acks (default 1)")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help=f"comma-separated, of: {', '.join(CLIENTS)} (default all)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny and once")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--tmp-dir", help="parent of the temporary data directory")
    args = parser.parse_args(argv)
    args.records = args.records or (2_000 if args.quick else 300_000)
    args.reps = args.reps or (1 if args.quick else 3)
    args.acks = args.acks if args.acks == "all" else int(args.acks)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in args.clients if c not in CLIENTS]
    if unknown:
        parser.error(f"unknown client(s): {', '.join(unknown)}")
    missing = [c for c in args.clients if CLIENTS[c].needs and not importable(CLIENTS[c].needs)]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (pip install -e '.[test]')")
    if args.value_size < 8 or args.records < 1 or args.reps < 1:
        parser.error("--value-size must be at least 8, --records and --reps positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return execute_and_report(Bench(args), args.json)


if __name__ == "__main__":
    sys.exit(main())
