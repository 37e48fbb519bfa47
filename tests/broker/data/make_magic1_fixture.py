"""Make ``magic1-datadir.tar.gz`` and ``magic1-expected.json``: a data directory written by the
last Sluice before record batch v2 (commit 8ed2b4c), and what its records are.

Run it with THAT version installed (e.g. in a worktree of 8ed2b4c with its own venv):
``python tests/broker/data/make_magic1_fixture.py OUT_DIR``. It starts that version's
broker, produces keyed records with headers and out-of-order timestamps through an
idempotent producer (several segments per partition, index entries), commits a consumer
group's offsets, stops the broker cleanly, then records every batch's header fields and
records as decoded by that version, and the group's committed offsets.
"""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import trio
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.producer import Producer
from sluice.protocol.batch import decode_records, iter_batches, parse_header


async def populate(bootstrap: str) -> dict:
    async with Admin(bootstrap) as admin:
        await admin.create_topic("orders", 2, {"segment_bytes": 4000, "index_interval_bytes": 300})
        await admin.create_topic("plain", 1, {})
    async with Producer(bootstrap, acks="all", idempotent=True, linger_ms=1) as producer:
        await producer.partitions_for("orders")
        await producer.partitions_for("plain")
        for i in range(300):
            await producer.send(
                "orders", b"order %d" % i + b"." * (i % 50), key=b"customer-%d" % (i % 7),
                headers=[("source", b"web"), ("n\u00e9", b"%d" % i)] if i % 3 else None,
                timestamp=1_700_000_000_000 + i * 10 - (i % 4) * 25,
            )
            if i % 40 == 0:
                await producer.flush()
        # One batch whose columns are all nil but the values (one timestamp, no keys or headers)
        await producer.send_batch("plain", [b"v%d" % i for i in range(50)] + [b"", b"last"])
        await producer.flush()
        await producer.send("plain", None, key=b"tombstone", timestamp=1_700_000_001_000)
        await producer.flush()
    async with Consumer(bootstrap, group_id="billing", topics=["orders"],
                        auto_offset_reset="earliest", auto_commit=False) as consumer:
        seen = 0
        async for _record in consumer:
            seen += 1
            if seen == 200:
                break
        await consumer.commit()
        return {f"{t}-{p}": o for (t, p), o in (await consumer.committed()).items()}


def hex_or_none(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def main(out: Path) -> None:
    data = out / "magic1-datadir"
    broker = subprocess.Popen(
        [sys.executable, "-m", "sluice.broker", "--data-dir", str(data), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = broker.stdout.readline()
        bootstrap = line.split()[-1]
        committed = trio.run(populate, bootstrap)
    finally:
        broker.terminate()
        broker.wait(30)
    batches = {}
    for log in sorted(data.glob("*-*/*.log")):
        for batch in iter_batches(log.read_bytes()):
            batches.setdefault(log.parent.name, []).append({
                "header": parse_header(batch)._asdict(),
                "records": [
                    [r.offset, r.timestamp, hex_or_none(r.key), hex_or_none(r.value),
                     [[k, v.hex()] for k, v in r.headers]]
                    for r in decode_records(batch)
                ],
            })
    (out / "magic1-expected.json").write_text(
        json.dumps({"committed": committed, "batches": batches}, indent=0, sort_keys=True)
    )
    with tarfile.open(out / "magic1-datadir.tar.gz", "w:gz") as tar:
        tar.add(data, arcname="magic1-datadir")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
