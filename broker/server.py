"""``serve``: open the logs, listen, serve sessions, and shut down in order.

Shutdown order (SIGINT/SIGTERM, or the caller cancelling ``shutdown``):
1. stop accepting connections;
2. let in-flight requests finish, for at most ``shutdown_grace_s``, then cancel sessions;
3. shielded: stop background tasks, checkpoint, flush and close every log, and write the
   clean-shutdown marker (so the next start re-validates nothing).

An ``acks=all`` produce is answered only after its fsync, so a request cut off in step 2 is
either answered after a durable write or not answered at all -- never answered and then lost.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket as stdsocket
from dataclasses import dataclass

import trio
from sluice.broker.adapters.inflight import InFlight
from sluice.broker.adapters.session import RECEIVE_BYTES, Session
from sluice.broker.config import BrokerConfig
from sluice.broker.descriptors import DescriptorBudget
from sluice.broker.domain.broker import Broker
from sluice.broker.storage.config import TopicConfig
from sluice.broker.storage.files import HandleQuota
from sluice.broker.storage.manager import LogManager
from sluice.protocol.errors import ApiError, SluiceError, StorageError
from sluice.protocol.messages import encode_error

log = logging.getLogger("sluice.server")

# Accept errors that mean "out of resources right now": back off and keep accepting.
ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF_S = 0.1
# Connections not admitted (see DescriptorBudget) are told why, this many at once (their
# descriptors come out of the reserve), each for at most this long; more are just closed.
REFUSALS_AT_ONCE = 16
REFUSAL_LINGER_S = 2.0


@dataclass
class ServerHandle:
    """Given to ``task_status.started``: where the broker listens, and how to stop it."""

    host: str
    port: int
    broker: Broker
    descriptors: DescriptorBudget
    _shutdown: trio.Event

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


async def serve(
    config: BrokerConfig,
    *,
    handle_signals: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a broker until shutdown. ``task_status.started`` receives a ``ServerHandle``."""
    # Bind first: a port in use must not cost a recovery of the data directory.
    listeners = await _listen(config)
    try:
        broker, descriptors = await trio.to_thread.run_sync(open_broker, config)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    sockname = listeners[0].socket.getsockname()
    shutdown = trio.Event()
    handle = ServerHandle(config.host, sockname[1], broker, descriptors, shutdown)
    inflight = InFlight()

    async def serve_connection(stream, peer: str) -> None:
        await Session(broker, config, inflight, (config.host, sockname[1]), stream, peer).run()

    refusals = trio.CapacityLimiter(REFUSALS_AT_ONCE)
    try:
        async with trio.open_nursery() as outer:
            await outer.start(broker.run)
            async with trio.open_nursery() as sessions:
                accept_scope = trio.CancelScope()

                async def accept_all() -> None:
                    with accept_scope:
                        async with trio.open_nursery() as acceptors:
                            for listener in listeners:
                                acceptors.start_soon(_accept_loop, listener, descriptors,
                                                     serve_connection, refusals, sessions)

                sessions.start_soon(accept_all)
                if handle_signals:  # watching before the broker says it is ready
                    await sessions.start(_watch_signals, shutdown)
                log.info("broker %d ready on %s:%d; %s", config.broker_id, config.host,
                         sockname[1], _storage_description(config))
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
                sessions.cancel_scope.cancel()
            outer.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
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


async def _accept_loop(listener, descriptors: DescriptorBudget, serve_connection, refusals,
                       nursery) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno in ACCEPT_RETRY_ERRNOS:
                log.error("accept failed (%s); retrying", exc)
                await trio.sleep(ACCEPT_BACKOFF_S)
                continue
            raise
        try:
            stream.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, True)
        except OSError:
            pass
        refused = descriptors.admit_connection()
        if refused is None:
            nursery.start_soon(_run_session, descriptors, serve_connection, stream)
            continue
        log.warning("refusing a connection: %s", refused.message)
        try:
            refusals.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:  # already telling enough others: just close this one
            await trio.aclose_forcefully(stream)
            continue
        nursery.start_soon(_refuse, stream, refused, refusals)


async def _refuse(stream, error: ApiError, refusals) -> None:
    """Tell a connection that was not admitted why -- an error frame with correlation id -1,
    which a client reports as the broker refusing the connection -- and close it: send, close
    our side, and read what the client sent until it closes too (closing with its request
    unread would reset the connection, and the reset could destroy the error frame before
    the client reads it), for at most ``REFUSAL_LINGER_S``."""
    try:
        with trio.move_on_after(REFUSAL_LINGER_S):
            await stream.send_all(b"".join(bytes(p) for p in encode_error(-1, -1, error)))
            await stream.send_eof()
            while await stream.receive_some(RECEIVE_BYTES):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        refusals.release_on_behalf_of(stream)
        await trio.aclose_forcefully(stream)


async def _run_session(descriptors: DescriptorBudget, serve_connection, stream) -> None:
    peer = _peer_name(stream)
    try:
        await serve_connection(stream, peer)
    except Exception:  # a bug serving one connection must not take down every other one
        log.exception("connection %s failed; closed it", peer)
    finally:
        descriptors.release_connection()


def _peer_name(stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"
