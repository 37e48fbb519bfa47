"""Broker benchmark: what the broker adds on top of the OS, measured side by side in one run.

    python tests/perf/broker_bench.py [--mib 512] [--reps 3] [--quick] [--json out.json]

* fetch: a raw reader (plain socket + the sans-IO protocol, no record decoding) reads the whole
  partition back from the page cache, vs raw loopback ``os.sendfile`` of a file of the same size;
* produce: pre-built 1 MiB batches, pipelined, ``acks=1`` and ``acks=all``, vs raw ``os.write``
  of the same bytes to a file in the same directory (and with ``fdatasync`` per MiB);
* RSS: the broker's resident memory before and at the peak of 8 consumers fetching at full
  speed (it should stay flat: fetch bodies go out with sendfile, not through Python buffers).

Every figure is repeated ``--reps`` times; the table shows each repetition and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sluice.protocol import messages as m  # noqa: E402
from sluice.protocol.batch import build_batch  # noqa: E402
from sluice.protocol.connection import ClientConnection, ResponseReceived  # noqa: E402

from tests.processes import read_announcement  # noqa: E402

MIB = 1024 * 1024
IN_FLIGHT = 8


class Client:
    """A lean blocking protocol client: pipelined requests, responses in order.

    Sends with scatter-gather ``sendmsg`` (no joining of a 1 MiB batch into a new buffer) and
    receives straight into the frame being assembled (``receive_buffer``: one copy per byte).
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = ClientConnection()

    def send(self, request) -> None:
        _, pieces = self.conn.send_request(request)
        views = [memoryview(p).cast("B") for p in pieces]
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def receive(self):
        while True:
            event = self.conn.next_event()
            if isinstance(event, ResponseReceived):
                return event.response
            with self.conn.receive_buffer(4 * MIB) as view:
                n = self.sock.recv_into(view)
            if not n:
                raise ConnectionError("broker closed the connection")
            self.conn.received(n)

    def request(self, request):
        self.send(request)
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def start_broker(data_dir: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.broker", "--data-dir", str(data_dir), "--port", "0",
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    announced = read_announcement(proc.stdout)
    if announced is None:
        raise RuntimeError("broker did not start")
    return proc, announced.port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_mib_batch() -> bytes:
    now = time.time_ns() // 1_000_000
    value = os.urandom(100)
    count = MIB // 110
    return bytes(build_batch([(None, value, [], now)] * count))


def produce(port: int, topic: str, batch: bytes, total: int, acks: int) -> float:
    """MiB/s of pre-built batches produced with ``IN_FLIGHT`` requests pipelined."""
    client = Client(port)
    request = m.ProduceRequest(
        acks=acks, timeout_ms=30_000,
        partitions=[m.ProducePartition(topic=topic, partition=0, records=batch)],
    )
    start = time.perf_counter()
    pipeline(client, request, IN_FLIGHT, lambda sent: sent < total)
    elapsed = time.perf_counter() - start
    client.close()
    return total * len(batch) / MIB / elapsed


def pipeline(client: Client, request, in_flight: int, more: Callable[[int], bool]) -> int:
    """Send ``request`` again and again, ``in_flight`` at a time, while ``more(sent so far)``;
    every answer must be free of errors. Returns how many were answered (all that were sent)."""
    sent = answered = 0
    while more(sent) or answered < sent:
        while more(sent) and sent - answered < in_flight:
            client.send(request)
            sent += 1
        response = client.receive()
        assert response.partitions[0].error == 0, response
        answered += 1
    return answered


def fetch_all(port: int, topic: str, end: int) -> float:
    """MiB/s of a raw reader fetching the partition from offset 0 to ``end``."""
    client = Client(port)
    offset = nbytes = 0
    start = time.perf_counter()
    while offset < end:
        response = client.request(
            m.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=8 * MIB, partitions=[
                m.FetchPartition(topic=topic, partition=0, offset=offset, max_bytes=8 * MIB)])
        )
        part = response.partitions[0]
        data = part.records
        nbytes += len(data)
        offset = last_offset_after(data)
    elapsed = time.perf_counter() - start
    client.close()
    return nbytes / MIB / elapsed


def last_offset_after(data) -> int:
    from sluice.protocol.batch import parse_header, split_batches

    positions, _ = split_batches(data)
    pos, _size = positions[-1]
    return parse_header(data, pos).next_offset


def raw_append(path: Path, batch: bytes, total: int, sync: bool) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    start = time.perf_counter()
    for _ in range(total):
        os.write(fd, batch)
        if sync:
            os.fdatasync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    path.unlink()
    return total * len(batch) / MIB / elapsed


def raw_sendfile(path: Path) -> float:
    """MiB/s of os.sendfile of ``path`` (page-cached) to a loopback socket read and dropped."""
    size = path.stat().st_size
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def drain() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while sock.recv(4 * MIB):
                pass

    reader = threading.Thread(target=drain)
    reader.start()
    conn, _ = server.accept()
    fd = os.open(path, os.O_RDONLY)
    start = time.perf_counter()
    offset = 0
    while offset < size:
        offset += os.sendfile(conn.fileno(), fd, offset, size - offset)
    elapsed = time.perf_counter() - start
    os.close(fd)
    conn.close()
    server.close()
    reader.join()
    return size / MIB / elapsed


def consumers_rss(proc: subprocess.Popen, port: int, topic: str, end: int, seconds: float):
    """Broker RSS (MiB) before and at the peak while 8 readers fetch in a loop."""
    before = rss_mib(proc.pid)
    stop = time.monotonic() + seconds
    peak = before

    def reader() -> None:
        while time.monotonic() < stop:
            fetch_all(port, topic, end)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(proc.pid))
        time.sleep(0.05)
    return before, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="data per run (MiB)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small and fast (CI smoke)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.mib, args.reps = 16, 1
    batch = one_mib_batch()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        tmp_path = Path(tmp)
        proc, port = start_broker(tmp_path / "data")
        try:
            admin = Client(port)
            for rep in range(args.reps):
                topic = f"bench-{rep}"
                response = admin.request(m.CreateTopicsRequest(
                    topics=[m.TopicSpec(name=topic, partitions=1)]))
                assert response.topics[0].error == 0, response
                rows.setdefault("raw append MiB/s", []).append(
                    raw_append(tmp_path / "raw.log", batch, args.mib, sync=False))
                rows.setdefault("produce acks=1 MiB/s", []).append(
                    produce(port, topic, batch, args.mib, acks=1))
                rows.setdefault("raw append + fdatasync/MiB MiB/s", []).append(
                    raw_append(tmp_path / "raw.log", batch, args.mib, sync=True))
                rows.setdefault("produce acks=all MiB/s", []).append(
                    produce(port, topic, batch, args.mib, acks=-1))
                end = admin.request(m.ListOffsetsRequest(partitions=[
                    m.ListOffsetsPartition(topic=topic, partition=0, timestamp=-1)
                ])).partitions[0].offset
                fetch_all(port, topic, end)  # warm the page cache
                rows.setdefault("fetch (raw reader) MiB/s", []).append(fetch_all(port, topic, end))
                segment = next((tmp_path / "data" / f"{topic}-0").glob("*.log"))
                rows.setdefault("loopback sendfile MiB/s", []).append(raw_sendfile(segment))
            before, peak = consumers_rss(proc, port, "bench-0", end, 2 if args.quick else 8)
            rows["broker RSS before MiB"] = [before]
            rows["broker RSS peak, 8 consumers MiB"] = [peak]
            admin.close()
        finally:
            proc.terminate()
            proc.wait(30)
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratios = {
        "produce acks=1 / raw append": med["produce acks=1 MiB/s"] / med["raw append MiB/s"],
        "produce acks=all / raw append+fdatasync": (
            med["produce acks=all MiB/s"] / med["raw append + fdatasync/MiB MiB/s"]),
        "fetch / loopback sendfile": (
            med["fetch (raw reader) MiB/s"] / med["loopback sendfile MiB/s"]),
    }
    print(f"| figure ({args.mib} MiB per run) | " + " | ".join(
        f"rep {i + 1}" for i in range(args.reps)) + " | median |")
    print("|---" * (args.reps + 2) + "|")
    for name, values in rows.items():
        cells = [f"{v:,.0f}" for v in values] + [""] * (args.reps - len(values))
        print(f"| {name} | " + " | ".join(cells) + f" | {med[name]:,.0f} |")
    print()
    for name, ratio in ratios.items():
        print(f"- {name}: {ratio:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "median": med, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
