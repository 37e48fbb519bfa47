"""Scenario 11: client faults under load, against a real broker process.

Producers of both clients (two trio ``Producer``s, one blocking ``sluice.client.sync.Producer``
in a thread) send numbered records through a TCP proxy (``tests.faults``) while the test
  (a) cuts every connection mid-request, again and again;
  (b) freezes the broker (SIGSTOP) for longer than the delivery timeout, cutting the
      connections during the freeze;
  (c) stops the broker for longer than the reconnect window, then starts it again.
Promised, checked at the end against the log: every record acknowledged at an offset is at
that offset; no record is stored twice; each producer's acknowledged records are in send
order; every delivery resolved (acknowledged or failed) within the delivery timeout plus a
margin, and every call returned; records sent after each fault are acknowledged again.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager

import pytest
import trio
from sluice.client.admin import Admin
from sluice.client.errors import BrokerUnreachableError, SluiceError
from sluice.client.producer import Producer
from sluice.client.sync import Producer as SyncProducer

from tests.faults import TcpProxy, read_log
from tests.torture.harness import MODES, Broker, record

TOPIC = "faults"
PARTITIONS = 3
MARGIN_S = 5.0  # on top of a call's own timeout: scheduling on 2 loaded cores
SCALE = {
    "quick": dict(cuts=3, freezes=2, outages=1, gap=(0.2, 0.6), freeze_s=2.5,
                  outage_s=2.0, window_ms=1000),
    "long": dict(cuts=25, freezes=8, outages=2, gap=(0.2, 1.5), freeze_s=4.0,
                 outage_s=35.0, window_ms=30_000),
}


class Progress:
    """Wakes the test when a producer gets an acknowledgement: a trio task calls ``acked``,
    the blocking producer's thread ``acked_in_thread``."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def acked(self) -> None:
        self._event.set()

    def acked_in_thread(self) -> None:
        trio.from_thread.run_sync(self._event.set, trio_token=self._token)

    async def wait(self) -> None:
        event = self._event
        await event.wait()
        if self._event is event:
            self._event = trio.Event()


class Ledger:
    """What one producer was told, record by record, and how long its calls took."""

    def __init__(self, name: str, progress: Progress, *, blocking: bool = False) -> None:
        self.name = name
        self.progress = progress
        self.blocking = blocking  # the blocking producer's (else a trio one's)
        self.sent = 0
        self.outcomes: dict[bytes, tuple[int, int] | BaseException] = {}
        self.acked_at: list[float] = []  # monotonic times of acknowledgements
        # The longest a delivery took past the delivery timeout, as seen by the load loop (for
        # the blocking producer, whose deliveries resolve inside its calls, that includes the
        # sends made before the loop asked: each may wait for a write).
        self.latest_s = 0.0
        self.slowest_call_s = 0.0

    def value(self) -> bytes:
        self.sent += 1
        return b"%s-%08d" % (self.name.encode(), self.sent)

    def resolved(self, value: bytes, sent_at: float, outcome, delivery_s: float) -> None:
        now = time.monotonic()
        self.outcomes[value] = outcome
        self.latest_s = max(self.latest_s, now - sent_at - delivery_s)
        if not isinstance(outcome, BaseException):
            self.acked_at.append(now)

    def called(self, began: float) -> None:
        self.slowest_call_s = max(self.slowest_call_s, time.monotonic() - began)


async def trio_load(bootstrap: str, ledger: Ledger, stop: trio.Event, options: dict) -> None:
    """Send until ``stop``, about 2,000 records/s; settle every delivery."""
    delivery_s = options["delivery_timeout_ms"] / 1000
    async with Producer(bootstrap, **options) as producer:
        send_channel, receive_channel = trio.open_memory_channel(float("inf"))

        async def settle() -> None:
            async for value, sent_at, handle in receive_channel:
                try:
                    meta = await handle
                    outcome = (meta.partition, meta.offset)
                except SluiceError as exc:
                    outcome = exc
                ledger.resolved(value, sent_at, outcome, delivery_s)
                if not isinstance(outcome, BaseException):
                    ledger.progress.acked()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(settle)
            async with send_channel:
                while not stop.is_set():
                    for _ in range(20):
                        value = ledger.value()
                        began = time.monotonic()
                        handle = await producer.send(TOPIC, value)
                        ledger.called(began)
                        send_channel.send_nowait((value, began, handle))
                    await trio.sleep(0.01)  # pacing, so the load leaves CPU to the broker


def sync_load(bootstrap: str, ledger: Ledger, stop: threading.Event, options: dict) -> None:
    """The blocking producer's loop (in a thread): send, and wait on the oldest handles."""
    delivery_s = options["delivery_timeout_ms"] / 1000
    pending = []

    def settle(keep: int) -> None:
        acked = len(ledger.acked_at)
        while len(pending) > keep:
            value, sent_at, handle = pending.pop(0)
            began = time.monotonic()
            try:
                meta = handle.result()
                outcome = (meta.partition, meta.offset)
            except SluiceError as exc:
                outcome = exc
            ledger.called(began)
            ledger.resolved(value, sent_at, outcome, delivery_s)
        if len(ledger.acked_at) > acked:
            ledger.progress.acked_in_thread()

    with SyncProducer(bootstrap, **options) as producer:
        while not stop.is_set():
            for _ in range(20):
                value = ledger.value()
                began = time.monotonic()
                pending.append((value, began, producer.send(TOPIC, value)))
                ledger.called(began)
            settle(100)
            time.sleep(0.01)
        settle(0)


async def run_load(bootstrap: str, options: dict, inject) -> list[Ledger]:
    """Two trio producers and a blocking one send while ``inject(ledgers)`` runs the faults."""
    progress = Progress()
    ledgers = [Ledger("a", progress), Ledger("b", progress), Ledger("s", progress, blocking=True)]
    stop, stop_thread = trio.Event(), threading.Event()
    async with trio.open_nursery() as nursery:
        for ledger in ledgers[:2]:
            nursery.start_soon(trio_load, bootstrap, ledger, stop, options)

        async def blocking() -> None:
            await trio.to_thread.run_sync(sync_load, bootstrap, ledgers[2], stop_thread, options,
                                          abandon_on_cancel=True)

        nursery.start_soon(blocking)
        try:
            await wait_acked_after(ledgers, 0.0, 60)
            await inject(ledgers)
        finally:
            stop.set()
            stop_thread.set()
    return ledgers


async def check(broker: Broker, ledgers: list[Ledger]) -> dict:
    """The promises in the module docstring; returns the figures."""
    logs = {p: await read_log(broker.bootstrap, TOPIC, p) for p in range(PARTITIONS)}
    stored = Counter(v for log in logs.values() for v in log.values())
    duplicated = sum(n - 1 for n in stored.values() if n > 1)
    lost = []
    for ledger in ledgers:
        assert len(ledger.outcomes) == ledger.sent, f"{ledger.name}: deliveries never resolved"
        last: dict[int, int] = {}
        for value in sorted(ledger.outcomes):
            outcome = ledger.outcomes[value]
            if isinstance(outcome, BaseException):
                continue
            partition, offset = outcome
            if logs[partition].get(offset) != value:
                lost.append((value, outcome, logs[partition].get(offset)))
            assert offset > last.get(partition, -1), f"{value!r} acknowledged out of order"
            last[partition] = offset
    assert not lost, lost[:5]
    assert duplicated == 0, [v for v, n in stored.items() if n > 1][:5]
    latest = {kind: max(0.0, *(ledger.latest_s for ledger in ledgers if ledger.blocking == is_blocking))
              for kind, is_blocking in (("trio", False), ("blocking", True))}
    slowest = max(ledger.slowest_call_s for ledger in ledgers)
    assert max(latest.values()) <= MARGIN_S, f"a delivery resolved too late: {latest}"
    return {
        "acked": sum(len(ledger.acked_at) for ledger in ledgers),
        "failed": sum(ledger.sent - len(ledger.acked_at) for ledger in ledgers),
        "stored": sum(stored.values()), "lost": len(lost), "duplicated": duplicated,
        "latest_past_delivery_timeout_s": {k: round(v, 2) for k, v in latest.items()},
        "slowest_call_s": round(slowest, 2),
    }


def acked_after(ledgers: list[Ledger], moment: float) -> bool:
    return all(any(t > moment for t in ledger.acked_at) for ledger in ledgers)


async def wait_acked_after(ledgers: list[Ledger], moment: float, bound_s: float) -> None:
    """Until every producer has had a record acknowledged after ``moment``."""
    with trio.fail_after(bound_s):
        while not acked_after(ledgers, moment):
            await ledgers[0].progress.wait()


@asynccontextmanager
async def faulty_broker(tmp_path, nursery):
    """A broker with the topic, and the proxy in front of it; the broker must stop cleanly."""
    broker = Broker(tmp_path, settings={"checkpoint_interval_s": 0.5})
    broker.start()
    try:
        async with Admin(broker.bootstrap) as admin:
            await admin.create_topic(TOPIC, PARTITIONS)
        proxy = TcpProxy(broker.port)
        await nursery.start(proxy.serve)
        yield broker, proxy
    finally:
        code = broker.stop()
    assert code == 0, broker.log_text()


async def load_and_check(broker: Broker, proxy: TcpProxy, options: dict, inject):
    """The load through the proxy while ``inject`` runs; then the checks: the ledgers and
    the figures."""
    with trio.fail_after(600):
        ledgers = await run_load(proxy.bootstrap, options, inject)
        return ledgers, await check(broker, ledgers)


@pytest.mark.parametrize("mode", MODES)
async def test_connection_cuts_mid_request_lose_and_duplicate_nothing(tmp_path, nursery, mode):
    """(a): every cut is retried within the (default) delivery timeout: nothing fails."""
    scale = SCALE[mode]
    rng = random.Random(7)
    options = dict(acks="all", linger_ms=2, delivery_timeout_ms=120_000)
    cuts = 0
    async with faulty_broker(tmp_path, nursery) as (broker, proxy):

        async def inject(ledgers: list[Ledger]) -> None:
            nonlocal cuts
            for _ in range(scale["cuts"]):
                await trio.sleep(rng.uniform(*scale["gap"]))  # pacing: a cut at a random moment
                await proxy.sever()
                cuts += 1
                await wait_acked_after(ledgers, time.monotonic(), 60)

        _, figures = await load_and_check(broker, proxy, options, inject)
    record(f"11a-connection-cuts-{mode}", cuts=cuts, connections=proxy.accepted, **figures)
    assert cuts == scale["cuts"] and figures["failed"] == 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_freeze_longer_than_the_delivery_timeout(tmp_path, nursery, mode):
    """(b): records caught in a freeze fail by their delivery timeout (their outcome unknown:
    they may be in the log, once); the producers start a new epoch and carry on."""
    scale = SCALE[mode]
    rng = random.Random(8)
    options = dict(acks=1, linger_ms=2, delivery_timeout_ms=1500, request_timeout_ms=2000)
    freezes = 0
    async with faulty_broker(tmp_path, nursery) as (broker, proxy):

        async def inject(ledgers: list[Ledger]) -> None:
            nonlocal freezes
            for _ in range(scale["freezes"]):
                await trio.sleep(rng.uniform(*scale["gap"]))
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await trio.sleep(scale["freeze_s"] / 2)  # the freeze itself
                    await proxy.sever()  # cut mid-request: unanswered on both sides
                    await trio.sleep(scale["freeze_s"] / 2)
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                freezes += 1
                await wait_acked_after(ledgers, time.monotonic(), 60)

        _, figures = await load_and_check(broker, proxy, options, inject)
    record(f"11b-freeze-{mode}", freezes=freezes, freeze_s=scale["freeze_s"], **figures)
    assert freezes == scale["freezes"] and figures["failed"] > 0
    bound = options["request_timeout_ms"] / 1000 + MARGIN_S  # a blocking send may write
    assert figures["slowest_call_s"] <= bound, figures


@pytest.mark.parametrize("mode", MODES)
async def test_an_outage_longer_than_the_reconnect_window(tmp_path, nursery, mode):
    """(c): pending records fail with ``BrokerUnreachableError`` once the window is over;
    records sent after the broker is back are acknowledged (new epoch, sequences from 0)."""
    scale = SCALE[mode]
    options = dict(acks="all", linger_ms=2, delivery_timeout_ms=120_000,
                   reconnect_timeout_ms=scale["window_ms"])
    outages = 0
    async with faulty_broker(tmp_path, nursery) as (broker, proxy):

        async def inject(ledgers: list[Ledger]) -> None:
            nonlocal outages
            for _ in range(scale["outages"]):
                broker.kill()
                await trio.sleep(scale["outage_s"])  # the outage, longer than the window
                broker.start()
                outages += 1
                await wait_acked_after(ledgers, time.monotonic(), 60)

        ledgers, figures = await load_and_check(broker, proxy, options, inject)
    unreachable = sum(isinstance(outcome, BrokerUnreachableError)
                      for ledger in ledgers for outcome in ledger.outcomes.values())
    record(f"11c-outage-{mode}", outages=outages, outage_s=scale["outage_s"],
           window_s=scale["window_ms"] / 1000, unreachable=unreachable, **figures)
    assert outages == scale["outages"] and unreachable > 0
