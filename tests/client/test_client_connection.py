"""The client connections: answers handed to callbacks in order, a failed write, and every
request answered or failed by its deadline."""

import socket
import time

import pytest
import trio
import trio.testing
from sluice.client.admin import Admin
from sluice.client.connection import Connection
from sluice.client.consumer import Consumer
from sluice.client.errors import ConnectionLostError, RequestTimeoutError
from sluice.client.producer import Producer
from sluice.client.sync import Admin as SyncAdmin
from sluice.client.sync import Consumer as SyncConsumer
from sluice.client.sync import Producer as SyncProducer
from sluice.client.sync import SyncConnection
from sluice.protocol import messages as m


async def test_a_failed_write_is_reported_once_to_its_caller_and_fails_the_rest(nursery):
    accepted: list[trio.SocketStream] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, accepted.append, listeners)  # never reads
    conn = await Connection.open("127.0.0.1", port, nursery)
    answers = []
    await conn.send(m.MetadataRequest(topics=["t"]), lambda r, e: answers.append(("first", e)))
    huge = m.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=b"x" * (32 << 20))
    ])

    async def cut_it_off():
        await trio.testing.wait_all_tasks_blocked()  # the huge write is stuck: nobody reads
        await accepted[0].aclose()

    nursery.start_soon(cut_it_off)
    with trio.fail_after(10):
        try:
            await conn.send(huge, lambda r, e: answers.append(("huge", e)))
        except ConnectionLostError:
            pass
        else:
            raise AssertionError("the write should have failed")
    assert [name for name, _ in answers] == ["first"]
    assert isinstance(answers[0][1], ConnectionLostError) and conn.closed


async def test_a_write_cut_off_by_the_reader_failing_is_reported_once(nursery):
    """The reader sees EOF and fails the connection while a large write waits for room: the
    request's Pending is resolved with the error, and ``send`` returns it instead of also
    raising (it once popped an empty queue: ``IndexError``)."""
    ours, theirs = trio.socket.socketpair()
    conn = Connection(trio.SocketStream(ours), "peer")
    nursery.start_soon(conn._read_loop)
    answers = []
    huge = m.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        m.ProducePartition(topic="t", partition=0, records=b"x" * (32 << 20))
    ])

    async def half_close():
        await trio.testing.wait_all_tasks_blocked()  # the huge write is stuck: nobody reads
        theirs.shutdown(socket.SHUT_WR)  # the reader gets EOF; this end still reads nothing

    nursery.start_soon(half_close)
    try:
        with trio.fail_after(10):
            pending = await conn.send(huge, lambda r, e: answers.append(e))  # does not raise
            assert len(answers) == 1 and isinstance(answers[0], ConnectionLostError)
            with pytest.raises(ConnectionLostError):
                await pending.wait()
    finally:
        theirs.close()
    assert conn.closed


async def silent_broker(nursery) -> tuple[int, list]:
    """A listener that accepts and never reads nor answers: its port, and its streams."""
    accepted: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, hold, listeners)
    return listeners[0].socket.getsockname()[1], accepted


async def test_an_unanswered_request_times_out_and_closes_the_connection(nursery):
    port, _ = await silent_broker(nursery)
    conn = await Connection.open("127.0.0.1", port, nursery, request_timeout_s=0.2)
    first = await conn.send(m.MetadataRequest(topics=["a"]))
    second = await conn.send(m.MetadataRequest(topics=["b"]))
    with trio.fail_after(10):
        with pytest.raises(RequestTimeoutError, match="request timeout"):
            await first.wait()
        with pytest.raises(ConnectionLostError, match="earlier request timed out"):
            await second.wait()
    assert conn.closed


async def test_a_request_behind_a_long_poll_is_not_timed_out_before_it(nursery):
    """Answers come in order: a request queued behind one with a longer timeout (a fetch's
    long poll) cannot be answered before it, so its deadline is never earlier."""
    port, _ = await silent_broker(nursery)
    conn = await Connection.open("127.0.0.1", port, nursery, request_timeout_s=0.2)
    poll = await conn.send(m.MetadataRequest(topics=["a"]), timeout_s=0.6)
    behind = await conn.send(m.MetadataRequest(topics=["b"]))
    assert behind.deadline == poll.deadline
    with trio.fail_after(10):
        with pytest.raises(RequestTimeoutError):
            await poll.wait()
    with pytest.raises(ConnectionLostError):
        await behind.wait()


async def test_a_write_the_broker_never_reads_times_out(nursery):
    port, _ = await silent_broker(nursery)
    conn = await Connection.open("127.0.0.1", port, nursery, request_timeout_s=0.3)
    huge = m.ProduceRequest(acks=0, timeout_ms=1000, partitions=[  # acks=0: no answer awaited
        m.ProducePartition(topic="t", partition=0, records=b"x" * (32 << 20))
    ])
    with trio.fail_after(10):
        with pytest.raises(RequestTimeoutError, match="not written"):
            await conn.send(huge)
    assert conn.closed


def test_a_blocking_receive_gives_up_at_until_and_fails_at_the_deadline():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    conn = SyncConnection(f"127.0.0.1:{port}", "test", request_timeout_s=0.3)
    try:
        conn._open("127.0.0.1", port, None)
        peer, _ = listener.accept()
        conn.send(m.MetadataRequest(topics=["a"]))
        assert conn.receive(until=time.monotonic() + 0.05) is None  # still due, still open
        assert conn.sock is not None
        with pytest.raises(RequestTimeoutError, match="request timeout"):
            conn.receive()
        assert conn.sock is None
        peer.close()
    finally:
        listener.close()


@pytest.mark.parametrize("client", [Admin, SyncAdmin, Producer, SyncProducer, Consumer, SyncConsumer])
def test_every_client_checks_its_time_options_alike(client):
    with pytest.raises(ValueError, match="request_timeout_ms must be positive, not 0"):
        client("127.0.0.1:1", request_timeout_ms=0)
    with pytest.raises(TypeError, match="reconnect_timeout_ms must be a number of milliseconds"):
        client("127.0.0.1:1", reconnect_timeout_ms="5")
    assert client("127.0.0.1:1", request_timeout_ms=2500).request_timeout_s == 2.5
