"""The shared ``async with`` lifecycle of the trio clients: a nursery for background tasks,
a ``Cluster`` connection, and exception groups collapsed at the boundary.

trio wraps every exception leaving a nursery in an ``ExceptionGroup``; a user who writes
``except BrokerUnreachableError`` around ``async with Producer(...)`` must still catch it, so
a group holding a single exception is replaced by that exception here.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from sluice.client.connection import Cluster


def single_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The only leaf exception of a (nested) group, or None if it holds several."""
    leaves = []
    stack = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


class ClientLifecycle:
    """Base of Producer, Consumer and Admin: subclasses implement ``_start`` and set the
    connection's timeouts (``request_timeout_s``, ``reconnect_timeout_s``)."""

    bootstrap: str
    client_id: str
    request_timeout_s: float = 30.0
    reconnect_timeout_s: float = 30.0
    _stack: AsyncExitStack | None = None
    _cluster: Cluster | None = None

    def _new_cluster(self, nursery: trio.Nursery) -> Cluster:
        """A ``Cluster`` with this client's bootstrap, id and timeouts."""
        return Cluster(
            self.bootstrap, nursery, client_id=self.client_id,
            request_timeout_s=self.request_timeout_s, reconnect_timeout_s=self.reconnect_timeout_s,
        )

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        """Start background work after the connection is up (register cleanups on ``stack``)."""

    async def __aenter__(self):
        try:
            async with AsyncExitStack() as stack:
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)
                self._cluster = self._new_cluster(nursery)
                stack.push_async_callback(self._cluster.aclose)
                await self._cluster.connection()
                await self._start(stack, nursery)
                self._stack = stack.pop_all()
        except BaseExceptionGroup as group:
            raise single_exception(group) or group from None
        return self

    async def __aexit__(self, *exc_info) -> bool | None:
        try:
            return await self._stack.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            raise single_exception(group) or group from None
