"""Raw limits of this machine, measured in the same run as the systems:

- loopback sendfile: ``os.sendfile`` of a page-cached file to a 127.0.0.1 TCP socket, read by
  another thread with ``recv_into`` (the ceiling of Sluice's zero-copy fetch);
- disk append: ``os.write`` of 1 MiB chunks to a file in the run's temp dir, and the same with
  ``os.fdatasync`` after every chunk (the ceiling of acks=1 and acks=all appends).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from peers.common import self_cpu_seconds

MIB = 1 << 20


def _fill(path: Path, size: int) -> None:
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)
    with open(path, "rb") as f:  # make sure every page is cached
        while f.read(8 * MIB):
            pass


def loopback_sendfile(workdir: Path, size: int) -> dict:
    path = workdir / "sendfile.bin"
    _fill(path, size)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = [0]

    def reader() -> None:
        conn, _ = listener.accept()
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        with conn:
            while True:
                n = conn.recv_into(view)
                if not n:
                    break
                received[0] += n

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sender = socket.create_connection(listener.getsockname())
    fd = os.open(path, os.O_RDONLY)
    try:
        cpu0, t0 = self_cpu_seconds(), time.perf_counter()
        offset = 0
        while offset < size:
            sent = os.sendfile(sender.fileno(), fd, offset, size - offset)
            if sent == 0:
                break
            offset += sent
        sender.shutdown(socket.SHUT_WR)
        thread.join(60)
        elapsed = time.perf_counter() - t0
        cpu = self_cpu_seconds() - cpu0
    finally:
        os.close(fd)
        sender.close()
        listener.close()
        path.unlink()
    return {"bytes": received[0], "elapsed_s": elapsed, "cpu_s": cpu,
            "mb_per_s": received[0] / elapsed / 1e6}


def disk_append(workdir: Path, size: int, sync: bool, time_limit_s: float = 10.0) -> dict:
    path = workdir / ("append-sync.bin" if sync else "append.bin")
    chunk = os.urandom(MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    written = 0
    try:
        t0 = time.perf_counter()
        deadline = t0 + time_limit_s
        while written < size and time.perf_counter() < deadline:
            written += os.write(fd, chunk)
            if sync:
                os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return {"bytes": written, "elapsed_s": elapsed, "mb_per_s": written / elapsed / 1e6}
