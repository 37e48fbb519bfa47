#!/usr/bin/env python3
"""What scraping /metrics costs the data path: ``sluice perf produce`` against one broker,
alternating runs without and with a scraper asking for /metrics every 100 ms.

    python tests/perf/metrics_overhead.py [--reps 8] [--records 5000000] [--interval 0.1]

One broker process (``--http-port 0``) on a temporary data directory; before the runs it
gets the shape of a small production broker -- ``--topics`` topics of ``--partitions``
partitions each, with data, and a consumer group with lag on each -- so a scrape carries
every kind of series (about 20 per partition, histograms per topic and API, lag per group
partition). Each repetition runs ``sluice perf produce`` twice into fresh topics, once
plain and once scraped, the order alternating between repetitions so that each pair sees the
same machine. The scraper keeps one HTTP connection (as Prometheus does) and times each
scrape.

Prints each pair's records/s and their ratio, the median of the ratios (the figure: each
pair ran back to back, so it cancels more of a shared machine's swings than the medians of
the rates do), the broker's CPU per record in both modes, and the scrapes' count, size and
latency (p50, p99).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.web_process import WebBrokerProcess  # noqa: E402

RATE = re.compile(r"([\d,]+) records/s")
SLUICE = [str(Path(sys.executable).parent / "sluice")]  # this venv's command line


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds on one keep-alive connection until stopped."""

    def __init__(self, address: str, interval: float) -> None:
        super().__init__(daemon=True)
        host, port = address.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.interval = interval
        self.stopped = threading.Event()
        self.latencies: list[float] = []
        self.size = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopped.is_set():
            began = time.perf_counter()
            self.connection.request("GET", "/metrics")
            response = self.connection.getresponse()
            body = response.read()
            assert response.status == 200, response.status
            self.latencies.append(time.perf_counter() - began)
            self.size = len(body)
            next_at += self.interval
            self.stopped.wait(max(0.0, next_at - time.monotonic()))
        self.connection.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sluice(bootstrap: str, *args: str) -> str:
    done = subprocess.run([*SLUICE, *args, "--bootstrap", bootstrap], capture_output=True,
                          text=True, timeout=900, check=True, cwd=ROOT)
    return done.stdout


def prepare(bootstrap: str, topics: int, partitions: int) -> None:
    """Topics with data and a group with lag on each, so scrapes carry every kind of series."""
    for i in range(topics):
        name = f"shape-{i}"
        sluice(bootstrap, "perf", "produce", "--topic", name, "--records", "20000",
               "--partitions", str(partitions))
        sluice(bootstrap, "tail", name, "--group", f"group-{i}", "--from-beginning", "-n", "1000")


def produce(broker: WebBrokerProcess, topic: str, records: int) -> tuple[float, float]:
    """(records/s, broker CPU seconds) of one ``sluice perf produce``."""
    before = cpu_seconds(broker.proc.pid)
    out = sluice(broker.bootstrap, "perf", "produce", "--topic", topic, "--records", str(records))
    return float(RATE.search(out).group(1).replace(",", "")), cpu_seconds(broker.proc.pid) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between scrapes")
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = WebBrokerProcess(Path(tmp) / "data", Path(tmp) / "broker.log")
        broker.start()
        try:
            address = broker.url.removeprefix("http://")
            prepare(broker.bootstrap, args.topics, args.partitions)
            ratios, cpu = [], {"plain": [], "scraped": []}
            latencies: list[float] = []
            size = scrapes = 0
            print(f"{args.records:,} records per run; scrape every {args.interval * 1000:.0f} ms")
            print("| rep | plain records/s | scraped records/s | scraped / plain | scrapes |")
            print("|---|---|---|---|---|")
            for rep in range(args.reps):
                rates = {}
                order = ("plain", "scraped") if rep % 2 == 0 else ("scraped", "plain")
                for mode in order:
                    scraper = Scraper(address, args.interval) if mode == "scraped" else None
                    if scraper:
                        scraper.start()
                    rate, seconds = produce(broker, f"run-{rep}-{mode}", args.records)
                    if scraper:
                        scraper.stopped.set()
                        scraper.join()
                        latencies += scraper.latencies
                        size = scraper.size
                        scrapes = len(scraper.latencies)
                    rates[mode] = rate
                    cpu[mode].append(seconds / args.records * 1e6)
                ratio = rates["scraped"] / rates["plain"]
                ratios.append(ratio)
                print(f"| {rep} | {rates['plain']:,.0f} | {rates['scraped']:,.0f} | {ratio:.3f} "
                      f"| {scrapes} |", flush=True)
            latencies.sort()
            print(f"\nmedian scraped / plain: {statistics.median(ratios):.3f} "
                  f"(mean {statistics.mean(ratios):.3f})")
            print(f"broker CPU per record: plain {statistics.median(cpu['plain']):.3f} us, "
                  f"scraped {statistics.median(cpu['scraped']):.3f} us (medians)")
            print(f"scrapes: {len(latencies)}, {size:,} bytes each; latency p50 "
                  f"{latencies[len(latencies) // 2] * 1e3:.1f} ms, p99 "
                  f"{latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
