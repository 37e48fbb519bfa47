"""Brokers written in the tests, on the sans-IO server side of ``protocol.connection``: as many
as a test wants, on 127.0.0.1, sharing one ``StubCluster`` that says which of them leads
each partition and keeps the records.

A stub broker answers handshake, metadata (naming every stub broker, and each partition's
leader), init_producer_id, produce, fetch (with a long poll) and list_offsets (earliest and
latest). It answers ``NotLeaderError`` for a partition it does not lead, so a test moves a
leader (``StubCluster.move``) to see a client follow it. ``StubCluster.inject`` makes the
next requests of one API fail with a top-level error. Every request a broker received is in
its ``requests`` list, for the test to check where the client sent what. ``hold`` keeps the
answers to one API back until ``release`` (a slow broker, without sleeping); ``cut`` closes a
broker's connections.

Requests on one connection are answered in order (a long poll holds up the ones behind it,
as the real broker's do). It keeps no producer state: a retried batch is stored again.
"""

from __future__ import annotations

import os
from collections import defaultdict

import trio
from sluice.protocol import messages as m
from sluice.protocol.batch import iter_batches, stamp, validate_batch
from sluice.protocol.connection import BadRequest, RequestReceived, ServerConnection
from sluice.protocol.errors import NotLeaderError, UnknownTopicOrPartitionError, code_for_error
from sluice.protocol.framing import CLOSED, NEED_DATA


class StubCluster:
    """Which stub broker leads each partition, and every partition's batches."""

    def __init__(self) -> None:
        self.brokers: dict[int, StubBroker] = {}
        self.topics: dict[str, tuple[str, list[int]]] = {}  # name -> (topic id, leaders)
        self.logs: dict[tuple[str, int], list[bytearray]] = defaultdict(list)
        self.ends: dict[tuple[str, int], int] = defaultdict(int)
        self.faults: dict[type, list[BaseException]] = defaultdict(list)
        self.gates: dict[type, trio.Event] = {}
        self.held = 0  # answers waiting at a gate
        self._appended = trio.Event()
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery, count: int) -> list[StubBroker]:
        """``count`` more brokers, listening."""
        started = []
        for _ in range(count):
            broker = StubBroker(self, len(self.brokers))
            self.brokers[broker.node] = broker
            await nursery.start(broker.serve)
            started.append(broker)
        return started

    def create(self, topic: str, leaders: list[int]) -> None:
        """A topic with one partition per entry of ``leaders`` (their leading broker)."""
        self.topics[topic] = (os.urandom(16).hex(), list(leaders))

    def move(self, topic: str, partition: int, node: int) -> None:
        """Broker ``node`` leads the partition from now on (the old leader refuses it)."""
        self.topics[topic][1][partition] = node

    def inject(self, request_type: type, *errors: BaseException) -> None:
        """The next requests of this type are each answered with one of ``errors``."""
        self.faults[request_type].extend(errors)

    def hold(self, request_type: type) -> None:
        """Answers to requests of this type wait until ``release``."""
        self.gates[request_type] = trio.Event()

    def release(self, request_type: type) -> None:
        self.gates.pop(request_type).set()

    async def wait_held(self, count: int) -> None:
        """Until ``count`` answers wait at gates."""
        while self.held < count:
            await self._changed.wait()

    async def pass_gate(self, request) -> None:
        gate = self.gates.get(type(request))
        if gate is not None:
            self.held += 1
            self._changed.set()
            self._changed = trio.Event()
            try:
                await gate.wait()
            finally:
                self.held -= 1

    def values(self, topic: str, partition: int) -> list[bytes]:
        """Every record value stored in the partition, in offset order."""
        from sluice.client.records import decode_batches

        return [r.value for batch in self.logs[(topic, partition)]
                for r in decode_batches(topic, partition, batch, 0)]

    def leader(self, topic: str, partition: int) -> int | None:
        known = self.topics.get(topic)
        if known is None or partition >= len(known[1]):
            return None
        return known[1][partition]

    def append(self, tp: tuple[str, int], data) -> int:
        """Store the batches of a produce request; the base offset of the first."""
        base = self.ends[tp]
        for batch in iter_batches(data):
            batch = bytearray(batch)
            header = validate_batch(batch)
            stamp(batch, self.ends[tp])
            self.logs[tp].append(batch)
            self.ends[tp] += header.record_count
        self._appended.set()
        self._appended = trio.Event()
        return base

    def read(self, tp: tuple[str, int], offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``, at least one, up to ``max_bytes``."""
        out = bytearray()
        for batch in self.logs[tp]:
            header = validate_batch(batch)
            if header.next_offset <= offset:
                continue
            if out and len(out) + len(batch) > max_bytes:
                break
            out += batch
        return bytes(out)

    async def wait_appended(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._appended.wait()


class StubBroker:
    """One stub broker (``node``); ``await nursery.start(broker.serve)`` listens."""

    def __init__(self, cluster: StubCluster, node: int) -> None:
        self.cluster = cluster
        self.node = node
        self.port = 0
        self.requests: list = []  # every request received, in order
        self.connections = 0
        self._sessions: set[trio.CancelScope] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._session, listeners)

    def cut(self) -> None:
        """Close every connection to this broker (what is held at a gate is dropped)."""
        for scope in self._sessions:
            scope.cancel()

    async def _session(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        with trio.CancelScope() as scope:
            self._sessions.add(scope)
            try:
                await self._serve(stream)
            finally:
                self._sessions.discard(scope)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = ServerConnection()
        async with stream:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive_some(1 << 16))
                    except trio.BrokenResourceError:
                        return
                    continue
                if event is CLOSED:
                    return
                if isinstance(event, BadRequest):
                    pieces = conn.send_error(event.correlation_id, event.api, event.error)
                else:
                    assert isinstance(event, RequestReceived)
                    self.requests.append(event.request)
                    response = await self._answer(event.request)
                    if response is None:
                        continue
                    pieces = conn.send_response(event.correlation_id, response)
                try:
                    await stream.send_all(b"".join(bytes(piece) for piece in pieces))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def _answer(self, request):
        await self.cluster.pass_gate(request)
        faults = self.cluster.faults.get(type(request))
        if faults:
            error = faults.pop(0)
            return m.api_of(request).response(error=code_for_error(error), message=str(error))
        if isinstance(request, m.HandshakeRequest):
            return m.HandshakeResponse(broker_id=self.node, apis=dict(m.API_VERSIONS))
        if isinstance(request, m.MetadataRequest):
            return self._metadata(request)
        if isinstance(request, m.InitProducerIdRequest):
            return m.InitProducerIdResponse(producer_id=1, producer_epoch=max(0, request.producer_epoch + 1))
        if isinstance(request, m.ProduceRequest):
            return self._produce(request)
        if isinstance(request, m.FetchRequest):
            return await self._fetch(request)
        if isinstance(request, m.ListOffsetsRequest):
            return self._list_offsets(request)
        raise AssertionError(f"the stub broker does not answer {request!r}")

    def _refusal(self, result: type, part):
        """``result`` (a partition result type) refusing ``part`` if this broker does not
        lead it, or None."""
        leader = self.cluster.leader(part.topic, part.partition)
        if leader == self.node:
            return None
        if leader is None:
            code, message = UnknownTopicOrPartitionError.code, "no such partition"
        else:
            code, message = NotLeaderError.code, f"broker {self.node} does not lead it"
        return result(topic=part.topic, partition=part.partition, error=code,
                      message=f"{part.topic}[{part.partition}]: {message}")

    def _metadata(self, request: m.MetadataRequest) -> m.MetadataResponse:
        cluster = self.cluster
        names = sorted(cluster.topics) if request.topics is None else request.topics
        topics = []
        for name in names:
            if name not in cluster.topics:
                topics.append(m.TopicMetadata(name=name, error=UnknownTopicOrPartitionError.code))
                continue
            topic_id, leaders = cluster.topics[name]
            topics.append(m.TopicMetadata(name=name, topic_id=topic_id, partitions=[
                m.PartitionMetadata(partition=p, leader=leader) for p, leader in enumerate(leaders)
            ]))
        brokers = [m.BrokerInfo(id=b.node, host="127.0.0.1", port=b.port)
                   for b in cluster.brokers.values()]
        return m.MetadataResponse(brokers=brokers, controller_id=0, topics=topics)

    def _produce(self, request: m.ProduceRequest) -> m.ProduceResponse | None:
        results = []
        for part in request.partitions:
            refusal = self._refusal(m.ProducePartitionResult, part)
            if refusal is not None:
                results.append(refusal)
                continue
            base = self.cluster.append((part.topic, part.partition), part.records)
            results.append(m.ProducePartitionResult(
                topic=part.topic, partition=part.partition, base_offset=base))
        if not request.acks:
            return None
        return m.ProduceResponse(partitions=results)

    async def _fetch(self, request: m.FetchRequest) -> m.FetchResponse:
        for attempt in range(2):
            results, found = [], 0
            for part in request.partitions:
                refusal = self._refusal(m.FetchPartitionData, part)
                if refusal is not None:
                    results.append(refusal)
                    continue
                tp = (part.topic, part.partition)
                data = self.cluster.read(tp, part.offset, part.max_bytes)
                found += len(data)
                results.append(m.FetchPartitionData(
                    topic=part.topic, partition=part.partition, records=data,
                    high_watermark=self.cluster.ends[tp], log_start_offset=0))
            if found or attempt or not request.max_wait_ms:
                return m.FetchResponse(partitions=results)
            await self.cluster.wait_appended(request.max_wait_ms / 1000)
        raise AssertionError("unreachable")

    def _list_offsets(self, request: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
        results = []
        for part in request.partitions:
            refusal = self._refusal(m.ListOffsetsResult, part)
            if refusal is not None:
                results.append(refusal)
                continue
            end = self.cluster.ends[(part.topic, part.partition)]
            offset = 0 if part.timestamp == -2 else end
            results.append(m.ListOffsetsResult(
                topic=part.topic, partition=part.partition, offset=offset, timestamp=-1))
        return m.ListOffsetsResponse(partitions=results)
