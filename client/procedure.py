"""Request sequences written once for both drivers: generators that yield what to do next.

A *procedure* is a generator that yields, one at a time:

* a ``Call`` (sent on any channel) or ``(Call, Channel)``: resumes with the response, or
  with the call's error raised at the ``yield`` (top-level errors included: ``Call.result``);
* a ``Callback``: an application callback (``on_assign``, ``on_revoke``), resumes with None;
* a ``Connect``: resumes once a channel of its purpose is ready (raises
  ``BrokerUnreachableError`` if none can be opened); ``CONNECT`` is the plain one.

and returns its result. The trio driver awaits each step and the blocking one pumps its
sockets until it is done (``run``); ``Steps`` is the stepping both share, so what a sequence
does -- look a topic up, the group's revoke, commit, callback, release -- exists once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple


class Connect(NamedTuple):
    """Wait for a ready channel for ``purpose``."""

    purpose: str = ""


CONNECT = Connect()


class Callback(NamedTuple):
    """Run ``fn(partitions)`` (an application callback; may be async for the trio client)."""

    fn: object
    partitions: list


class Steps:
    """One procedure being run: ``action`` is what it waits for; ``advance`` resumes it."""

    __slots__ = ("_gen", "action", "done", "value")

    def __init__(self, gen: Generator) -> None:
        self._gen = gen
        self.done = False
        self.value = None
        self.action = None
        self.advance()

    def advance(self, reply=None, error: BaseException | None = None) -> None:
        """Resume with ``reply`` (or raise ``error`` at the ``yield``); sets ``action``, or
        ``done`` and ``value`` once the procedure has returned."""
        try:
            self.action = self._gen.throw(error) if error is not None else self._gen.send(reply)
        except StopIteration as stop:
            self.done, self.value, self.action = True, stop.value, None


def connect():
    """The procedure that waits for a ready channel."""
    yield CONNECT


def expose(cls: type, names, run_with) -> type:
    """Give ``cls`` a method for each procedure method of its base named in ``names``, each
    running the procedure with ``run_with(procedure) -> method`` (a driver's way: awaited
    or not). So the trio and the blocking clients offer the same operations, written once."""
    for name in names:
        setattr(cls, name, run_with(getattr(cls, name)))
    return cls
