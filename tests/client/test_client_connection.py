"""The client connection: answers handed to callbacks in order, and a failed write."""

import socket

import pytest
import trio
import trio.testing
from sluice.client.connection import Connection
from sluice.client.errors import ConnectionLostError
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
