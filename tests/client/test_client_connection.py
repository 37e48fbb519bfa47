"""The client's connections (``client.network``) under both drivers: every call answered or
failed exactly once, by its deadline; a write the broker stops reading, a connection cut
mid-write, an unanswered request, a long poll ahead of other requests."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import trio
import trio.testing
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.errors import ConnectionLostError, RequestTimeoutError
from sluice.client.network import Call, Network
from sluice.client.procedure import connect
from sluice.client.producer import Producer
from sluice.client.sync import Admin as SyncAdmin
from sluice.client.sync import Consumer as SyncConsumer
from sluice.client.sync import Producer as SyncProducer
from sluice.client.sync_driver import SyncDriver
from sluice.client.trio_driver import TrioDriver
from sluice.protocol import messages as m
from sluice.protocol.connection import RequestReceived, ServerConnection

from tests.drivers import DRIVERS, in_thread

WAIT_S = 10  # bound on anything that could hang; never reached when the client works
HUGE = 32 << 20  # far more than the socket buffers hold


class Answering:
    """A listener that answers the handshake of each connection, then does what the test
    says: ``reads=False`` never reads again, ``reads=True`` reads and never answers."""

    def __init__(self, reads: bool) -> None:
        self.reads = reads
        self.port = 0
        self.streams: list[trio.SocketStream] = []
        self.handshaken = trio.Event()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        self.streams.append(stream)
        conn = ServerConnection()
        while not isinstance(event := conn.next_event(), RequestReceived):
            conn.receive_data(await stream.receive_some(1 << 16))
        await stream.send_all(b"".join(conn.send_response(
            event.correlation_id, m.HandshakeResponse(broker_id=0))))
        self.handshaken.set()
        while self.reads and await stream.receive_some(1 << 16):
            pass
        await trio.sleep_forever()


class Driven:
    """A ``Network`` to ``port`` and its driver: trio's in the test's nursery, or the
    blocking one, pumped in a worker thread."""

    def __init__(self, driver: str, nursery, port: int, request_timeout_s: float) -> None:
        clock = trio.current_time if driver == "trio" else time.monotonic
        self.net = Network(f"127.0.0.1:{port}", client_id="test", clock=clock,
                           request_timeout_s=request_timeout_s, reconnect_timeout_s=0)
        if driver == "trio":
            self.driver = TrioDriver(self.net, nursery, [])
            self.driver.start()
        else:
            self.driver = SyncDriver(self.net, [])
        self.answers: Counter = Counter()

    def call(self, request, **options) -> Call:
        """A call (not sent yet) that counts how often it is answered."""
        call = Call(request, lambda response, error: self.answers.update([id(call)]), **options)
        return call

    async def run(self, procedure):
        if isinstance(self.driver, TrioDriver):
            return await self.driver.run(procedure)
        return await in_thread(self.driver.run, procedure)

    async def until_done(self, *calls: Call) -> None:
        for call in calls:
            self.net.submit(call)
        if isinstance(self.driver, TrioDriver):
            self.driver.step()
            await self.driver.wait(lambda: all(c.done for c in calls))
        else:
            await in_thread(self.driver.wait, lambda: all(c.done for c in calls))


async def connected(driver: str, nursery, *, reads: bool, request_timeout_s: float):
    """An ``Answering`` listener and a ``Driven`` network connected to it."""
    server = Answering(reads=reads)
    await nursery.start(server.serve)
    driven = Driven(driver, nursery, server.port, request_timeout_s)
    await driven.run(connect())
    return server, driven


def huge(acks: int) -> m.ProduceRequest:
    return m.ProduceRequest(acks=acks, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=b"x" * HUGE)])


@pytest.mark.parametrize("driver", DRIVERS)
async def test_an_unanswered_request_times_out_and_closes_the_connection(nursery, driver):
    server, driven = await connected(driver, nursery, reads=True,
                                      request_timeout_s=0.2)
    first, second = driven.call(m.MetadataRequest(topics=["a"])), driven.call(m.MetadataRequest())
    with trio.fail_after(WAIT_S):
        await driven.until_done(first, second)
    assert isinstance(first.error, RequestTimeoutError) and "request timeout" in str(first.error)
    assert type(second.error) is ConnectionLostError
    assert "earlier request timed out" in str(second.error)
    assert driven.answers == {id(first): 1, id(second): 1}
    assert not driven.net.any_channel().ready


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_request_behind_a_long_poll_is_not_timed_out_before_it(nursery, driver):
    """Answers come in order: a request queued behind one with a longer timeout (a fetch's
    long poll) cannot be answered before it, so its deadline is never earlier."""
    server, driven = await connected(driver, nursery, reads=True,
                                      request_timeout_s=0.2)
    poll = driven.call(m.MetadataRequest(topics=["a"]), timeout_s=0.6)
    behind = driven.call(m.MetadataRequest(topics=["b"]))
    with trio.fail_after(WAIT_S):
        await driven.until_done(poll, behind)
    assert behind.deadline == poll.deadline
    assert isinstance(poll.error, RequestTimeoutError)
    assert isinstance(behind.error, ConnectionLostError)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_write_the_broker_never_reads_times_out(nursery, driver):
    server, driven = await connected(driver, nursery, reads=False,
                                      request_timeout_s=0.3)
    stuck = driven.call(huge(acks=0))  # no answer awaited: done once written, if ever
    with trio.fail_after(WAIT_S):
        await driven.until_done(stuck)
    assert isinstance(stuck.error, RequestTimeoutError) and "not written" in str(stuck.error)
    assert driven.answers == {id(stuck): 1}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_connection_cut_mid_write_fails_every_call_on_it_once(nursery, driver):
    server, driven = await connected(driver, nursery, reads=False,
                                      request_timeout_s=30)
    first, stuck = driven.call(m.MetadataRequest(topics=["t"])), driven.call(huge(acks=1))

    async def cut_it_off():
        if driver == "trio":  # cut while the huge write is stuck (nobody reads it); the
            await trio.testing.wait_all_tasks_blocked()  # blocking driver: wherever it is
        await server.streams[0].aclose()

    nursery.start_soon(cut_it_off)
    with trio.fail_after(WAIT_S):
        await driven.until_done(first, stuck)
    assert all(isinstance(c.error, ConnectionLostError) for c in (first, stuck))
    assert driven.answers == {id(first): 1, id(stuck): 1}


async def test_a_blocking_wait_gives_up_at_until_and_the_call_fails_at_its_deadline(nursery):
    server, driven = await connected("blocking", nursery, reads=True,
                                      request_timeout_s=0.3)
    call = driven.call(m.MetadataRequest(topics=["a"]))
    driven.net.submit(call)
    driver = driven.driver
    gave_up = await in_thread(driver.wait, lambda: call.done, time.monotonic() + 0.05)
    assert not gave_up and not call.done and driven.net.any_channel().ready  # still due
    with trio.fail_after(WAIT_S):
        await in_thread(driver.wait, lambda: call.done)
    assert isinstance(call.error, RequestTimeoutError) and "request timeout" in str(call.error)


@pytest.mark.parametrize("client", [Admin, SyncAdmin, Producer, SyncProducer, Consumer, SyncConsumer])
def test_every_client_checks_its_time_options_alike(client):
    with pytest.raises(ValueError, match="request_timeout_ms must be positive, not 0"):
        client("127.0.0.1:1", request_timeout_ms=0)
    with pytest.raises(TypeError, match="reconnect_timeout_ms must be a number of milliseconds"):
        client("127.0.0.1:1", reconnect_timeout_ms="5")
    assert client("127.0.0.1:1", request_timeout_ms=2500).request_timeout_s == 2.5
