"""``sluice produce``: records from stdin to a topic, on the blocking producer.

Input is split into records at a delimiter (a newline by default; nothing else is stripped),
or taken whole as one record. Records are sent as they are read; whenever no more input is
waiting (an interactive terminal between two lines, a pipe gone quiet) everything sent is
delivered and acknowledged first, so a typed line is stored before the next one is typed.

A bad record (no key separator, JSON that cannot be read) stops the input there: the records
before it are delivered, it and the rest are not, and the error says so. A stop signal ends a
wait for input at once (``client.cli_signals``), delivers what was read, and exits 130/143.
The count of records produced goes to stderr at the end, whatever happened.
"""

from __future__ import annotations

import os
import select
import sys
from collections import deque

from sluice.client.cli_parser import UsageError, client_options
from sluice.client.cli_signals import StopSignals
from sluice.client.formats import MAX_TIMESTAMP, parse_time, record_from_json
from sluice.client.sync import Producer

READ_BYTES = 1 << 16


def produce(args) -> int:
    defaults = record_defaults(args)
    if args.format == "json" and args.key_separator is not None:
        raise UsageError("--key-separator splits text records; with --format json the key is "
                         "the object's \"key\"")
    if args.print_offsets and args.acks == 0:
        raise UsageError("--print-offsets needs acknowledgements: not with --acks 0")
    deliveries = Deliveries(sys.stdout.buffer if args.print_offsets else None)
    with StopSignals() as stop, Producer(args.bootstrap, acks=args.acks,
                                         compression=args.compression,
                                         client_id="sluice-produce",
                                         **client_options(args)) as producer:
        producer.partitions_for(args.topic)  # an unknown topic is said before input is read
        try:
            for number, data, more in input_records(sys.stdin.fileno(), args, stop):
                fields = {**defaults, **record_fields(number, data, args)}
                deliveries.add(producer.send(args.topic, **fields))
                if not more:  # nothing else waiting: deliver now
                    producer.flush()
                deliveries.settle()
        finally:
            producer.flush()
            deliveries.settle()
            if not args.quiet:
                print(f"sluice produce: {deliveries.summary(args.topic)}", file=sys.stderr)
    deliveries.raise_first_error()
    return stop.exit_code or 0


def record_defaults(args) -> dict:
    """What every record gets unless its own input says otherwise (JSON fields do)."""
    timestamp = None
    if args.timestamp is not None:
        try:
            timestamp = parse_time(args.timestamp)
        except ValueError as exc:
            raise UsageError(f"--timestamp: {exc}") from None
        if timestamp < 0:
            raise UsageError(f"--timestamp: {args.timestamp} is before 1970")
        if timestamp > MAX_TIMESTAMP:
            raise UsageError(f"--timestamp: {args.timestamp} is beyond the largest timestamp")
    return {
        "key": None if args.key is None else args.key.encode(),
        "value": None,
        "headers": [(k, v.encode()) for k, v in args.header or []] or None,
        "timestamp": timestamp,
        "partition": args.partition,
    }


def record_fields(number: int, data: bytes, args) -> dict:
    """The fields record ``number`` of the input sets itself (``ValueError`` if unreadable)."""
    if args.format == "json":
        return record_from_json(data, f"record {number}")
    if args.key_separator is None:
        return {"value": data}
    key, sep, value = data.partition(args.key_separator)
    if not sep:
        shown = args.key_separator.decode(errors="backslashreplace")
        raise ValueError(f"record {number} has no key separator {shown!r}: the records before "
                         "it were produced; it and the rest of the input were not")
    return {"key": key, "value": value}


# -- input ---------------------------------------------------------------------------------------


def input_records(fd: int, args, stop: StopSignals):
    """``(number, bytes, more)`` per record of the input; ``more``: whether further input is
    waiting right now (if not, the caller delivers what it sent before reading on)."""
    if args.whole:
        yield 1, b"".join(read_chunks(fd, stop)), False
        return
    delimiter = args.delimiter or b"\n"
    buffer = bytearray()
    number = 0
    for chunk in read_chunks(fd, stop):
        search_from = max(0, len(buffer) - len(delimiter) + 1)
        buffer += chunk
        start, ends = 0, []
        while (end := buffer.find(delimiter, search_from)) >= 0:
            ends.append(end)
            search_from = end + len(delimiter)
        waiting = input_waiting(fd)
        for i, end in enumerate(ends):
            number += 1
            yield number, bytes(buffer[start:end]), waiting or i + 1 < len(ends)
            start = end + len(delimiter)
        del buffer[:start]
    if buffer:  # the last record need not end with the delimiter
        yield number + 1, bytes(buffer), False


def read_chunks(fd: int, stop: StopSignals):
    """What arrives on ``fd``, until its end; a stop signal ends a wait at once."""
    while True:
        with stop.interruptible():
            chunk = os.read(fd, READ_BYTES)
        if not chunk:
            return
        yield chunk


def input_waiting(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


# -- delivery ------------------------------------------------------------------------------------


class Deliveries:
    """The records sent, in input order, until settled: counted (and their offsets printed
    to ``out``, if given) once acknowledged or failed. Only unsettled ones are kept."""

    def __init__(self, out=None) -> None:
        self.out = out
        self.pending: deque = deque()
        self.produced = 0
        self.failed = 0
        self.first_error: BaseException | None = None

    def add(self, handle) -> None:
        self.pending.append(handle)

    def settle(self) -> None:
        lines = []
        while self.pending and self.pending[0].done():
            handle = self.pending.popleft()
            if handle.batch.error is not None:
                self.failed += 1
                self.first_error = self.first_error or handle.batch.error
                continue
            self.produced += 1
            if self.out is not None:
                meta = handle.result()
                lines.append(f"{meta.topic} {meta.partition} {meta.offset}\n")
        if lines:
            self.out.write("".join(lines).encode())
            self.out.flush()

    def summary(self, topic: str) -> str:
        failed = f"; {self.failed} failed" if self.failed else ""
        return f"{self.produced} record(s) produced to {topic}{failed}"

    def raise_first_error(self) -> None:
        if self.first_error is not None:
            raise self.first_error
