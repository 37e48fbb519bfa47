"""Where a command-line reader starts, or where a group's offsets are moved: per partition, its
first offset, its end, an offset kept within the log, or what a time lookup found."""

from __future__ import annotations


def chosen_positions(begins: dict, ends: dict, *, earliest: bool = False, latest: bool = False,
                     offset: int | None = None, found: dict | None = None) -> dict:
    """``{(topic, partition): offset}`` for the partitions of ``ends``: ``earliest`` (their
    ``begins``), ``latest`` (their ``ends``), ``offset`` moved into ``[begin, end]``, or
    ``found``, a time lookup's ``{partition: (offset, timestamp) or None}`` (None: the end --
    no record is that late)."""
    if earliest:
        return dict(begins)
    if latest:
        return dict(ends)
    if offset is not None:
        return {tp: min(max(offset, begins[tp]), end) for tp, end in ends.items()}
    if found is None:
        raise ValueError("a position needs earliest, latest, an offset or a time lookup")
    return {tp: end if found[tp] is None else found[tp][0] for tp, end in ends.items()}
