"""The console's JSON API: reading the broker, topics and groups; creating a topic and
producing a record (checked input, clear errors, the safety rules for writes); the live tail
over server-sent events; the console's files."""

from __future__ import annotations

import time
from functools import partial

import pytest
import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.server import serve
from sluice.broker.web import tail
from sluice.protocol import compression
from sluice.protocol import messages as m
from sluice.protocol.batch import assemble, decode_records, iter_batches

from tests.broker.conftest import create_topic, fetch, make_batch, produce
from tests.broker.http_helpers import HttpClient


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)


def http_port(handle) -> int:
    return int(handle.http.rsplit(":", 1)[1])


@pytest.fixture
async def web(broker):
    async with await HttpClient.connect(http_port(broker)) as client:
        yield client


# -- reading -------------------------------------------------------------------------------------


async def test_the_broker_at_a_glance(broker, web):
    info = (await web.get("/api/broker")).json()
    assert info["broker_id"] == 0 and info["health"]["status"] == "ok"
    assert info["listeners"] == {"sluice": f"127.0.0.1:{broker.port}", "http": broker.http,
                                 "kafka": f"127.0.0.1:{broker.kafka_port}"}
    assert info["connections"] == 1 and info["topics"] == 0 and info["read_only"] is False


async def test_topics_with_their_partitions(broker, web, client):
    await create_topic(client, "orders", 2, retention_ms=3_600_000)
    batch = make_batch([b"a", b"b", b"c"])
    await produce(client, "orders", batch, partition=1)
    await fetch(client, "orders", 0, partition=1)
    [topic] = (await web.get("/api/topics")).json()["topics"]
    assert topic["name"] == "orders" and topic["configs"]["retention_ms"] == 3_600_000
    first, second = topic["partitions"]
    assert first == {"partition": 0, "log_start_offset": 0, "log_end_offset": 0, "size_bytes": 0,
                     "segments": 1, "records_in": 0, "bytes_in": 0, "records_out": 0,
                     "bytes_out": 0}
    assert (second["log_end_offset"], second["records_in"], second["bytes_in"]) == (3, 3, len(batch))
    assert (second["records_out"], second["bytes_out"], second["size_bytes"]) == (3, len(batch), len(batch))


async def test_groups_with_members_offsets_and_lag(broker, web, client):
    await create_topic(client, "t", 2)
    for index in (0, 1):
        await produce(client, "t", make_batch([b"x"] * 10), partition=index)
    committed = await client.request(m.CommitOffsetsRequest(
        group_id="g", member_id="", member_epoch=-1,
        offsets=[m.OffsetCommit(topic="t", partition=0, offset=4),
                 m.OffsetCommit(topic="t", partition=1, offset=10)]))
    assert committed.error == 0
    [group] = (await web.get("/api/groups")).json()["groups"]
    assert (group["group_id"], group["members"], group["total_lag"]) == ("g", [], 6)
    assert group["offsets"] == [
        {"topic": "t", "partition": 0, "committed": 4, "log_end_offset": 10, "lag": 6},
        {"topic": "t", "partition": 1, "committed": 10, "log_end_offset": 10, "lag": 0}]


async def test_the_console_s_files(broker, web):
    page = await web.get("/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script src="/static/console.js"' in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        reply = await web.get(f"/static/{name}")
        assert reply.status == 200 and reply.headers["content-type"].startswith(kind)
    for missing in ("/static/nope.js", "/static/..%2Fapp.py", "/static/"):
        assert (await web.get(missing)).status == 404


# -- creating a topic ----------------------------------------------------------------------------


async def test_create_a_topic(broker, web):
    created = await web.post("/api/topics", {"name": "made", "partitions": 3,
                                             "configs": {"retention_ms": 60_000}})
    assert created.status == 201, created.body
    answer = created.json()
    assert (answer["name"], answer["partitions"]) == ("made", 3) and len(answer["topic_id"]) == 32
    info = broker.broker.topics.topic("made")
    assert info.config.partitions == 3 and info.config.retention_ms == 60_000
    again = await web.post("/api/topics", {"name": "made"})
    assert again.status == 409 and "made" in again.json()["error"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"partitions": 1}, 400, "missing field(s): name"),
    ({"name": ""}, 400, "name must be a non-empty string"),
    ({"name": 5}, 400, "name must be a non-empty string"),
    ({"name": "a/b"}, 400, "a/b"),
    ({"name": "ok", "partitions": "3"}, 400, "partitions must be an integer"),
    ({"name": "ok", "partitions": 0}, 400, "partitions"),
    ({"name": "ok", "configs": {"retention_ms": "1h"}}, 400, "configs must be an object"),
    ({"name": "ok", "configs": {"bogus": 1}}, 400, "bogus"),
    ({"name": "ok", "replicas": 3}, 400, "unknown field(s): replicas"),
    (["ok"], 400, "the body must be a JSON object"),
])
async def test_create_refuses_bad_input_with_a_clear_error(broker, web, body, status, says):
    reply = await web.post("/api/topics", body)
    assert reply.status == status and says in reply.json()["error"], reply.body
    assert broker.broker.topics.names() == []


async def test_a_body_that_is_not_json(broker, web):
    reply = await web.request("POST", "/api/topics", body=b"{name: x",
                              headers={"Content-Type": "application/json"})
    assert reply.status == 400 and "not valid JSON" in reply.json()["error"]


# -- the rules for writes ---------------------------------------------------------------------------


async def test_writes_need_a_json_content_type(broker, web):
    """An HTML form (urlencoded, multipart, text/plain) can't write: no cross-site forms."""
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; b=x"):
        reply = await web.request("POST", "/api/topics", body=b'{"name": "x"}',
                                  headers={"Content-Type": kind})
        assert reply.status == 415, kind
    assert broker.broker.topics.names() == []


async def test_writes_from_another_origin_are_refused(broker, web):
    reply = await web.post("/api/topics", {"name": "x"}, headers={"Origin": "http://evil.example"})
    assert reply.status == 403 and "cross-origin" in reply.json()["error"]
    own = await web.post("/api/topics", {"name": "x"}, headers={"Origin": f"http://{web.host}"})
    assert own.status == 201


async def test_a_read_only_port_refuses_writes_and_serves_reads(tmp_path, nursery):
    config = BrokerConfig(port=0, http_port=0, http_read_only=True, data_dir=tmp_path / "d")
    handle = await nursery.start(partial(serve, config))
    try:
        async with await HttpClient.connect(http_port(handle)) as web:
            refused = await web.post("/api/topics", {"name": "x"})
            assert refused.status == 403 and "read-only" in refused.json()["error"]
            assert (await web.get("/api/broker")).json()["read_only"] is True
            assert (await web.get("/metrics")).status == 200
    finally:
        handle.shutdown()


# -- producing ------------------------------------------------------------------------------------


async def test_produce_a_record(broker, web, client):
    await create_topic(client, "t", 2)
    first = await web.post("/api/topics/t/records", {
        "value": "héllo", "key": "k", "headers": [["source", "console"]], "partition": 1})
    assert first.status == 201 and first.json() == {"topic": "t", "partition": 1, "offset": 0}
    second = await web.post("/api/topics/t/records", {"value": None})
    assert second.json() == {"topic": "t", "partition": 0, "offset": 0}
    answer = (await fetch(client, "t", 0, partition=1)).partitions[0]
    [record] = [r for b in iter_batches(answer.records) for r in decode_records(b)]
    assert (record.key, record.value, record.headers) == (b"k", "héllo".encode(), [("source", b"console")])
    assert abs(record.timestamp - time.time() * 1000) < 60_000
    assert broker.broker.topics.partition("t", 1).committed_offset == 1  # acks=all: flushed


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/api/topics/none/records", {"value": "x"}, 404, "none"),
    ("/api/topics/t/records", {"value": "x", "partition": 7}, 404, "t[7]"),
    ("/api/topics/t/records", {"value": "x", "partition": -1}, 400, "partition must be an integer"),
    ("/api/topics/t/records", {"key": "k"}, 400, "missing field(s): value"),
    ("/api/topics/t/records", {"value": 5}, 400, "value must be a string or null"),
    ("/api/topics/t/records", {"value": "x", "headers": {"a": "b"}}, 400, "headers must be a list"),
    ("/api/topics/t/records", {"value": "x", "headers": [["a", 1]]}, 400, "headers must be a list"),
    ("/api/topics/t/records", {"value": "x" * 2000}, 400, "exceeds"),
])
async def test_produce_refuses_bad_input(tmp_path, nursery, path, body, status, says):
    config = BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "d")
    handle = await nursery.start(partial(serve, config))
    try:
        handle.broker.topics.create("t", 1, {"max_message_bytes": 1024})
        async with await HttpClient.connect(http_port(handle)) as web:
            reply = await web.post(path, body)
        assert reply.status == status and says in reply.json()["error"], reply.body
        assert handle.broker.topics.partition("t", 0).log_end_offset == 0
    finally:
        handle.shutdown()


# -- the live tail ---------------------------------------------------------------------------------


async def records_until(events, count: int) -> list[dict]:
    got = []
    with trio.fail_after(10):
        async for event in events:
            if event.event == "records":
                got += event.json()
                if len(got) >= count:
                    return got
    raise AssertionError(f"the stream ended after {got}")


async def test_the_tail_shows_records_as_they_arrive(broker, web, client):
    await create_topic(client, "t", 2)
    await produce(client, "t", make_batch([b"old"]))  # before the tail: not shown from the end
    async with await HttpClient.connect(http_port(broker)) as watcher:
        events = watcher.events("/api/topics/t/tail")
        hello = await anext(events)
        assert hello.event == "hello" and hello.json() == {"topic": "t", "positions": {"0": 1, "1": 0}}
        posted = await web.post("/api/topics/t/records", {
            "value": "new", "key": "k", "headers": [["h", "v"]], "partition": 1})
        assert posted.status == 201
        [record] = await records_until(events, 1)
        assert record["timestamp"] > 0
        del record["timestamp"]
        assert record == {"partition": 1, "offset": 0, "key": "k", "value": "new",
                          "value_bytes": 3, "headers": [["h", "v"]]}
        await produce(client, "t", make_batch([b"a", b"b"]))
        assert [(r["partition"], r["offset"], r["value"]) for r in await records_until(events, 2)] == [
            (0, 1, "a"), (0, 2, "b")]
        await events.aclose()
    # The tail's reads are not consumers' fetches.
    assert broker.broker.topics.partition("t", 0).stats.fetches == 0


async def test_the_tail_from_the_beginning_of_one_partition(broker, client):
    await create_topic(client, "t", 2)
    await produce(client, "t", make_batch([b"zero", b"one"]), partition=1)
    await produce(client, "t", make_batch([b"other"]), partition=0)
    async with await HttpClient.connect(http_port(broker)) as watcher:
        events = watcher.events("/api/topics/t/tail?partition=1&from=beginning")
        assert (await anext(events)).json()["positions"] == {"1": 0}
        assert [r["value"] for r in await records_until(events, 2)] == ["zero", "one"]
        await events.aclose()


async def test_a_tail_far_behind_skips_to_near_the_end(broker, client, monkeypatch):
    monkeypatch.setattr(tail, "MAX_BEHIND", 10)
    monkeypatch.setattr(tail, "SKIP_TO", 3)
    await create_topic(client, "t")
    await produce(client, "t", make_batch([b"%d" % i for i in range(50)]))
    async with await HttpClient.connect(http_port(broker)) as watcher:
        events = watcher.events("/api/topics/t/tail?from=beginning")
        await anext(events)
        skipped = await anext(events)
        assert skipped.event == "skipped" and skipped.json() == {"partition": 0, "from": 0, "to": 47}
        assert [r["offset"] for r in await records_until(events, 3)] == [47, 48, 49]
        await events.aclose()


async def test_the_tail_says_when_batches_cannot_be_decoded(broker, client):
    await create_topic(client, "t")
    now = int(time.time() * 1000)
    garbage = assemble(b"not gzip at all", record_count=1, base_timestamp=now, max_timestamp=now,
                       attributes=compression.GZIP)
    assert (await produce(client, "t", bytes(garbage))).partitions[0].error == 0
    await produce(client, "t", make_batch([b"fine"]))
    async with await HttpClient.connect(http_port(broker)) as watcher:
        events = watcher.events("/api/topics/t/tail?from=beginning")
        await anext(events)
        bad = await anext(events)
        assert bad.event == "undecodable" and bad.json() == {"partition": 0, "batches": 1}
        assert [r["value"] for r in await records_until(events, 1)] == ["fine"]
        await events.aclose()


async def test_the_tail_ends_when_its_topic_is_deleted_or_the_broker_stops(broker, client):
    await create_topic(client, "doomed")
    await create_topic(client, "kept")
    async with await HttpClient.connect(http_port(broker)) as first, \
            await HttpClient.connect(http_port(broker)) as second:
        doomed = first.events("/api/topics/doomed/tail")
        kept = second.events("/api/topics/kept/tail")
        await anext(doomed)
        await anext(kept)
        deleted = await client.request(m.DeleteTopicsRequest(topics=["doomed"]))
        assert deleted.topics[0].error == 0
        with trio.fail_after(10):
            end = await anext(doomed)
        assert end.event == "end" and "deleted" in end.json()["reason"]
        broker.broker.begin_shutdown()
        with trio.fail_after(10):
            end = await anext(kept)
        assert end.event == "end" and "stopping" in end.json()["reason"]
        for stream in (doomed, kept):
            with pytest.raises(StopAsyncIteration):  # and the response is over
                await anext(stream)


@pytest.mark.parametrize(("path", "status"), [
    ("/api/topics/none/tail", 404),
    ("/api/topics/__consumer_offsets/tail", 404),
    ("/api/topics/t/tail?partition=1", 400),
    ("/api/topics/t/tail?partition=x", 400),
    ("/api/topics/t/tail?from=yesterday", 400),
])
async def test_a_tail_of_what_is_not_there_is_refused_before_streaming(broker, web, client, path, status):
    await create_topic(client, "t")
    reply = await web.get(path)
    assert reply.status == status and reply.json()["error"]
