"""Scenario 10: the open-files limit (RLIMIT_NOFILE) -- a broker child under a low limit.

Found by fault testing (issue 13.10): at the usual service limit of 1,024 the broker failed at
~1,010 topics with a generic OSError, left the topic half created, refused produce to new
partitions and stopped answering new connections; a restart hit the wall again. Promised and
checked here: the broker states its descriptor needs at start (and raises its soft limit to
the hard one); a topic that does not fit is refused whole, with an error naming the limit and
what to raise; everything created before keeps working; a connection that does not fit is
told TooManyConnectionsError instead of silence; a restart under the same limit serves; one
under a limit too low for the partitions it holds refuses to start, in one line.
"""

from __future__ import annotations

import pytest
import trio
from sluice.protocol import messages as m
from sluice.protocol.errors import RemoteProtocolError, StorageError, TooManyConnectionsError

from tests.broker.conftest import RawClient, fetch, make_batch, produce
from tests.torture.harness import MODES, Broker, record

LIMIT = {"quick": 256, "long": 1024}  # long: the usual service default of issue 13.10


async def create(client: RawClient, name: str, partitions: int = 1) -> m.TopicResult:
    response = await client.request(m.CreateTopicsRequest(
        topics=[m.TopicSpec(name=name, partitions=partitions)]))
    return response.topics[0]


async def connect_until_refused(port: int, most: int) -> tuple[list[RawClient], BaseException]:
    """Open connections (each answering a request) until the broker refuses one."""
    clients: list[RawClient] = []
    for _ in range(most):
        client = await RawClient.connect(port)
        try:
            assert (await client.request(m.MetadataRequest(topics=[]))).error == 0
        except RemoteProtocolError as exc:
            await client.aclose()
            return clients, exc
        clients.append(client)
    raise AssertionError(f"{most} connections and none refused")


@pytest.mark.parametrize("mode", MODES)
async def test_open_files_limit(tmp_path, mode):
    limit = LIMIT[mode]
    broker = Broker(tmp_path, nofile=limit)
    broker.start()
    figures: dict = {"rlimit_nofile": limit}
    try:
        assert f"RLIMIT_NOFILE {limit}" in broker.log_text()  # its needs, stated at start
        with trio.fail_after(120):
            async with await RawClient.connect(broker.port) as admin:
                # Topics of one partition each until one does not fit.
                created: list[str] = []
                while True:
                    result = await create(admin, f"t{len(created)}")
                    if result.error:
                        break
                    created.append(f"t{len(created)}")
                    assert len(created) < limit, "never refused"
                refused = f"t{len(created)}"
                figures["topics_created"] = len(created)
                assert result.error == StorageError.code, result
                for words in ("RLIMIT_NOFILE", "Nothing was created", "raise the open-files limit"):
                    assert words in result.message, result.message
                # A many-partition topic that does not fit is refused whole too.
                assert (await create(admin, "wide", partitions=50)).error == StorageError.code
                # Nothing half created: not listed, and every listed topic describes.
                listed = (await admin.request(m.MetadataRequest())).topics
                assert sorted(t.name for t in listed) == sorted(created)
                described = await admin.request(m.DescribeTopicsRequest(topics=None))
                assert not any(t.error for t in described.topics)
                assert not {refused, "wide"} & {t.name for t in described.topics}
                # Every partition created takes produce and serves fetches.
                for name in created:
                    part = (await produce(admin, name, make_batch([name.encode()]))).partitions[0]
                    assert part.error == 0, part
                sample = (await fetch(admin, created[-1], 0)).partitions[0]
                assert sample.error == 0 and sample.high_watermark == 1
                # Deleting a topic gives its descriptor back.
                deleted = await admin.request(m.DeleteTopicsRequest(topics=[created.pop(0)]))
                assert deleted.topics[0].error == 0
                assert (await create(admin, "after-delete")).error == 0
                assert (await create(admin, "one-too-many")).error == StorageError.code
                # Connections until one does not fit: it is told why, the others carry on.
                clients, exc = await connect_until_refused(broker.port, limit)
                figures["connections_before_refusal"] = len(clients) + 1
                assert isinstance(exc.__cause__, TooManyConnectionsError), exc
                assert "RLIMIT_NOFILE" in exc.__cause__.message, exc.__cause__.message
                figures["peak_fds"] = broker.open_fds()
                assert figures["peak_fds"] <= limit
                for client in clients:
                    assert (await client.request(m.MetadataRequest(topics=[]))).error == 0
                    await client.aclose()
        # A restart under the same limit serves everything it holds.
        assert broker.stop() == 0
        broker.start()
        assert "open files:" in broker.log_since(0)
        async with await RawClient.connect(broker.port) as client:
            part = (await fetch(client, created[-1], 0)).partitions[0]
            assert part.error == 0 and part.high_watermark == 1
        assert broker.stop() == 0
        # Under a limit too low for its partitions it refuses to start, saying so in one line.
        mark = broker.log_size()
        broker.nofile = limit // 2
        with pytest.raises(RuntimeError, match="did not start"):
            broker.start()
        said = [line for line in broker.log_since(mark).strip().splitlines()
                if not line.startswith("time=")]  # the log lines before the refusal
        assert len(said) == 1 and said[0].startswith("sluice broker: the data directory holds")
        assert f"RLIMIT_NOFILE is {limit // 2}" in said[0] and "raise the open-files" in said[0]
        # With a soft limit below the hard one, it raises its own and says so.
        mark = broker.log_size()
        broker.nofile = (limit // 2, limit)
        broker.start()
        assert f"from {limit // 2} to {limit}" in broker.log_since(mark)
    finally:
        if broker.alive():
            assert broker.stop() == 0
    record(f"10-open-files-{mode}", **figures)
