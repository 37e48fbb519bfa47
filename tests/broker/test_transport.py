"""The transport: page-cache probing and warming of cold ranges, one send at a time."""

from __future__ import annotations

import math
import os

import pytest
import trio
import trio.testing

from broker.transport import Transport, is_cached, warm


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
def test_cold_pages_are_detected_and_warmed(tmp_path):
    path = tmp_path / "segment.log"
    path.write_bytes(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop the clean pages
        if is_cached(fd, 0, 4 << 20):
            pytest.skip("this filesystem keeps pages cached despite DONTNEED (e.g. tmpfs)")
        warm(fd, 0, 4 << 20)
        assert is_cached(fd, 0, 4 << 20)
    finally:
        os.close(fd)


async def test_one_send_at_a_time_and_the_send_deadline_is_armed_only_while_waiting():
    ours, theirs = trio.socket.socketpair()
    transport = Transport(trio.SocketStream(ours), send_timeout_s=30)
    big = b"x" * (16 << 20)  # far more than the socket buffers hold: the send must wait
    scope = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send, [big], scope)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() < scope.deadline <= trio.current_time() + 30
            with pytest.raises(trio.BusyResourceError):
                await transport.send([b"more"], trio.CancelScope())
            received = 0
            while received < len(big):
                received += len(await theirs.recv(1 << 20))
        assert scope.deadline == math.inf  # lifted once the bytes were taken
        quick = trio.CancelScope()
        await transport.send([b"small"], quick)  # fits at once: no deadline at all
        assert quick.deadline == math.inf and await theirs.recv(100) == b"small"
    finally:
        ours.close()
        theirs.close()
