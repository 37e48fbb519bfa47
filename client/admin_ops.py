"""Admin requests and their results as plain values, sans-IO (trio and blocking Admin share it)."""

from __future__ import annotations

from typing import NamedTuple

from protocol import messages as m
from protocol.errors import error_for_code

OFFSET_SPECS = {"earliest": -2, "latest": -1}


class PartitionInfo(NamedTuple):
    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int
    segments: int


class TopicInfo(NamedTuple):
    name: str
    configs: dict[str, int]
    partitions: list[PartitionInfo]


def create_topics(specs) -> m.CreateTopicsRequest:
    return m.CreateTopicsRequest(topics=[
        m.TopicSpec(name=name, partitions=partitions, configs=dict(configs or {}))
        for name, partitions, configs in specs
    ])


def delete_topics(names) -> m.DeleteTopicsRequest:
    return m.DeleteTopicsRequest(topics=list(names))


def metadata(topics=None) -> m.MetadataRequest:
    return m.MetadataRequest(topics=None if topics is None else list(topics))


def describe_topics(names=None) -> m.DescribeTopicsRequest:
    return m.DescribeTopicsRequest(topics=None if names is None else list(names))


def list_offsets(specs) -> m.ListOffsetsRequest:
    return m.ListOffsetsRequest(partitions=[
        m.ListOffsetsPartition(topic=t, partition=p, timestamp=OFFSET_SPECS.get(ts, ts))
        for (t, p), ts in specs.items()
    ])


def check_topic_results(response) -> None:
    for result in response.topics:
        if result.error:
            raise error_for_code(result.error, result.message or f"topic {result.name!r}")


def topic_names(response: m.MetadataResponse) -> list[str]:
    return sorted(t.name for t in response.topics if not t.error)


def topic_infos(response: m.DescribeTopicsResponse) -> list[TopicInfo]:
    out = []
    for t in response.topics:
        if t.error:
            raise error_for_code(t.error, t.message or f"unknown topic {t.name!r}")
        parts = [
            PartitionInfo(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes,
                          p.segments)
            for p in t.partitions
        ]
        out.append(TopicInfo(t.name, dict(t.configs), parts))
    return out


def offsets(response: m.ListOffsetsResponse) -> dict:
    out = {}
    for r in response.partitions:
        if r.error:
            raise error_for_code(r.error, f"{r.topic}[{r.partition}]: offset lookup failed")
        out[(r.topic, r.partition)] = None if r.offset < 0 else (r.offset, r.timestamp)
    return out
