"""A minimal Kafka-protocol client for tests: ``protocol.kafka.KafkaClientConnection`` over one
TCP connection, so tests pin the Kafka listener's behaviour on the wire -- including for
requests no real client would send."""

from __future__ import annotations

import time

import trio
from sluice.protocol.batch import build_batch
from sluice.protocol.kafka import KafkaClientConnection, ResponseReceived
from sluice.protocol.kafka import messages as k

from tests.broker.conftest import StreamClient

# The versions the clients negotiate with this broker (the highest advertised), by API.
LATEST = {0: 8, 1: 11, 2: 5, 3: 8, 8: 7, 9: 5, 10: 2, 11: 5, 12: 3, 13: 3, 14: 3, 15: 4, 16: 2,
          18: 3, 19: 4, 20: 3, 22: 1, 32: 3}
API_KEYS = {k.ProduceRequest: 0, k.FetchRequest: 1, k.ListOffsetsRequest: 2, k.MetadataRequest: 3,
            k.OffsetCommitRequest: 8, k.OffsetFetchRequest: 9, k.FindCoordinatorRequest: 10,
            k.JoinGroupRequest: 11, k.HeartbeatRequest: 12, k.LeaveGroupRequest: 13,
            k.SyncGroupRequest: 14, k.DescribeGroupsRequest: 15, k.ListGroupsRequest: 16,
            k.ApiVersionsRequest: 18, k.CreateTopicsRequest: 19, k.DeleteTopicsRequest: 20,
            k.InitProducerIdRequest: 22, k.DescribeConfigsRequest: 32}


class KafkaRawClient(StreamClient):
    """One connection to the Kafka listener; ``request`` sends and waits for the answer."""

    response_event = ResponseReceived

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream, KafkaClientConnection(client_id="raw-test"))

    @classmethod
    async def connect(cls, port: int) -> KafkaRawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, request, version: int | None = None) -> None:
        if version is None:
            version = LATEST[API_KEYS[type(request)]]
        _, pieces = self.conn.send_request(request, version)
        await self.send_pieces(pieces)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, request, version: int | None = None):
        await self.send(request, version)
        return await self.receive()


def kafka_batch(values: list[bytes], *, key: bytes | None = None,
                headers: tuple = (), **fields: int) -> bytearray:
    """A record batch v2 as a Kafka producer sends it."""
    now = time.time_ns() // 1_000_000
    return build_batch([(key, v, list(headers), now) for v in values], **fields)


def produce_request(topic: str, batch: bytes | bytearray, *, partition: int = 0,
                    acks: int = 1, **fields) -> k.ProduceRequest:
    R = k.ProduceRequest
    return R(acks=acks, timeout_ms=10_000, topic_data=[R.TopicProduceData(
        name=topic, partition_data=[R.PartitionProduceData(index=partition, records=batch)])],
        **fields)


def fetch_request(topic: str, offset: int, *, partition: int = 0, max_wait_ms: int = 0,
                  max_bytes: int = 1 << 20, **fields) -> k.FetchRequest:
    R = k.FetchRequest
    return R(max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes, topics=[R.FetchTopic(
        topic=topic, partitions=[R.FetchPartition(partition=partition, fetch_offset=offset,
                                                  partition_max_bytes=max_bytes)])], **fields)


async def create_kafka_topic(client: KafkaRawClient, name: str, partitions: int = 1,
                             **configs: str) -> None:
    R = k.CreateTopicsRequest
    response = await client.request(R(topics=[R.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=1,
        configs=[R.CreatableTopicConfig(name=n, value=v) for n, v in configs.items()])]))
    assert response.topics[0].error_code == 0, response
