"""What the two drivers do alike: a step of the engine, and handing out the work it asks for.

``Driver.step`` lets every engine part act on the time (``tick``), then gives the links with
bytes to write, to close and to open to the concrete driver (``_flush``, ``_close``,
``_open``), and tells it the step is over (``_stepped``: wake waiters). ``wake_time`` is when
the engine has something to do next.
"""

from __future__ import annotations

from sluice.client.network import Link, Network


class Driver:
    """Base of ``TrioDriver`` and ``SyncDriver``: ``parts`` are the engine's besides the
    network, each with ``tick(now)`` and ``wake_time()``."""

    def __init__(self, network: Network, parts: list) -> None:
        self.network = network
        self.parts = [network, *parts]

    def step(self) -> None:
        """Let the engine act on the time and on what arrived; then write, close, connect and
        wake what it asks for."""
        network = self.network
        now = network.clock()
        for part in self.parts:
            part.tick(now)
        for link in network.take_dirty():
            self._flush(link)
        for link in network.take_closing():
            self._close(link)
        for link in network.take_opening():
            self._open(link)
        self._stepped()

    def wake_time(self) -> float:
        return min([part.wake_time() for part in self.parts])

    def _flush(self, link: Link) -> None:
        raise NotImplementedError

    def _close(self, link: Link) -> None:
        raise NotImplementedError

    def _open(self, link: Link) -> None:
        raise NotImplementedError

    def _stepped(self) -> None:
        """The step is over (wake what waits on what it finished)."""
