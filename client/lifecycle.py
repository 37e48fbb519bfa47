"""The shared ``async with`` lifecycle of the trio clients: a nursery for the driver's tasks,
the driver running the client's engine, and exception groups collapsed at the boundary.

trio wraps every exception leaving a nursery in an ``ExceptionGroup``; a user who writes
``except BrokerUnreachableError`` around ``async with Producer(...)`` must still catch it, so
a group holding a single exception is replaced by that exception here.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from sluice.client.network import Network
from sluice.client.procedure import connect
from sluice.client.trio_driver import TrioDriver


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
    """Base of the trio Producer, Consumer and Admin. Subclasses have their engine's ``net``
    (a ``Network``), list the engine parts the driver runs besides it (``_parts``) and start
    their own work in ``_start`` (the default connects)."""

    net: Network
    _stack: AsyncExitStack | None = None
    _driver: TrioDriver | None = None

    def _parts(self) -> list:
        return []

    async def _start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        """Start work once the driver runs (register cleanups on ``stack``)."""
        await self._driver.run(connect())

    async def __aenter__(self):
        try:
            async with AsyncExitStack() as stack:
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)
                self._driver = TrioDriver(self.net, nursery, self._parts())
                stack.callback(self._driver.close)
                self._driver.start()
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

