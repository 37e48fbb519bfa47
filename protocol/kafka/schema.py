"""The vocabulary of the message tables: types, fields with version ranges, structs.

A table reads like Kafka's own JSON message definitions (``clients/src/main/resources/
common/message/*.json``): a struct lists its fields in wire order, each with the versions that
carry it and the versions in which it may be null. ``compiler`` turns a table into a frozen
dataclass per struct and straight-line encode/decode functions per version.

Field names are Kafka's, in snake_case (``PartitionIndex`` -> ``partition_index``), so the
protocol documentation and Kafka's sources read directly onto the messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERSION_MAX = 2**15 - 1


def parse_versions(spec: str) -> range:
    """Kafka's version syntax: ``"3+"``, ``"0-2"``, ``"7"``; ``""`` means none."""
    if not spec:
        return range(0)
    if spec.endswith("+"):
        return range(int(spec[:-1]), VERSION_MAX + 1)
    lo, _, hi = spec.partition("-")
    return range(int(lo), int(hi or lo) + 1)


class Type:
    """A field's wire type."""


@dataclass(frozen=True, eq=False)
class Fixed(Type):
    """A fixed-width integer or bool: a ``struct`` format character and its value range."""

    name: str
    fmt: str
    size: int
    lo: int
    hi: int


@dataclass(frozen=True, eq=False)
class Variable(Type):
    """string, bytes or records: a length (int16 for strings, int32 else) then the bytes."""

    name: str
    size: int  # bytes of the non-compact length prefix


INT8 = Fixed("int8", "b", 1, -(2**7), 2**7 - 1)
INT16 = Fixed("int16", "h", 2, -(2**15), 2**15 - 1)
INT32 = Fixed("int32", "i", 4, -(2**31), 2**31 - 1)
INT64 = Fixed("int64", "q", 8, -(2**63), 2**63 - 1)
UINT32 = Fixed("uint32", "I", 4, 0, 2**32 - 1)
BOOL = Fixed("bool", "?", 1, 0, 1)
STRING = Variable("string", 2)
BYTES = Variable("bytes", 4)
# Record batches: nullable bytes that are never copied or decoded (a view of the frame on
# decode; bytes-likes or FileSlices sent after the encoded bytes on encode).
RECORDS = Variable("records", 4)


@dataclass(frozen=True, eq=False)
class Array(Type):
    """An int32 count (-1 = null) then the items."""

    item: Type


@dataclass(frozen=True)
class Field:
    """One field of a struct: present in ``versions``, null allowed in ``nullable``."""

    name: str
    type: Type
    versions: str = "0+"
    nullable: str = ""
    # The value when absent from a version, and when the caller gives none; unset: 0, False,
    # "", b"", [] -- or None if the field is nullable in every version that carries it.
    default: Any = None
    has_default: bool = False

    def present(self, version: int) -> bool:
        return version in parse_versions(self.versions)

    def nullable_in(self, version: int) -> bool:
        return version in parse_versions(self.nullable)


def F(name: str, type: Type, versions: str = "0+", *, nullable: str = "",  # noqa: A002
      default: Any = ...) -> Field:
    """A field; ``default=...`` (the default) means the type's own default."""
    if default is ...:
        return Field(name, type, versions, nullable)
    return Field(name, type, versions, nullable, default, True)


@dataclass(frozen=True, eq=False)
class Struct(Type):
    """A named list of fields in wire order; becomes one dataclass."""

    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
