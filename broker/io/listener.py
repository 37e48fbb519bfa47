"""Accepting connections: admit each against the broker's budget, make it a ``Channel`` and
hand it to a protocol adapter -- or tell it why not and close it.

Admission (``admit``: the ``DescriptorBudget``) happens before anything is read; a connection
that is not admitted gets the adapter's refusal (its protocol's error frame) and is closed,
``REFUSALS_AT_ONCE`` at most at a time, each for at most ``REFUSAL_LINGER_S``; more are just
closed. A failure serving one connection is logged and closes that connection only.
"""

from __future__ import annotations

import errno
import logging
import socket as stdsocket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from sluice.broker.io.channel import Channel
from sluice.protocol.errors import ApiError

log = logging.getLogger("sluice.server")

# Accept errors that mean "out of resources right now": back off and keep accepting.
ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF_S = 0.1
REFUSALS_AT_ONCE = 16
REFUSAL_LINGER_S = 2.0
DRAIN_BYTES = 64 * 1024


class Admission(Protocol):
    """Counts connections in (the broker's ``DescriptorBudget``)."""

    def admit_connection(self) -> ApiError | None:
        """Count one in, or say why not (nothing counted then)."""

    def release_connection(self) -> None: ...


class Adapter(Protocol):
    """A protocol's side of a listener."""

    async def serve(self, channel: Channel) -> None:
        """Serve one connection until it ends (the channel is closed by then)."""

    def refusal(self, error: ApiError) -> bytes:
        """What to send a connection that is not admitted, before closing it."""


ChannelFactory = Callable[[trio.SocketStream, str], Channel]


async def accept_loop(
    listener: trio.SocketListener, admission: Admission, make_channel: ChannelFactory,
    adapter: Adapter, nursery: trio.Nursery, refusals: trio.CapacityLimiter,
) -> None:
    """Accept connections on ``listener`` until cancelled; each is served in ``nursery``."""
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
        refused = admission.admit_connection()
        if refused is None:
            nursery.start_soon(_serve, admission, adapter.serve, make_channel(stream, peer_name(stream)))
            continue
        log.warning("refusing a connection: %s", refused.message)
        try:
            refusals.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:  # already telling enough others: just close this one
            await trio.aclose_forcefully(stream)
            continue
        nursery.start_soon(_refuse, stream, adapter.refusal(refused), refusals)


async def _serve(admission: Admission, serve: Callable[[Channel], Awaitable[None]],
                 channel: Channel) -> None:
    try:
        await serve(channel)
    except Exception:  # a bug serving one connection must not take down every other one
        log.exception("connection %s failed; closed it", channel.peer)
    finally:
        await channel.aclose()
        admission.release_connection()


async def _refuse(stream: trio.SocketStream, frame: bytes, refusals: trio.CapacityLimiter) -> None:
    """Tell a connection that was not admitted why, and close it: send, close our side, and
    read what the client sent until it closes too (closing with its request unread would
    reset the connection, and the reset could destroy the frame before the client reads it),
    for at most ``REFUSAL_LINGER_S``."""
    try:
        with trio.move_on_after(REFUSAL_LINGER_S):
            await stream.send_all(frame)
            await stream.send_eof()
            while await stream.receive_some(DRAIN_BYTES):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        refusals.release_on_behalf_of(stream)
        await trio.aclose_forcefully(stream)


def peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"
