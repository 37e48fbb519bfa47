"""``serve``: open the logs, listen, serve connections, and shut down in order.

The composition root: it builds the layers -- storage (``LogManager``), the domain
(``Broker``), the protocol adapter (``SluiceAdapter``), the HTTP port if configured
(``web.WebAdapter``) and the I/O (listeners handing each accepted connection to its adapter as
a ``Channel``) -- and nothing below it knows about it.

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

import trio
from sluice.broker.adapters.inflight import InFlight
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
    channels: ChannelStats = field(default_factory=ChannelStats)
    http: str | None = None  # the HTTP port's HOST:PORT, if it has one

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
    listeners = await _listen(config)
    http_listeners: list = []
    try:
        http_listeners = await _listen_http(config)
        broker, descriptors = await trio.to_thread.run_sync(open_broker, config)
    except BaseException:
        for listener in listeners + http_listeners:
            await trio.aclose_forcefully(listener)
        raise
    port = listeners[0].socket.getsockname()[1]
    shutdown = trio.Event()
    handle = ServerHandle(config.host, port, broker, descriptors, shutdown)
    inflight = InFlight()
    adapter = SluiceAdapter(broker, config, inflight, (config.host, port))
    served = [(listener, adapter) for listener in listeners]
    if http_listeners:
        handle.http = f"{config.http_host or config.host}:{http_listeners[0].socket.getsockname()[1]}"
        web = WebAdapter(BrokerView(
            broker, config, lambda: descriptors.connections, handle.channels,
            {"sluice": f"{config.host}:{port}", "http": handle.http}, time.time()))
        served += [(listener, web) for listener in http_listeners]
        listeners += http_listeners
    make_channel = channel_factory(config, handle.channels)
    refusals = trio.CapacityLimiter(REFUSALS_AT_ONCE)
    try:
        async with trio.open_nursery() as outer:
            await outer.start(broker.run)
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept_all() -> None:
                    with accept_scope:
                        async with trio.open_nursery() as acceptors:
                            for listener, serving in served:
                                acceptors.start_soon(accept_loop, listener, descriptors,
                                                     make_channel, serving, connections, refusals)

                connections.start_soon(accept_all)
                if handle_signals:  # watching before the broker says it is ready
                    await connections.start(_watch_signals, shutdown)
                log.info("broker %d ready on %s:%d; %s", config.broker_id, config.host, port,
                         _storage_description(config))
                if handle.http is not None:
                    log.info("console and metrics on http://%s/", handle.http)
                task_status.started(handle)
                await shutdown.wait()
                log.info("shutting down: no new connections; draining for up to %.1f s",
                         config.shutdown_grace_s)
                accept_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                broker.begin_shutdown()
                with trio.move_on_after(config.shutdown_grace_s):
                    await inflight.wait_drained()
                connections.cancel_scope.cancel()
            outer.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:  # those a cancellation kept from closing in order
                await trio.aclose_forcefully(listener)
            await trio.to_thread.run_sync(broker.close)
            log.info("logs flushed and closed cleanly")


class ListenError(SluiceError):
    """The broker cannot listen on its address (in use, not local, not permitted...)."""


async def _listen(config: BrokerConfig) -> list:
    try:
        return await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {config.host}:{config.port}: {reason}") from None


async def _listen_http(config: BrokerConfig) -> list:
    """The HTTP port's listeners (none unless ``http_port`` is set)."""
    if config.http_port is None:
        return []
    host = config.http_host or config.host
    try:
        return await trio.open_tcp_listeners(config.http_port, host=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen for HTTP on {host}:{config.http_port}: {reason}") from None


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
