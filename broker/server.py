"""``serve``: open the logs, listen, serve connections, and shut down in order.

The composition root: it builds the layers -- storage (``LogManager``), the domain
(``Broker``), the protocol adapters (``SluiceAdapter``; ``KafkaAdapter`` on the Kafka port
unless ``kafka = false``), the HTTP port if configured (``web.WebAdapter``; until the data
directory is open, ``web.StartingAdapter`` answers its health checks) and the I/O
(listeners handing each accepted connection to its listener's adapter as a ``Channel``) -- and
nothing below it knows about it.

Shutdown order (SIGINT/SIGTERM, or the caller cancelling ``shutdown``):
1. stop accepting connections;
2. stop long polls (they answer with what they have) and let in-flight requests finish, for
   at most ``shutdown_grace_s``, then cancel connections;
3. shielded: stop background tasks, checkpoint, flush and close every log, and write the
   clean-shutdown marker (so the next start re-validates nothing).

An ``acks=all`` produce is answered only after its fsync, so a request cut off in step 2 is
either answered after a durable write or not answered at all -- never answered and then lost.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field

import outcome
import trio
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.kafka.connection import KafkaAdapter
from sluice.broker.adapters.sluice.connection import SluiceAdapter
from sluice.broker.config import BrokerConfig
from sluice.broker.descriptors import DescriptorBudget
from sluice.broker.domain.broker import Broker
from sluice.broker.io.channel import Channel, ChannelStats
from sluice.broker.io.listener import REFUSALS_AT_ONCE, accept_loop
from sluice.broker.io.sockets import SocketChannel
from sluice.broker.io.streams import StreamChannel
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import HandleQuota
from sluice.broker.storage.manager import LogManager
from sluice.broker.web.app import WebAdapter
from sluice.broker.web.starting import StartingAdapter, StartupAdmission
from sluice.broker.web.view import BrokerView
from sluice.protocol.errors import SluiceError, StorageError

log = logging.getLogger("sluice.server")


@dataclass
class ServerHandle:
    """Given to ``task_status.started``: where the broker listens, and how to stop it."""

    host: str
    port: int
    broker: Broker
    descriptors: DescriptorBudget
    _shutdown: trio.Event
    kafka_port: int | None = None  # the Kafka listener's port, unless it is off
    http: str | None = None  # the HTTP port's HOST:PORT, if it has one
    # What each listener's channels sent and read: "sluice", "kafka" (if on), "http" (if on).
    channels: dict[str, ChannelStats] = field(default_factory=dict)

    @property
    def open_connections(self) -> int:
        return self.descriptors.connections

    def shutdown(self) -> None:
        """Begin an orderly shutdown (same as SIGTERM)."""
        self._shutdown.set()


def open_broker(config: BrokerConfig) -> tuple[Broker, DescriptorBudget]:
    """Open (and recover) the data directory and build the broker's domain on it; and the
    descriptor budget its partitions were admitted against (connections are admitted too)."""
    defaults = TopicConfig.from_mapping(config.topic_defaults)
    if not config.in_memory:
        log.info("opening data directory %s", config.data_dir.resolve())
    descriptors = DescriptorBudget.from_rlimit(config.max_connections)
    manager = LogManager(
        config.data_dir, defaults, memory=config.in_memory, repair=config.repair_truncate,
        descriptors=descriptors, quota=HandleQuota(descriptors.sealed),
    )
    try:
        manager.open()
    except OSError as exc:
        raise StorageError(f"cannot open data directory {config.data_dir}: {exc}") from None
    if not config.in_memory:
        if manager.was_clean:
            log.info("clean shutdown marker found: no recovery needed")
        elif manager.topics():
            log.warning("no clean shutdown marker: recovered every partition from its recovery point")
    broker = Broker(config, manager)
    log.info("open files: %s", descriptors.summary())
    return broker, descriptors


def channel_factory(config: BrokerConfig, stats: ChannelStats):
    """How accepted connections become channels: the raw-socket fast path, or -- with
    ``use_sendfile = false`` -- the stream path, which copies file slices. All of them count
    in ``stats``."""
    timeout = config.send_timeout_s
    if config.use_sendfile:
        def make(stream: trio.SocketStream, peer: str) -> Channel:
            return SocketChannel(stream, send_timeout_s=timeout, peer=peer, stats=stats)
    else:
        def make(stream: trio.SocketStream, peer: str) -> Channel:
            return StreamChannel(stream, send_timeout_s=timeout, peer=peer, stats=stats)
    return make


async def serve(
    config: BrokerConfig,
    *,
    handle_signals: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a broker until shutdown. ``task_status.started`` receives a ``ServerHandle``."""
    # Bind first: a port in use must not cost a recovery of the data directory.
    listeners = await _listen(config.host, config.port)
    kafka_listeners: list = []
    http_listeners: list = []
    http_host = config.http_host or config.host
    try:
        if config.kafka_listen_port is not None:
            kafka_listeners = await _listen(
                config.host, config.kafka_listen_port, " for Kafka clients", KAFKA_HINT)
        if config.http_port is not None:
            http_listeners = await _listen(http_host, config.http_port, " for HTTP")
        http_stats = ChannelStats()
        broker, descriptors = await _open_answering_health(config, http_listeners, http_stats)
    except BaseException:
        _close(listeners + kafka_listeners + http_listeners)
        raise
    port = _port_of(listeners)
    shutdown = trio.Event()
    handle = ServerHandle(config.host, port, broker, descriptors, shutdown)
    inflight = InFlight()
    serving = [("sluice", listeners, SluiceAdapter(broker, config, inflight, (config.host, port)))]
    addresses = {"sluice": f"{config.host}:{port}"}
    if kafka_listeners:
        handle.kafka_port = _port_of(kafka_listeners)
        addresses["kafka"] = f"{config.host}:{handle.kafka_port}"
        serving.append(("kafka", kafka_listeners, KafkaAdapter(
            broker, config, inflight, (config.host, handle.kafka_port))))
    if http_listeners:
        handle.http = addresses["http"] = f"{http_host}:{_port_of(http_listeners)}"
        serving.append(("http", http_listeners, WebAdapter(BrokerView(
            broker, config, lambda: descriptors.connections, handle.channels, addresses,
            time.time()))))
    handle.channels.update((name, http_stats if name == "http" else ChannelStats())
                           for name, _, _ in serving)
    listeners = [listener for _, some, _ in serving for listener in some]
    refusals = trio.CapacityLimiter(REFUSALS_AT_ONCE)
    try:
        async with trio.open_nursery() as outer:
            await outer.start(broker.run)
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept_all() -> None:
                    with accept_scope:
                        async with trio.open_nursery() as acceptors:
                            for name, some, adapter in serving:
                                make_channel = channel_factory(config, handle.channels[name])
                                for listener in some:
                                    acceptors.start_soon(accept_loop, listener, descriptors,
                                                         make_channel, adapter, connections,
                                                         refusals)

                connections.start_soon(accept_all)
                if handle_signals:  # watching before the broker says it is ready
                    await connections.start(_watch_signals, shutdown)
                log.info("broker %d ready on %s:%d%s; %s", config.broker_id, config.host, port,
                         f" (Kafka clients: {handle.kafka_port})" if handle.kafka_port else "",
                         _storage_description(config))
                if handle.http is not None:
                    log.info("console and metrics on http://%s/", handle.http)
                task_status.started(handle)
                await shutdown.wait()
                log.info("shutting down: no new connections; draining for up to %.1f s",
                         config.shutdown_grace_s)
                accept_scope.cancel()
                _close(listeners)
                broker.begin_shutdown()
                with trio.move_on_after(config.shutdown_grace_s):
                    await inflight.wait_drained()
                connections.cancel_scope.cancel()
            outer.cancel_scope.cancel()
    finally:
        _close(listeners)  # if cancelled before the shutdown above
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(broker.close)
            log.info("logs flushed and closed cleanly")


async def _open_answering_health(
    config: BrokerConfig, http_listeners: list, stats: ChannelStats
) -> tuple[Broker, DescriptorBudget]:
    """``open_broker`` in a worker thread; meanwhile the HTTP port, if any, answers health
    checks as starting (``web.starting``), so a long recovery does not look like a dead
    process. Its connections are closed once the broker is open."""
    if not http_listeners:
        return await trio.to_thread.run_sync(open_broker, config)
    log.info("opening the data directory; http://%s:%d/health/live answers meanwhile",
             config.http_host or config.host, _port_of(http_listeners))
    make_channel = channel_factory(config, stats)
    adapter, admission = StartingAdapter(config), StartupAdmission()
    refusals = trio.CapacityLimiter(REFUSALS_AT_ONCE)
    async with trio.open_nursery() as nursery:
        for listener in http_listeners:
            nursery.start_soon(accept_loop, listener, admission, make_channel, adapter, nursery,
                               refusals)
        # Captured, not raised in the nursery: its error must reach the caller unwrapped.
        opened = await outcome.acapture(trio.to_thread.run_sync, open_broker, config)
        nursery.cancel_scope.cancel()
    return opened.unwrap()


class ListenError(SluiceError):
    """The broker cannot listen on its address (in use, not local, not permitted...)."""


KAFKA_HINT = " (another port: --kafka-port or kafka_port; none: --no-kafka or kafka = false)"


async def _listen(host: str, port: int, use: str = "", hint: str = "") -> list:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen{use} on {host}:{port}: {reason}{hint}") from None


def _close(listeners: list) -> None:
    """Close listening sockets at once (no checkpoint, so a cancellation cannot leave one
    open); closing one already closed does nothing."""
    for listener in listeners:
        listener.socket.close()


def _port_of(listeners: list) -> int:
    return listeners[0].socket.getsockname()[1]


def _storage_description(config: BrokerConfig) -> str:
    if config.in_memory:
        return "in memory: nothing is kept after it stops"
    return f"data in {config.data_dir.resolve()}"


async def _watch_signals(shutdown: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            shutdown.set()
            return
