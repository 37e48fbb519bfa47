"""The broker's HTTP port: its settings, health endpoints, HTTP's limits and errors, who may
ask, and that its connections share the broker's connection budget."""

from __future__ import annotations

import logging
import re
import socket
from functools import partial

import pytest
import trio
from sluice.broker import server
from sluice.broker.config import BrokerConfig
from sluice.broker.server import ListenError, serve
from sluice.broker.storage import LogManager, ValidatedBatches
from sluice.broker.web import http
from sluice.broker.web.starting import STARTUP_CONNECTIONS
from sluice.protocol import messages as m
from sluice.protocol.errors import InvalidConfigError

from tests.broker.conftest import RawClient
from tests.broker.http_helpers import HttpClient
from tests.torture.test_regressions import batch, flip_in_batch_before
from tests.web_process import WebBrokerProcess


@pytest.fixture
def broker_config(tmp_path) -> BrokerConfig:
    return BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "data", shutdown_grace_s=2.0)


@pytest.fixture
async def web(broker):
    async with await HttpClient.connect(http_port(broker)) as client:
        yield client


def http_port(handle) -> int:
    return int(handle.http.rsplit(":", 1)[1])


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "expected"), [
    ("http_port = 70000", "http_port: must be an integer in 0..65535, got 70000"),
    ('http_port = "9644"', "http_port: must be an integer in 0..65535, got '9644' (a string)"),
    ('http_host = ""', "http_host: must be a non-empty string, got ''"),
    ('http_read_only = "yes"', "http_read_only: must be true or false, got 'yes' (a string)"),
])
def test_http_settings_are_checked(tmp_path, setting, expected):
    path = tmp_path / "sluice.toml"
    path.write_text(setting + "\n")
    with pytest.raises(InvalidConfigError) as caught:
        BrokerConfig.load(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


def test_the_http_port_is_off_unless_set_and_binds_the_broker_s_host(tmp_path):
    assert BrokerConfig().http_port is None
    path = tmp_path / "sluice.toml"
    path.write_text('host = "127.0.0.2"\nhttp_port = 9644\nhttp_read_only = true\n')
    config = BrokerConfig.load(path, http_port=0)  # the flag wins
    assert (config.http_port, config.http_host, config.http_read_only) == (0, None, True)
    with pytest.raises(InvalidConfigError, match="^--http-port: must be an integer"):
        BrokerConfig.load(None, http_port=-1)


async def test_an_http_port_in_use_is_named_and_nothing_is_left_bound(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = BrokerConfig(port=0, http_port=port, data_dir=tmp_path / "d")
        with pytest.raises(ListenError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
            await serve(config)
        assert not (tmp_path / "d").exists()  # refused before the data directory was opened
    finally:
        taken.close()


# -- health ------------------------------------------------------------------------------------


async def test_health_says_live_and_ready(broker, web):
    live = await web.get("/health/live")
    assert live.status == 200 and live.json()["live"] is True
    for path in ("/health", "/health/ready"):
        reply = await web.get(path)
        report = reply.json()
        assert reply.status == 200, report
        assert report["status"] == "ok" and report["ready"] and report["offline_partitions"] == []
        assert report["broker_id"] == 0 and report["uptime_s"] >= 0


async def test_readiness_fails_once_the_broker_is_stopping(broker, web):
    broker.broker.begin_shutdown()
    ready = await web.get("/health/ready")
    assert ready.status == 503 and ready.json()["status"] == "stopping"
    assert (await web.get("/health/live")).status == 200


async def test_offline_partitions_degrade_health_but_not_readiness(tmp_path, nursery):
    data = tmp_path / "data"
    manager = LogManager(data).open()
    manager.create_topic("a", 1, {"segment_bytes": 2_000, "index_interval_bytes": 150})
    manager.create_topic("b", 1)
    log = manager.get_log("a", 0)
    for _ in range(20):
        log.append(ValidatedBatches.parse(batch(log.log_end_offset)))
    manager.close()
    (data / ".clean-shutdown").unlink()  # a crash after the checkpoint
    flip_in_batch_before(data / "a-0", 59)  # corrupt below the flushed point: refused
    handle = await nursery.start(partial(serve, BrokerConfig(port=0, http_port=0, data_dir=data)))
    try:
        async with await HttpClient.connect(http_port(handle)) as web:
            reply = await web.get("/health")
        report = reply.json()
        assert reply.status == 200 and report["status"] == "degraded" and report["ready"]
        [offline] = report["offline_partitions"]
        assert (offline["topic"], offline["partition"]) == ("a", 0)
        assert "--repair-truncate a-0" in offline["reason"]
    finally:
        handle.shutdown()


async def test_health_answers_as_starting_while_the_data_directory_opens(
        tmp_path, nursery, monkeypatch, caplog):
    """A long recovery must not look like a dead process to a liveness probe: the HTTP port
    answers from the start -- live, not ready, nothing else -- and its connections of that
    time are closed once the broker is open."""
    caplog.set_level(logging.INFO, logger="sluice.server")
    real_open_broker = server.open_broker
    seen: dict = {}

    async def while_starting() -> None:
        [line] = [r.getMessage() for r in caplog.records if "answers meanwhile" in r.getMessage()]
        port = int(re.search(r":(\d+)/health/live", line)[1])
        seen["early"] = early = await HttpClient.connect(port)
        live = await early.get("/health/live")
        seen["live"] = (live.status, live.json())
        for path in ("/health", "/health/ready"):
            ready = await early.get(path)
            seen[path] = (ready.status, ready.json()["status"], ready.json()["ready"])
        metrics = await early.get("/metrics")
        seen["metrics"] = (metrics.status, metrics.headers.get("retry-after"), metrics.json())
        seen["rebound"] = (await early.get("/health", headers={"Host": "evil.example"})).status
        others = [await HttpClient.connect(port) for _ in range(STARTUP_CONNECTIONS - 1)]
        async with await HttpClient.connect(port) as one_too_many:
            seen["one too many"] = (await one_too_many.get("/health/live")).status
        for other in others:
            await other.stream.aclose()

    def open_broker_slowly(config):  # in the worker thread: the event loop is free
        trio.from_thread.run(while_starting)
        return real_open_broker(config)

    monkeypatch.setattr(server, "open_broker", open_broker_slowly)
    config = BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "data")
    handle = await nursery.start(partial(serve, config))
    try:
        assert seen["live"][0] == 200
        assert seen["live"][1]["status"] == "starting" and seen["live"][1]["live"] is True
        assert seen["/health"] == seen["/health/ready"] == (503, "starting", False)
        assert seen["metrics"] == (
            503, "1", {"error": "the broker is starting: it is opening (recovering) its data "
                                "directory"})
        assert seen["rebound"] == 403  # the loopback guard holds from the start
        assert seen["one too many"] == 503  # refused: the descriptor budget is not known yet
        async with seen["early"] as early:
            with trio.fail_after(5):
                assert await early.stream.receive_some() == b""  # closed when the broker opened
        async with await HttpClient.connect(http_port(handle)) as web:
            ready = await web.get("/health/ready")
            assert ready.status == 200 and ready.json()["status"] == "ok"
            assert (await web.get("/metrics")).status == 200
    finally:
        handle.shutdown()


async def test_a_failure_to_open_the_data_directory_is_raised_as_is_with_the_http_port_on(
        tmp_path):
    """The HTTP port answering during startup must not change what a failed start raises."""
    (tmp_path / "file").write_text("not a directory")
    failures = []
    for http_port_setting in (None, 0):
        config = BrokerConfig(port=0, http_port=http_port_setting, data_dir=tmp_path / "file")
        with pytest.raises(Exception) as caught:
            await serve(config)
        failures.append((type(caught.value), str(caught.value)))
    assert failures[0] == failures[1]
    assert not issubclass(failures[1][0], BaseExceptionGroup)


# -- HTTP ----------------------------------------------------------------------------------------


async def test_unknown_paths_and_methods(broker, web):
    missing = await web.get("/nothing/here")
    assert missing.status == 404 and missing.json() == {"error": "nothing at /nothing/here"}
    wrong = await web.request("DELETE", "/health")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET"


async def test_requests_in_turn_on_one_connection_with_safe_headers(broker, web):
    for _ in range(3):
        reply = await web.get("/health/live")
        assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"


async def test_broken_http_is_answered_400_and_closed(broker):
    assert (await exchange(broker, b"THIS IS NOT HTTP\r\n\r\n")).startswith(b"HTTP/1.1 400 ")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(broker):
    head = (f"POST /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {http.MAX_BODY_BYTES + 1}\r\n\r\n")
    assert (await exchange(broker, head.encode())).startswith(b"HTTP/1.1 413 ")


async def exchange(broker, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the broker answers until it closes."""
    async with await trio.open_tcp_stream("127.0.0.1", http_port(broker)) as stream:
        await stream.send_all(data)
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                answer += chunk
    return answer


async def test_a_request_that_stops_halfway_times_out(broker, monkeypatch):
    monkeypatch.setattr(http, "REQUEST_TIMEOUT_S", 0.2)
    answer = await exchange(broker, b"POST /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("host", ["evil.example:9644", "evil.example", "10.1.2.3:80", ""])
async def test_a_loopback_port_answers_only_requests_for_a_loopback_host(broker, host):
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 still says its own name."""
    async with await HttpClient.connect(http_port(broker), host=host) as web:
        reply = await web.get("/health")
    assert reply.status == 403 and "loopback" in reply.json()["error"]


@pytest.mark.parametrize("host", ["localhost:1", "127.0.0.1", "[::1]:9644", "127.8.9.10:5"])
async def test_loopback_names_are_welcome(broker, host):
    async with await HttpClient.connect(http_port(broker), host=host) as web:
        assert (await web.get("/health")).status == 200


async def test_http_connections_count_in_the_connection_budget(tmp_path, nursery):
    config = BrokerConfig(port=0, http_port=0, data_dir=tmp_path / "d", max_connections=1)
    handle = await nursery.start(partial(serve, config))
    try:
        async with await RawClient.connect(handle.port) as raw:
            await raw.request(m.MetadataRequest(topics=[]))  # answered: admitted
            assert handle.open_connections == 1
            async with await trio.open_tcp_stream("127.0.0.1", http_port(handle)) as stream:
                answer = b""
                with trio.fail_after(10):
                    while chunk := await stream.receive_some(4096):
                        answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"max_connections" in answer
    finally:
        handle.shutdown()


def test_the_broker_process_announces_its_http_port_and_serves_health(tmp_path):
    broker = WebBrokerProcess(tmp_path / "data", tmp_path / "broker.log")
    broker.start()
    try:
        assert broker.get_json("/health")["status"] == "ok"
        assert "console and metrics on http://127.0.0.1:" in broker.log_text()
    finally:
        assert broker.stop() == 0
