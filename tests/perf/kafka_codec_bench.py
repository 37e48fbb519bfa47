"""Kafka wire codec micro-benchmark: Sluice's compiled codec beside kafka-python's, one run.

    python tests/perf/kafka_codec_bench.py            # full (best of 7 rounds)
    python tests/perf/kafka_codec_bench.py --quick    # a smoke run
    python tests/perf/kafka_codec_bench.py --json     # also print the figures as JSON

Each line is one typical small message, decoded (requests, as the broker does) or encoded
(responses, as the broker does), in microseconds per message, best of the rounds. Beside it:
kafka-python 3's codec (the classes generated from Kafka's JSON, its fast path) doing the
same, and for produce and fetch Sluice's own msgpack protocol, the path the Kafka listener
sits beside. Sluice's decode figures include the request header and the event; kafka-python's
cover the body only. Records are never decoded: a Produce request costs per partition, not per record
(the 16 KiB line shows it), and a Fetch response carries FileSlices it never reads.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import warnings

from sluice.protocol import messages as sluice_messages
from sluice.protocol.framing import FrameDecoder
from sluice.protocol.kafka import (
    KafkaServerConnection,
    RequestHeader,
    decode_request,
    encode_request,
    encode_response,
)
from sluice.protocol.kafka.messages import (
    FetchRequest,
    FetchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    MetadataRequest,
    ProduceRequest,
    ProduceResponse,
)
from sluice.protocol.slices import FileSlice

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.consumer import FetchRequest as KpFetchRequest
    from kafka.protocol.consumer import FetchResponse as KpFetchResponse
    from kafka.protocol.consumer import HeartbeatRequest as KpHeartbeatRequest
    from kafka.protocol.metadata import MetadataRequest as KpMetadataRequest
    from kafka.protocol.producer import ProduceRequest as KpProduceRequest
    from kafka.protocol.producer import ProduceResponse as KpProduceResponse


def per_call(fn, n: int, rounds: int) -> float:
    """Best time of ``n`` calls over ``rounds``, in microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def frame_of(header: RequestHeader, message) -> memoryview:
    pieces = encode_request(header, message)
    return memoryview(bytearray(b"".join(bytes(p) for p in pieces)[4:]))


def produce_request(partitions: int, batch: bytes) -> ProduceRequest:
    return ProduceRequest(acks=-1, timeout_ms=30_000, topic_data=[
        ProduceRequest.TopicProduceData(name="events", partition_data=[
            ProduceRequest.PartitionProduceData(index=i, records=batch)
            for i in range(partitions)])])


def fetch_response(partitions: int, segment) -> FetchResponse:
    return FetchResponse(session_id=0, responses=[FetchResponse.FetchableTopicResponse(
        topic="events", partitions=[
            FetchResponse.PartitionData(partition_index=i, high_watermark=1000,
                                        last_stable_offset=1000, log_start_offset=0,
                                        records=FileSlice(segment, 4096 * i, 4096))
            for i in range(partitions)])])


def kp_produce(partitions: int, batch: bytes):
    topic = KpProduceRequest.TopicProduceData
    return KpProduceRequest[8](transactional_id=None, acks=-1, timeout_ms=30_000, topic_data=[
        topic(name="events", partition_data=[
            topic.PartitionProduceData(index=i, records=batch) for i in range(partitions)])])


def kafka_lines(segment, n: int, rounds: int) -> list[dict]:
    small, large = b"b" * 1024, b"b" * 16384
    h = {key: RequestHeader(api_key=key, api_version=v, correlation_id=1, client_id="rdkafka")
         for key, v in ((0, 8), (1, 11), (3, 8), (12, 3))}
    metadata = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="events")],
                               allow_auto_topic_creation=False)
    fetch = FetchRequest(max_wait_ms=500, min_bytes=1, max_bytes=52428800, session_epoch=-1,
                         topics=[FetchRequest.FetchTopic(topic="events", partitions=[
                             FetchRequest.FetchPartition(partition=0, fetch_offset=1234,
                                                         partition_max_bytes=1048576)])])
    heartbeat = HeartbeatRequest(group_id="g", generation_id=3, member_id="rdkafka-1234")
    produce_response = ProduceResponse(responses=[ProduceResponse.TopicProduceResponse(
        name="events", partition_responses=[ProduceResponse.PartitionProduceResponse(
            index=0, base_offset=1000, log_start_offset=0)])])
    frames = {
        "Metadata v8 request, 1 topic": (frame_of(h[3], metadata), KpMetadataRequest[8]),
        "Produce v8 request, 1 partition, 1 KiB": (
            frame_of(h[0], produce_request(1, small)), KpProduceRequest[8]),
        "Produce v8 request, 1 partition, 16 KiB": (
            frame_of(h[0], produce_request(1, large)), KpProduceRequest[8]),
        "Produce v8 request, 10 partitions, 1 KiB each": (
            frame_of(h[0], produce_request(10, small)), KpProduceRequest[8]),
        "Fetch v11 request, 1 partition": (frame_of(h[1], fetch), KpFetchRequest[11]),
        "Heartbeat v3 request": (frame_of(h[12], heartbeat), KpHeartbeatRequest[3]),
    }
    lines = []
    for name, (frame, theirs) in frames.items():
        body = bytes(frame)[len(bytes(frame)) - _body_length(frame):]
        lines.append({
            "operation": f"decode {name}",
            "sluice": per_call(lambda f=frame: decode_request(f), n, rounds),
            "kafka_python": per_call(lambda b=body, t=theirs: t.decode(b), n, rounds),
        })
    kp_fetch = KpFetchResponse[11](throttle_time_ms=0, error_code=0, session_id=0, responses=[
        KpFetchResponse.FetchableTopicResponse(topic="events", partitions=[
            KpFetchResponse.FetchableTopicResponse.PartitionData(
                partition_index=i, error_code=0, high_watermark=1000, last_stable_offset=1000,
                log_start_offset=0, aborted_transactions=None, preferred_read_replica=-1,
                records=b"r" * 4096) for i in range(1)])])
    kp_produce_response = KpProduceResponse[8](throttle_time_ms=0, responses=[
        KpProduceResponse.TopicProduceResponse(name="events", partition_responses=[
            KpProduceResponse.TopicProduceResponse.PartitionProduceResponse(
                index=0, error_code=0, base_offset=1000, log_append_time_ms=-1,
                log_start_offset=0, record_errors=[], error_message=None)])])
    fetch_1, fetch_10 = fetch_response(1, segment), fetch_response(10, segment)
    responses = {
        "encode Fetch v11 response, 1 partition (FileSlice)": (
            lambda: encode_response(h[1], fetch_1), kp_fetch.encode),
        "encode Fetch v11 response, 10 partitions (FileSlices)": (
            lambda: encode_response(h[1], fetch_10), None),
        "build Fetch v11 response, 1 partition (checked dataclasses)": (
            lambda: fetch_response(1, segment), None),
        "encode Produce v8 response, 1 partition": (
            lambda: encode_response(h[0], produce_response), kp_produce_response.encode),
        "encode Heartbeat v3 response": (
            lambda: encode_response(h[12], HeartbeatResponse()), None),
    }
    for name, (ours, theirs) in responses.items():
        lines.append({
            "operation": name,
            "sluice": per_call(ours, n, rounds),
            "kafka_python": per_call(theirs, n, rounds) if theirs else None,
        })
    return lines


def _body_length(frame: memoryview) -> int:
    """Bytes after the request header v1 (kafka-python decodes bodies, not headers)."""
    (client_id_length,) = struct.unpack_from(">h", frame, 8)
    return len(frame) - 10 - max(client_id_length, 0)


def connection_line(n: int, rounds: int) -> dict:
    """A whole request through ``KafkaServerConnection``: bytes in, event out."""
    header = RequestHeader(api_key=0, api_version=8, correlation_id=1, client_id="rdkafka")
    raw = b"".join(bytes(p) for p in encode_request(header, produce_request(1, b"b" * 1024)))
    server = KafkaServerConnection()

    def one():
        server.receive_data(raw)
        server.next_event()
        server._owed.clear()  # the benchmark answers nothing

    return {"operation": "bytes -> event, Produce v8 1 KiB (KafkaServerConnection)",
            "sluice": per_call(one, n, rounds), "kafka_python": None}


def sluice_protocol_lines(n: int, rounds: int) -> list[dict]:
    """Sluice's own msgpack protocol on the same small produce and fetch, for scale."""
    produce = sluice_messages.ProduceRequest(acks=-1, timeout_ms=30_000, partitions=[
        sluice_messages.ProducePartition(topic="events", partition=0, records=b"b" * 1024)])
    raw = b"".join(bytes(p) for p in sluice_messages.encode_request(1, produce))
    decoder = FrameDecoder()
    decoder.receive_data(raw)
    frame = decoder.next_frame()
    return [{
        "operation": "Sluice protocol: decode produce request, 1 partition, 1 KiB",
        "sluice": per_call(lambda: sluice_messages.decode_request(frame), n, rounds),
        "kafka_python": None,
    }, {
        "operation": "Sluice protocol: encode fetch response, 1 partition",
        "sluice": per_call(lambda: sluice_messages.encode_response(
            1, sluice_messages.FetchResponse(partitions=[sluice_messages.FetchPartitionData(
                topic="events", partition=0, high_watermark=1000, log_start_offset=0,
                records=b"r" * 4096)])), n, rounds),
        "kafka_python": None,
    }]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print JSON figures")
    args = parser.parse_args()
    n, rounds = (200, 2) if args.quick else (5000, 7)
    with tempfile.TemporaryFile() as segment:
        segment.write(os.urandom(4096 * 10))
        lines = kafka_lines(segment, n, rounds)
    lines.append(connection_line(n, rounds))
    lines += sluice_protocol_lines(n, rounds)
    print("| operation | Sluice (us) | kafka-python (us) |")
    print("|---|---:|---:|")
    for line in lines:
        theirs = f"{line['kafka_python']:.1f}" if line["kafka_python"] is not None else "-"
        print(f"| {line['operation']} | {line['sluice']:.1f} | {theirs} |")
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "n": n, "rounds": rounds,
                          "lines": lines}, indent=1))


if __name__ == "__main__":
    main()
