"""Test helpers for the Kafka protocol: message strategies from the tables, the bridge to
kafka-python's two protocol implementations, and byte feeding.

kafka-python 3.x ships two independent encoders for every API: hand-written struct schemas
(``kafka.protocol.old``, one class per version, ``ProduceRequest[v]``) and classes generated
from Apache Kafka's JSON message definitions (``kafka.protocol.producer`` ...). Neither was
derived from Sluice's tables, so bytes they encode and decode are golden bytes. Values cross
between the implementations as *plain* values: a struct is the tuple of the fields its
version carries, in wire order; an array a list; bytes and records ``bytes``.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from typing import Any

from hypothesis import strategies as st
from sluice.protocol.framing import CLOSED, NEED_DATA
from sluice.protocol.kafka.apis import APIS
from sluice.protocol.kafka.schema import BOOL, BYTES, RECORDS, STRING, Array, Fixed, Struct
from sluice.protocol.slices import FileSlice

NO_OPERATIONS = -(2**31)
# Where kafka-python (both implementations) names a field of Kafka's JSON differently.
_KAFKA_PYTHON_NAMES = {"cluster_authorized_operations": "authorized_operations",
                       "topic_authorized_operations": "authorized_operations"}

# kafka-python 3.0 loads its JSON definitions with importlib.resources.read_text, deprecated
# since Python 3.11: a DeprecationWarning per class, which the suite's filterwarnings=error
# would turn into a collection error. Every class is built here, at import, under this filter.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.protocol
    from kafka.protocol.old import types as old_types

# -- kafka-python's classes -------------------------------------------------------------------

_OLD = {  # api key -> (module, request list, response list) in kafka.protocol.old
    0: ("produce", "ProduceRequest", "ProduceResponse"),
    1: ("fetch", "FetchRequest", "FetchResponse"),
    2: ("list_offsets", "ListOffsetsRequest", "ListOffsetsResponse"),
    3: ("metadata", "MetadataRequest", "MetadataResponse"),
    8: ("commit", "OffsetCommitRequest", "OffsetCommitResponse"),
    9: ("commit", "OffsetFetchRequest", "OffsetFetchResponse"),
    10: ("find_coordinator", "FindCoordinatorRequest", "FindCoordinatorResponse"),
    11: ("group", "JoinGroupRequest", "JoinGroupResponse"),
    12: ("group", "HeartbeatRequest", "HeartbeatResponse"),
    13: ("group", "LeaveGroupRequest", "LeaveGroupResponse"),
    14: ("group", "SyncGroupRequest", "SyncGroupResponse"),
    15: ("admin", "DescribeGroupsRequest", "DescribeGroupsResponse"),
    16: ("admin", "ListGroupsRequest", "ListGroupsResponse"),
    18: ("api_versions", "ApiVersionsRequest", "ApiVersionsResponse"),
    19: ("admin", "CreateTopicsRequest", "CreateTopicsResponse"),
    20: ("admin", "DeleteTopicsRequest", "DeleteTopicsResponse"),
    22: ("init_producer_id", "InitProducerIdRequest", "InitProducerIdResponse"),
    32: ("admin", "DescribeConfigsRequest", "DescribeConfigsResponse"),
}


def old_class(api_key: int, request: bool, version: int) -> Any | None:
    """kafka-python's hand-written class for (api, version), or None if it has none."""
    module_name, req, resp = _OLD[api_key]
    module = importlib.import_module(f"kafka.protocol.old.{module_name}")
    classes = getattr(module, req if request else resp)
    return classes[version] if version < len(classes) else None


def _new_classes() -> dict[tuple[int, bool], Any]:
    found = {}
    for info in pkgutil.walk_packages(kafka.protocol.__path__, "kafka.protocol."):
        if ".old" in info.name or ".schemas" in info.name or info.name.endswith("generate_stubs"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            json = getattr(obj, "_json", None)
            if isinstance(obj, type) and isinstance(json, dict) and json.get("type") in (
                "request", "response"
            ) and obj.__module__ == info.name:
                found[(json["apiKey"], json["type"] == "request")] = obj
    return found


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _NEW = _new_classes()
    for _module in {m for m, _, _ in _OLD.values()}:
        importlib.import_module(f"kafka.protocol.old.{_module}")


def new_class(api_key: int, request: bool, version: int) -> Any | None:
    """kafka-python's class generated from Kafka's JSON definitions, or None when the JSON
    no longer describes that version (Kafka 4 dropped pre-v2-batch versions)."""
    cls = _NEW.get((api_key, request))
    if cls is None:
        return None
    lo, _, hi = cls._json["validVersions"].partition("-")
    return cls[version] if int(lo) <= version <= int(hi or lo) else None


# -- plain values -------------------------------------------------------------------------------


def fields_at(struct_: Struct, version: int) -> list:
    return [f for f in struct_.fields if f.present(version)]


def plain(value: Any, type_: Any, version: int) -> Any:
    """A message value as plain tuples/lists/bytes (see the module docstring)."""
    if value is None:
        return None
    if isinstance(type_, Struct):
        return tuple(plain(getattr(value, f.name), f.type, version) for f in fields_at(type_, version))
    if isinstance(type_, Array):
        return [plain(x, type_.item, version) for x in value]
    if type_ in (BYTES, RECORDS):
        return b"".join(_piece_bytes(p) for p in value) if isinstance(value, list) else bytes(value)
    if type_ is BOOL:
        return bool(value)
    return int(value) if isinstance(type_, Fixed) else value


def _piece_bytes(piece: Any) -> bytes:
    if isinstance(piece, FileSlice):
        piece.file.seek(piece.position)
        return piece.file.read(piece.length)
    return bytes(piece)


def _bits(value: int) -> set | None:
    return None if value == NO_OPERATIONS else {b for b in range(32) if value & (1 << b)}


def _from_bits(bits: set | None) -> int:
    if bits is None:
        return NO_OPERATIONS
    value = sum(1 << b for b in bits)
    return value - 2**32 if value >= 2**31 else value


# -- to and from kafka-python's hand-written classes ----------------------------------------------


def _old_fields(schema: Any) -> list:
    return [(n, t) for n, t in zip(schema.names, schema.fields, strict=True)
            if t is not old_types.TaggedFields]


def _paired(struct_: Struct, schema: Any, version: int) -> list:
    """Our fields at ``version`` beside kafka-python's, checked to be the same fields in the
    same order: names match (but for its two renames) as well as count."""
    ours, theirs = fields_at(struct_, version), _old_fields(schema)
    names = [(f.name, _KAFKA_PYTHON_NAMES.get(f.name, f.name)) for f in ours]
    assert [n for _, n in names] == [n for n, _ in theirs] or [n for n, _ in names] == [
        n for n, _ in theirs], (struct_.name, version, names, theirs)
    return [(f, t) for f, (_, t) in zip(ours, theirs, strict=True)]


def to_old(value: Any, type_: Any, old: Any, version: int) -> Any:
    """A value of ours as kafka-python's ``old`` type takes it."""
    if isinstance(type_, Struct):
        values = [to_old(getattr(value, f.name), f.type, t, version)
                  for f, t in _paired(type_, old, version)]
        tagged = len(values) != len(old.fields)
        return tuple(values) + (({},) if tagged else ())
    if old is old_types.BitField:
        return _bits(value)
    if value is None:
        return None
    if isinstance(type_, Array):
        item = old.array_of
        if isinstance(type_.item, Struct) and not isinstance(item, old_types.Schema):
            (only,) = fields_at(type_.item, version)  # a struct of one field, flattened
            return [to_old(getattr(x, only.name), only.type, item, version) for x in value]
        return [to_old(x, type_.item, item, version) for x in value]
    if type_ in (BYTES, RECORDS):
        return bytes(value)
    return value


def from_old(value: Any, type_: Any, old: Any, version: int) -> Any:
    """kafka-python's decoded ``old`` value as a plain value of ours."""
    if isinstance(type_, Struct):
        pairs = _paired(type_, old, version)
        if hasattr(value, "SCHEMA"):
            values = [getattr(value, n) for n, _ in _old_fields(old)]
        else:
            values = list(value)[:len(pairs)]  # tagged fields come last (dropped if empty)
        return tuple(from_old(v, f.type, t, version)
                     for v, (f, t) in zip(values, pairs, strict=True))
    if old is old_types.BitField:
        return _from_bits(value)
    if value is None:
        return None
    if isinstance(type_, Array):
        item = old.array_of
        if isinstance(type_.item, Struct) and not isinstance(item, old_types.Schema):
            return [(x,) for x in value]
        return [from_old(x, type_.item, item, version) for x in value]
    if type_ in (BYTES, RECORDS):
        return bytes(value)
    return value


# -- to and from kafka-python's classes generated from Kafka's JSON ---------------------------------



def _new_field(cls: Any, name: str) -> tuple[str, Any]:
    fields = cls.fields if isinstance(cls.fields, dict) else cls._struct.fields
    name = name if name in fields else _KAFKA_PYTHON_NAMES[name]
    return name, fields[name]


def to_new(value: Any, type_: Any, cls: Any, version: int) -> Any:
    """A struct of ours as kafka-python's generated ``cls`` (a class or nested data class)."""
    kwargs = {}
    for f in fields_at(type_, version):
        name, field = _new_field(cls, f.name)
        v = getattr(value, f.name)
        if getattr(field, "_json", {}).get("type") == "bitfield":
            v = _bits(v)
        elif v is not None and isinstance(f.type, Array) and isinstance(f.type.item, Struct):
            v = [to_new(x, f.type.item, field.data_class, version) for x in v]
        elif v is not None and f.type in (BYTES, RECORDS):
            v = bytes(v)
        kwargs[name] = v
    return cls(**kwargs)


def from_new(obj: Any, type_: Any, version: int) -> Any:
    values = []
    for f in fields_at(type_, version):
        name, field = _new_field(type(obj), f.name)
        v = getattr(obj, name)
        if getattr(field, "_json", {}).get("type") == "bitfield":
            values.append(_from_bits(v))
        elif v is not None and isinstance(f.type, Array) and isinstance(f.type.item, Struct):
            values.append([from_new(x, f.type.item, version) for x in v])
        else:
            values.append(plain(v, f.type, version))
    return tuple(values)


# -- strategies ----------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def value_strategy(type_: Any, nullable: bool, classes: dict, version: int) -> st.SearchStrategy:
    if isinstance(type_, Struct):
        base = struct_strategy(type_, classes[type_.name], classes, version)
    elif isinstance(type_, Array):
        base = st.lists(value_strategy(type_.item, False, classes, version), max_size=3)
    elif type_ is BOOL:
        base = st.booleans()
    elif isinstance(type_, Fixed):
        base = st.integers(type_.lo, type_.hi)
    elif type_ is STRING:
        base = _TEXT
    else:
        base = st.binary(max_size=24)
    return st.one_of(st.none(), base) if nullable else base


def struct_strategy(struct_: Struct, cls: type, classes: dict, version: int) -> st.SearchStrategy:
    return st.builds(cls, **{
        f.name: value_strategy(f.type, f.nullable_in(version), classes, version)
        for f in fields_at(struct_, version)
    })


def message_strategy(api_key: int, request: bool, version: int) -> st.SearchStrategy:
    """Messages of (api, direction) whose every field the version carries is drawn."""
    compiled = APIS[api_key].request if request else APIS[api_key].response
    classes = {c.__name__: c for c in _nested(compiled.cls)}
    return struct_strategy(compiled.schema, compiled.cls, classes, version)


def _nested(cls: type) -> list[type]:
    return [cls, *(v for v in vars(cls).values() if isinstance(v, type) and hasattr(v, "_new"))]


# -- feeding bytes --------------------------------------------------------------------------------


def feed_events(conn: Any, data: bytes, chunk: int | None = None) -> list:
    """Every event ``conn`` yields for ``data``, fed whole or ``chunk`` bytes at a time;
    stops at NEED_DATA once all bytes are in."""
    events = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        conn.receive_data(data[start:start + step])
        while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
            events.append(event)
    return events


def joined(pieces: list) -> bytes:
    return b"".join(_piece_bytes(p) for p in pieces)
