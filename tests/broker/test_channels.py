"""The channels: page-cache checks (cold ranges found and warmed), one send at a time, the
send deadline, and the stream channel's receiving and copying of file slices."""

from __future__ import annotations

import math
import os

import pytest
import trio
import trio.testing
from sluice.broker.io import pagecache, streams
from sluice.broker.io.channel import ChannelStats
from sluice.broker.io.sockets import SocketChannel
from sluice.broker.io.streams import StreamChannel
from sluice.broker.storage.files import SegmentFile
from sluice.protocol.slices import FileSlice

MIB = 1024 * 1024


def _cold_file(tmp_path, size: int) -> int:
    """An fd of a file whose pages were dropped from the page cache (skip where they can't be)."""
    path = tmp_path / "segment.log"
    path.write_bytes(os.urandom(size))
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    _evict(fd, 0, size)
    # Asked without reading where possible: an RWF_NOWAIT read may start readahead.
    if pagecache.cached_pages(fd, 0, size) is None and pagecache.read_cached(fd, 0, 4096) is not None:
        os.close(fd)
        pytest.skip("this filesystem keeps pages cached despite DONTNEED (e.g. tmpfs)")
    return fd


def _evict(fd: int, position: int, length: int) -> None:
    """Drop a range's clean pages. DONTNEED skips pages the kernel holds at that moment (seen
    on this VM under load), so where ``cachestat`` can confirm it, ask again until it took."""
    for _ in range(100):
        os.posix_fadvise(fd, position, length, os.POSIX_FADV_DONTNEED)
        if not pagecache.cached_pages(fd, position, length):  # 0, or None: can't confirm
            return
    os.close(fd)
    pytest.skip("this filesystem keeps pages cached despite DONTNEED (e.g. tmpfs)")


def _cachestat_check(fd, position, length):
    cached = pagecache.cached_pages(fd, position, length)
    if cached is None:
        pytest.skip("no cachestat(2) here (Linux < 6.5)")
    return cached >= pagecache.pages_spanned(position, length)


# Both ways of asking must give the same answers (the probe samples one page in 32, so the
# evicted hole is made larger than its stride).
CHECKS = {"cachestat": _cachestat_check, "probe": pagecache.probe_cached}


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_cold_pages_are_detected_and_warmed(tmp_path, check):
    fd = _cold_file(tmp_path, 6 * MIB)
    try:
        assert not check(fd, 0, 6 * MIB)
        pagecache.warm(fd, 0, 6 * MIB)
        assert check(fd, 0, 6 * MIB)
        # A hole in the middle: the ranges around it are cached, any range over it is not. It
        # is 2 MiB-aligned because the page cache may hold the file in folios of up to 2 MiB,
        # and DONTNEED leaves a folio that reaches outside the range.
        _evict(fd, 2 * MIB, 2 * MIB)
        assert check(fd, 0, 2 * MIB) and check(fd, 4 * MIB, 2 * MIB)
        assert not check(fd, 0, 6 * MIB)
        assert not check(fd, 2 * MIB - 10, 20)  # the last page before it and the first in it
        assert check(fd, 123, 0)  # an empty range is trivially cached
    finally:
        os.close(fd)


def test_without_cachestat_the_probe_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(pagecache, "_cachestat_works", False)
    assert pagecache.cached_pages(0, 0, 4096) is None
    if not hasattr(os, "RWF_NOWAIT"):
        return
    fd = _cold_file(tmp_path, 1 << 20)
    try:
        assert not pagecache.is_cached(fd, 0, 1 << 20)
        pagecache.warm(fd, 0, 1 << 20)
        assert pagecache.is_cached(fd, 0, 1 << 20)
    finally:
        os.close(fd)


def test_pages_spanned_counts_partial_pages():
    page = pagecache.PAGE
    assert pagecache.pages_spanned(0, 1) == 1
    assert pagecache.pages_spanned(0, page) == 1
    assert pagecache.pages_spanned(page - 1, 2) == 2
    assert pagecache.pages_spanned(10, 3 * page) == 4


async def test_one_send_at_a_time_and_the_send_deadline_is_armed_only_while_waiting():
    ours, theirs = trio.socket.socketpair()
    channel = SocketChannel(trio.SocketStream(ours), send_timeout_s=30)
    big = b"x" * (16 << 20)  # far more than the socket buffers hold: the send must wait
    scope = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.send, [big], scope)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() < scope.deadline <= trio.current_time() + 30
            with pytest.raises(trio.BusyResourceError):
                await channel.send([b"more"], trio.CancelScope())
            received = 0
            while received < len(big):
                received += len(await theirs.recv(1 << 20))
        assert scope.deadline == math.inf  # lifted once the bytes were taken
        quick = trio.CancelScope()
        await channel.send([b"small"], quick)  # fits at once: no deadline at all
        assert quick.deadline == math.inf and await theirs.recv(100) == b"small"
    finally:
        ours.close()
        theirs.close()


async def test_the_stream_channel_hands_out_received_bytes_in_pieces():
    ours, theirs = trio.testing.memory_stream_pair()
    channel = StreamChannel(ours, send_timeout_s=30)
    view = memoryview(bytearray(4))
    assert channel.receive_now(view) is None  # nothing there yet
    await theirs.send_all(b"abcdefghij")
    await channel.wait_receivable()
    got = []
    while (n := channel.receive_now(view)) is not None:
        got.append(bytes(view[:n]))
    assert got == [b"abcd", b"efgh", b"ij"]
    await theirs.aclose()
    await channel.wait_receivable()
    assert channel.receive_now(view) == 0  # the peer closed


async def test_the_stream_channel_copies_file_slices_in_order(tmp_path):
    """Bytes and file slices, small and larger than one send, arrive in order; the deadline
    is armed while a send runs and lifted after it; one send at a time."""
    data = os.urandom(3 * streams.COALESCE_BYTES + 123)
    path = tmp_path / "segment.log"
    path.write_bytes(data)
    file = SegmentFile(os.open(path, os.O_RDONLY), path)
    ours, theirs = trio.testing.lockstep_stream_pair()  # every send waits for the reader
    channel = StreamChannel(ours, send_timeout_s=30)
    pieces = [b"head", FileSlice(file, 10, 20), b"-", FileSlice(file, 0, len(data)), b"tail"]
    expected = b"head" + data[10:30] + b"-" + data + b"tail"
    scope = trio.CancelScope()
    received = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.send, pieces, scope)
            await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() < scope.deadline <= trio.current_time() + 30
            with pytest.raises(trio.BusyResourceError):
                await channel.send([b"more"], trio.CancelScope())
            while len(received) < len(expected):
                received += await theirs.receive_some()
        assert bytes(received) == expected and scope.deadline == math.inf
    finally:
        file.release()


async def test_the_stream_channel_refuses_a_slice_the_file_cannot_fill(tmp_path):
    path = tmp_path / "short.log"
    path.write_bytes(b"x" * 100)
    file = SegmentFile(os.open(path, os.O_RDONLY), path)
    ours, theirs = trio.testing.memory_stream_pair()
    try:
        with pytest.raises(trio.BrokenResourceError, match="file ended"):
            await StreamChannel(ours, send_timeout_s=30).send(
                [FileSlice(file, 50, 100)], trio.CancelScope())
    finally:
        file.release()


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
@pytest.mark.parametrize("kind", ["socket", "stream"])
async def test_cold_slices_are_counted_once_each(tmp_path, kind):
    """A slice whose pages are not cached counts as one cold read of its length; sending it
    again (now warm) counts nothing."""
    size = 2 * MIB
    fd = _cold_file(tmp_path, size)
    file = SegmentFile(fd, tmp_path / "segment.log")
    stats = ChannelStats()
    ours, theirs = trio.socket.socketpair()
    stream = trio.SocketStream(ours)
    channel = (SocketChannel(stream, send_timeout_s=30, stats=stats) if kind == "socket"
               else StreamChannel(stream, send_timeout_s=30, stats=stats))
    try:
        seen = []
        for _ in range(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.send, [FileSlice(file, 0, size)], trio.CancelScope())
                received = 0
                while received < size:
                    received += len(await theirs.recv(MIB))
            seen.append((stats.cold_reads, stats.cold_read_bytes))
        if kind == "socket":  # the whole slice is warmed at once
            assert seen == [(1, size), (1, size)]
        else:  # read in COALESCE_BYTES pieces: the first is cold, readahead may warm others
            reads, read_bytes = seen[0]
            assert reads >= 1 and read_bytes == reads * streams.COALESCE_BYTES
            assert seen[1] == seen[0]
    finally:
        file.release()
        ours.close()
        theirs.close()
