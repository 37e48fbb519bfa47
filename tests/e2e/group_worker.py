"""A group member in its own process, for killing: ``python -m tests.e2e.group_worker
BOOTSTRAP GROUP TOPIC SESSION_TIMEOUT_MS``. Prints ``assigned N`` whenever its assignment
changes, and consumes until killed."""

from __future__ import annotations

import sys

import trio
from sluice.client import Consumer


async def main(bootstrap: str, group: str, topic: str, session_ms: int) -> None:
    async with Consumer(bootstrap, group_id=group, topics=[topic], session_timeout_ms=session_ms,
                        auto_offset_reset="earliest") as consumer:
        reported = None
        while True:
            with trio.move_on_after(0.05):
                await consumer.getmany()
            owned = len(consumer.assignment())
            if owned != reported:
                print(f"assigned {owned}", flush=True)
                reported = owned


if __name__ == "__main__":
    bootstrap, group, topic, session_ms = sys.argv[1:5]
    trio.run(main, bootstrap, group, topic, int(session_ms))
