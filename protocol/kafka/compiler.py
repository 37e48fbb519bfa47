"""Message tables -> a frozen dataclass per struct and straight-line codecs per version.

Interpreting a schema field by field costs a Python call and a branch per field on every
message (Sluice's own codec measured ~20 us per small request that way; docs/DESIGN-NOTES.md
"Message schemas are compiled"). So, once at import, each struct of a table becomes:

* a frozen, slotted, keyword-only dataclass holding the union of its fields over the
  message's versions, whose ``__post_init__`` checks every value against the field's type
  (``ValueError`` naming the field) -- what the broker builds is checked when built;
* per version, a decoder ``(buf, pos, budget) -> (obj, pos)`` and an encoder
  ``(obj, out, holes) -> None``, generated as Python source: runs of fixed-width fields are
  one ``struct`` call, nested structs a direct call, and errors carry the field's path. The
  decoder builds its objects without re-checking them (the wire types already bound them).

Record batches (``RECORDS`` fields) are never copied: the decoder returns a view of the
frame, and the encoder writes the length and leaves a *hole*: ``holes`` collects
``(offset, pieces)`` so the caller sends the encoded bytes up to the offset, then the pieces
(bytes-likes, ``FileSlice``s), then the rest. A Fetch response is thus header bytes around
each partition's records, and the stored batches go out with sendfile.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import MISSING, dataclass, make_dataclass
from dataclasses import field as dc_field
from typing import Any

from sluice.protocol.kafka import primitives
from sluice.protocol.kafka.errors import EncodeError, MalformedMessageError
from sluice.protocol.kafka.schema import (
    BOOL,
    BYTES,
    INT32,
    RECORDS,
    STRING,
    Array,
    Field,
    Fixed,
    Struct,
    Type,
    Variable,
)
from sluice.protocol.slices import FileSlice

Decoder = Callable[[memoryview, int, list], tuple[Any, int]]
Encoder = Callable[[Any, bytearray, list], None]
_BYTES_LIKE = (bytes, bytearray, memoryview)


@dataclass(frozen=True)
class CompiledMessage:
    """One request or response schema, compiled for each version in ``versions``."""

    schema: Struct
    cls: type
    versions: range
    flexible: range
    decoders: dict[int, Decoder]
    encoders: dict[int, Encoder]


def min_bytes(type_: Type, version: int, flexible: bool) -> int:
    """The fewest bytes a value of ``type_`` takes at ``version``: an announced array count
    times this must fit in what is left of the frame."""
    if isinstance(type_, Fixed):
        return type_.size
    if isinstance(type_, Variable):
        return 1 if flexible else type_.size
    if isinstance(type_, Array):
        return 1 if flexible else 4
    total = sum(min_bytes(f.type, version, flexible) for f in type_.fields if f.present(version))
    return total + (1 if flexible else 0)  # the tagged-field count


def compile_message(root: Struct, versions: range, flexible: range = range(0)) -> CompiledMessage:
    compiler = _Compiler(versions)
    cls = compiler.make_class(root)
    for nested in compiler.classes.values():  # every struct's class, by name, on the root
        if nested is not cls:
            setattr(cls, nested.__name__, nested)
    decoders, encoders = {}, {}
    for v in versions:
        decoders[v] = compiler.decoder(root, v, v in flexible)
        encoders[v] = compiler.encoder(root, v, v in flexible)
    return CompiledMessage(root, cls, versions, flexible, decoders, encoders)


def _runs(fields: list[Field]) -> list[tuple[int, list[Field]]]:
    """``(index, run)`` over ``fields``: each run of consecutive fixed-width fields together
    (one ``struct`` call), every other field alone."""
    runs: list[tuple[int, list[Field]]] = []
    for k, f in enumerate(fields):
        if runs and isinstance(f.type, Fixed) and isinstance(runs[-1][1][-1].type, Fixed):
            runs[-1][1].append(f)
        else:
            runs.append((k, [f]))
    return runs


def _path(name: str, index: int | None) -> str:
    return name if index is None else f"{name}[{index}]"


def _structs_in(type_: Type) -> Struct | None:
    item = type_.item if isinstance(type_, Array) else type_
    return item if isinstance(item, Struct) else None


def _records_ok(value: object) -> bool:
    """A RECORDS value: None, a bytes-like, a FileSlice, or a list/tuple of those two."""
    if value is None or isinstance(value, (*_BYTES_LIKE, FileSlice)):
        return True
    return isinstance(value, list | tuple) and all(
        isinstance(p, (*_BYTES_LIKE, FileSlice)) for p in value
    )


def _int_ok(lo: int, hi: int) -> Callable[[object], bool]:
    def ok(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi

    return ok


class _Compiler:
    """Generates the class and codecs of one message's structs; ``ns`` is the namespace the
    generated functions share (nested decoders are found there by name at call time)."""

    def __init__(self, versions: range) -> None:
        self.versions = versions
        self.classes: dict[int, type] = {}  # id(Struct) -> class
        self.ns: dict[str, Any] = {
            "MalformedMessageError": MalformedMessageError,
            "EncodeError": EncodeError,
            "_struct_error": struct.error,
            "_path": _path,
            "_read_string": primitives.read_string,
            "_read_bytes": primitives.read_bytes,
            "_read_records": primitives.read_records,
            "_read_count": primitives.read_count,
            "_read_int32_array": primitives.read_int32_array,
            "_check_null": primitives.check_null,
            "_check_count": primitives.check_count,
            "_overrun": primitives.overrun,
            "_I16": primitives.INT16,
            "_I32": primitives.INT32,
            "_skip_tags": primitives.skip_tagged_fields,
            "_write_string": primitives.write_string,
            "_write_bytes": primitives.write_bytes,
            "_write_records": primitives.write_records,
            "_write_count": primitives.write_count,
            "_pack": struct.pack,
        }
        self.done: set[str] = set()  # codecs already generated
        self.fixed: dict[str, str] = {}  # struct format -> its name in ns

    # -- classes ----------------------------------------------------------------------------

    def fields_of(self, struct_: Struct) -> list[Field]:
        """The fields some compiled version carries, in wire order."""
        return [f for f in struct_.fields if any(f.present(v) for v in self.versions)]

    def default_of(self, f: Field) -> tuple[Any, Any]:
        """``(default, factory)`` of a field, one of them MISSING."""
        if f.has_default:
            return f.default, MISSING
        carried = [v for v in self.versions if f.present(v)]
        if all(f.nullable_in(v) for v in carried):
            return None, MISSING
        if isinstance(f.type, Array):
            return MISSING, list
        if f.type is BOOL:
            return False, MISSING
        if isinstance(f.type, Fixed):
            return 0, MISSING
        return {"string": "", "bytes": b"", "records": None}[f.type.name], MISSING

    def make_class(self, struct_: Struct) -> type:
        if id(struct_) in self.classes:
            return self.classes[id(struct_)]
        nested = {}
        for f in struct_.fields:
            inner = _structs_in(f.type)
            if inner is not None:
                nested[inner.name] = self.make_class(inner)
        spec = []
        for f in self.fields_of(struct_):
            default, factory = self.default_of(f)
            if factory is not MISSING:
                spec.append((f.name, Any, dc_field(default_factory=factory)))
            else:
                spec.append((f.name, Any, dc_field(default=default)))
        cls = make_dataclass(
            struct_.name, spec, frozen=True, slots=True, kw_only=True,
            namespace={"__post_init__": self._checker(struct_)},
        )
        cls.__module__ = "sluice.protocol.kafka.messages"
        cls._new = staticmethod(self._trusted_constructor(struct_, cls))
        for name, sub in nested.items():
            setattr(cls, name, sub)
        self.classes[id(struct_)] = cls
        self.ns[f"_new_{struct_.name}"] = cls._new
        return cls

    def _check(self, type_: Type) -> Callable[[object], bool]:
        """A predicate for a field value of ``type_``."""
        if isinstance(type_, Array):
            item = type_.item
            if isinstance(item, Struct):
                item_cls = self.classes[id(item)]

                def item_ok(x: object) -> bool:
                    return type(x) is item_cls
            else:
                item_ok = self._check(item)

            def ok(v: object) -> bool:
                return isinstance(v, list | tuple) and all(item_ok(x) for x in v)
        elif type_ is RECORDS:
            return _records_ok
        elif type_ is BOOL:
            def ok(v: object) -> bool:
                return v is True or v is False
        elif isinstance(type_, Fixed):
            ok = _int_ok(type_.lo, type_.hi)
        elif type_ is STRING:
            def ok(v: object) -> bool:
                return isinstance(v, str)
        elif type_ is BYTES:
            def ok(v: object) -> bool:
                return isinstance(v, _BYTES_LIKE)
        else:
            raise TypeError(f"no check for {type_!r}")
        return ok

    def _checker(self, struct_: Struct) -> Callable[[Any], None]:
        """``__post_init__``: one inline test per field (ints and strings inline, the rest
        through a predicate), ``ValueError`` naming the first field that fails."""
        ns: dict[str, Any] = {"_bad": _bad_value}
        lines = []
        for i, f in enumerate(self.fields_of(struct_)):
            nullable = any(f.nullable_in(v) for v in self.versions if f.present(v))
            if isinstance(f.type, Fixed) and f.type is not BOOL:
                test = (f"(type(v) is int or (isinstance(v, int) and not isinstance(v, bool)))"
                        f" and {f.type.lo} <= v <= {f.type.hi}")
            elif f.type is STRING:
                test = "type(v) is str"
            else:
                ns[f"ok{i}"] = self._check(f.type)
                test = f"ok{i}(v)"
            if nullable:
                test = f"v is None or {test}"
            what = f"{'a nullable ' if nullable else 'a '}{getattr(f.type, 'name', 'list')}"
            lines += [f"    v = self.{f.name}", f"    if not ({test}):",
                      f"        _bad({struct_.name!r}, {f.name!r}, {what!r}, v)"]
        source = "def __post_init__(self):\n" + ("\n".join(lines) or "    pass")
        return _define(source, "__post_init__", ns)

    def _trusted_constructor(self, struct_: Struct, cls: type) -> Callable[..., Any]:
        """``cls`` built from already valid values (what a decoder read), unchecked."""
        names = [f.name for f in self.fields_of(struct_)]
        ns = {"_alloc": object.__new__, "cls": cls}
        body = ["    o = _alloc(cls)"]
        for i, name in enumerate(names):
            ns[f"s{i}"] = cls.__dict__[name].__set__
            body.append(f"    s{i}(o, a{i})")
        args = ", ".join(f"a{i}" for i in range(len(names)))
        return _define(f"def _new({args}):\n" + "\n".join(body) + "\n    return o", "_new", ns)

    # -- decoders ---------------------------------------------------------------------------

    def decoder(self, struct_: Struct, version: int, flexible: bool) -> Decoder:
        return self._generate("_dec", self._decoder_source, struct_, version, flexible)

    def _generate(self, prefix: str, source: Callable[..., str], struct_: Struct,
                  version: int, flexible: bool) -> Callable:
        """The function ``{prefix}_{struct}_{version}`` from ``source``, generated once,
        after those of the structs nested in it (which it calls by name)."""
        name = f"{prefix}_{struct_.name}_{version}"
        if name not in self.done:
            self.done.add(name)
            for f in struct_.fields:
                inner = _structs_in(f.type)
                if inner is not None and f.present(version):
                    self._generate(prefix, source, inner, version, flexible)
            _define(source(struct_, version, flexible, name), name, self.ns)
        return self.ns[name]

    def _fixed_struct(self, fmt: str) -> str:
        """The namespace name of a ``struct.Struct`` for a run of fixed-width fields."""
        key = self.fixed.get(fmt)
        if key is None:
            key = self.fixed[fmt] = f"_S{len(self.fixed)}"
            self.ns[key] = struct.Struct(">" + fmt)
        return key

    def _decoder_source(self, struct_: Struct, version: int, fx: bool, name: str) -> str:
        lines: list[str] = []
        values: dict[str, str] = {}  # field name -> variable
        for k, run in _runs([f for f in struct_.fields if f.present(version)]):
            f = run[0]
            lines.append(f"f = {f.name!r}")
            names = [f"v{k + j}" for j in range(len(run))]
            values.update((g.name, var) for g, var in zip(run, names, strict=True))
            if isinstance(f.type, Fixed):  # a run of fixed-width fields: one unpack
                key = self._fixed_struct("".join(g.type.fmt for g in run))
                lines += [f"{', '.join(names)}, = {key}.unpack_from(buf, pos)",
                          f"pos += {sum(g.type.size for g in run)}"]
            elif isinstance(f.type, Variable):
                lines += _variable_decode(f.type, names[0], f.nullable_in(version), fx)
            elif isinstance(f.type, Array):
                lines += self._array_decode(f.type.item, names[0], f.nullable_in(version),
                                            version, fx)
            else:
                raise TypeError(f"no decoder for {f.type!r}")
        if fx:
            lines += ["f = '(tagged fields)'", "pos = _skip_tags(buf, pos)"]
        args = []
        for i, f in enumerate(self.fields_of(struct_)):
            if f.name in values:
                args.append(values[f.name])
            else:
                default, factory = self.default_of(f)
                if factory is not MISSING:
                    args.append("[]")
                else:
                    self.ns[f"_d_{struct_.name}_{i}"] = default
                    args.append(f"_d_{struct_.name}_{i}")
        body = "\n".join("        " + line for line in lines) or "        pass"
        return (
            f"def {name}(buf, pos, budget):\n"
            "    f = i = None\n"
            "    try:\n"
            f"{body}\n"
            "    except MalformedMessageError as exc:\n"
            "        raise exc.within(_path(f, i)) from None\n"
            "    except UnicodeDecodeError as exc:\n"
            "        raise MalformedMessageError(_path(f, i), f'not UTF-8: {exc}') from None\n"
            "    except _struct_error:\n"
            "        raise MalformedMessageError(_path(f, i), f'cut short at offset {pos} '\n"
            "                                    f'({len(buf) - pos} bytes left)') from None\n"
            f"    return _new_{struct_.name}({', '.join(args)}), pos\n"
        )

    def _array_decode(self, item: Type, var: str, nl: bool, version: int, fx: bool) -> list[str]:
        size = min_bytes(item, version, fx)
        assert size > 0, "every array item takes at least a byte"
        if fx:
            lines = [f"n, pos = _read_count(buf, pos, {nl}, {fx}, {size}, budget)",
                     "if n < 0:", f"    {var} = None", "else:"]
        else:  # inline: the count, then the checks before anything is built for it
            lines = ["n, = _I32.unpack_from(buf, pos)", "pos += 4", "if n < 0:",
                     f"    _check_null(n, {nl}, 'array count')", f"    {var} = None", "else:",
                     f"    if n * {size} > len(buf) - pos or budget[0] < n:",
                     f"        _check_count(n, {size}, buf, pos, budget)",
                     "    budget[0] -= n"]
        if item is INT32:
            return [*lines, f"    {var}, pos = _read_int32_array(buf, pos, n)"]
        if isinstance(item, Struct):
            read = f"x, pos = _dec_{item.name}_{version}(buf, pos, budget)"
        elif item is STRING:
            read = f"x, pos = _read_string(buf, pos, False, {fx})"
        else:
            raise TypeError(f"no array decoder for items of {item!r}")
        return [*lines, f"    {var} = []", "    for i in range(n):", f"        {read}",
                f"        {var}.append(x)", "    i = None"]

    # -- encoders ---------------------------------------------------------------------------

    def encoder(self, struct_: Struct, version: int, flexible: bool) -> Encoder:
        return self._generate("_enc", self._encoder_source, struct_, version, flexible)

    def _encoder_source(self, struct_: Struct, version: int, fx: bool, name: str) -> str:
        lines: list[str] = []
        for _, run in _runs([f for f in struct_.fields if f.present(version)]):
            f = run[0]
            nl = f.nullable_in(version)
            lines.append(f"f = {f.name!r}")
            if isinstance(f.type, Fixed):  # a run of fixed-width fields: one pack
                key = self._fixed_struct("".join(g.type.fmt for g in run))
                lines.append(f"out += {key}.pack({', '.join(f'o.{g.name}' for g in run)})")
            elif f.type is RECORDS:
                lines.append(f"_write_records(out, holes, o.{f.name}, {fx})")
            elif f.type is STRING and not fx:
                # Inline for a str that cannot exceed 32,767 UTF-8 bytes; else the helper,
                # which checks (and says what is wrong).
                lines += [f"v = o.{f.name}", "if type(v) is str and len(v) < 8192:",
                          "    v = v.encode()", "    out += _I16.pack(len(v))", "    out += v",
                          "else:", f"    _write_string(out, v, {nl}, False)"]
            elif f.type is STRING:
                lines.append(f"_write_string(out, o.{f.name}, {nl}, {fx})")
            elif f.type is BYTES:
                lines.append(f"_write_bytes(out, o.{f.name}, {nl}, {fx})")
            elif isinstance(f.type, Array):
                lines += self._array_encode(f, nl, version, fx)
            else:
                raise TypeError(f"no encoder for {f.type!r}")
        if fx:
            lines += ["f = '(tagged fields)'", "out.append(0)"]
        body = "\n".join("        " + line for line in lines) or "        pass"
        return (
            f"def {name}(o, out, holes):\n"
            "    f = i = None\n"
            "    try:\n"
            f"{body}\n"
            "    except EncodeError as exc:\n"
            "        raise exc.within(_path(f, i)) from None\n"
            "    except (_struct_error, ValueError, TypeError, AttributeError, OverflowError) as exc:\n"
            "        raise EncodeError(_path(f, i), str(exc)) from None\n"
        )

    def _array_encode(self, f: Field, nl: bool, version: int, fx: bool) -> list[str]:
        item = f.type.item
        null = (f"    _write_count(out, None, {fx})" if nl
                else "    raise ValueError('null where null is not allowed')")
        lines = [f"v = o.{f.name}", "if v is None:", null, "else:",
                 f"    _write_count(out, len(v), {fx})"]
        if item is INT32:
            return [*lines, "    out += _pack(f'>{len(v)}i', *v)"]
        if isinstance(item, Struct):
            write = f"_enc_{item.name}_{version}(x, out, holes)"
        elif item is STRING:
            write = f"_write_string(out, x, False, {fx})"
        else:
            raise TypeError(f"no array encoder for items of {item!r}")
        return [*lines, "    for i, x in enumerate(v):", f"        {write}", "    i = None"]


_READERS = {"string": "_read_string(buf, pos, {nl}, True)",
            "bytes": "_read_bytes(buf, pos, {nl}, True)",
            "records": "_read_records(buf, pos, True)"}
_SLICES = {"string": "str(buf[pos:end], 'utf-8')", "bytes": "bytes(buf[pos:end])",
           "records": "buf[pos:end]"}


def _variable_decode(type_: Variable, var: str, nl: bool, fx: bool) -> list[str]:
    """Read a string, bytes or records field into ``var``. Non-flexible versions inline it
    (a string read is three Python calls otherwise); errors come from the primitives."""
    if fx:
        return [f"{var}, pos = " + _READERS[type_.name].format(nl=nl)]
    if type_ is RECORDS:
        nl = True
    fmt = "_I16" if type_ is STRING else "_I32"
    return [f"n, = {fmt}.unpack_from(buf, pos)", f"pos += {type_.size}", "if n < 0:",
            f"    _check_null(n, {nl}, '{type_.name} length')", f"    {var} = None", "else:",
            "    end = pos + n", "    if end > len(buf):", "        raise _overrun(buf, pos, n)",
            f"    {var} = {_SLICES[type_.name]}", "    pos = end"]


def _define(source: str, name: str, ns: dict) -> Any:
    exec(source, ns)  # noqa: S102 -- source generated above from the message tables
    return ns[name]


def _bad_value(struct_name: str, field: str, what: str, value: object) -> None:
    shown = repr(value)
    if len(shown) > 60:
        shown = type(value).__name__
    raise ValueError(f"{struct_name}.{field} must be {what}, got {shown}")
