"""How the command line writes records and reads them back: text, lossless JSON, kcat-like
format strings, and times given as epoch ms, "15m" (ago) or ISO 8601.

JSON, one object per record and line::

    {"topic": "orders", "partition": 0, "offset": 42, "timestamp": 1714564800000,
     "time": "2024-05-01T12:00:00.000Z", "key": "alice", "value": {"base64": "/w=="},
     "headers": [["source", "web"], ["source", "batch"]]}

A key, value or header value that is valid UTF-8 is a JSON string; any other bytes are an
object ``{"base64": "..."}``; a missing key or value is ``null``. So a string always means
exactly its UTF-8 bytes and nothing is ambiguous. Headers are a list of ``[key, value]``
pairs, in order, repeats kept. ``sluice produce --format json`` reads the same objects.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sluice.client.escapes import unescape

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_TIMESTAMP = 2**63 - 1  # record timestamps are int64 ms, never negative


# -- times -----------------------------------------------------------------------------------


def parse_time(text: str, now_ms: int | None = None) -> int:
    """A time as epoch ms: ``1714564800000``, ``15m`` (ago: ms/s/m/h/d), or ISO 8601
    (``2024-05-01T12:00:00Z``; without a zone, local time). May be negative (before 1970)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    match = RELATIVE.match(text)
    if match:
        return now_ms - int(float(match.group(1)) * UNITS_MS[match.group(2)])
    try:
        return round(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise ValueError(
            f"cannot read the time {text!r} (use epoch ms, 30s/15m/2h/1d ago, or ISO 8601)"
        ) from None


def iso_time(ms: int) -> str | None:
    """``2024-05-01T12:00:00.000Z`` (UTC), or None for a timestamp beyond the calendar."""
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# -- JSON --------------------------------------------------------------------------------------


def bytes_to_json(data: bytes | None):
    """A string if ``data`` is UTF-8, else ``{"base64": ...}``; None stays None."""
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def bytes_from_json(value, what: str) -> bytes | None:
    """The inverse of ``bytes_to_json``; ``ValueError`` naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError:
            raise ValueError(f"{what}: {value['base64'][:40]!r} is not valid base64") from None
    raise ValueError(f"{what} must be a string, {{\"base64\": \"...\"}} or null, got {value!r:.60}")


def record_to_json(r) -> dict:
    return {
        "topic": r.topic, "partition": r.partition, "offset": r.offset,
        "timestamp": r.timestamp, "time": iso_time(r.timestamp),
        "key": bytes_to_json(r.key), "value": bytes_to_json(r.value),
        "headers": [[k, bytes_to_json(v)] for k, v in r.headers],
    }


def record_from_json(text: bytes, where: str) -> dict:
    """One JSON object as ``sluice tail --format json`` writes it, as the fields it sets of
    ``key``, ``value``, ``headers``, ``timestamp`` and ``partition`` (others are ignored).
    ``ValueError`` names ``where`` (e.g. "record 3") and what is wrong."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(obj).__name__}")
    out: dict = {}
    for name in ("key", "value"):
        if name in obj:
            out[name] = bytes_from_json(obj[name], f"{where}: {name}")
    if "headers" in obj:
        headers = obj["headers"]
        if not isinstance(headers, list) or not all(
            isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) for h in headers
        ):
            raise ValueError(f"{where}: headers must be a list of [key, value] pairs")
        if any(v is None for _, v in headers):
            raise ValueError(f"{where}: a header value must be a string or {{\"base64\": ...}}")
        out["headers"] = [(k, bytes_from_json(v, f"{where}: header {k!r}")) for k, v in headers]
    for name, high in (("timestamp", MAX_TIMESTAMP), ("partition", 2**31 - 1)):
        if name in obj:
            value = obj[name]
            if type(value) is not int or not 0 <= value <= high:
                raise ValueError(f"{where}: {name} must be an integer in 0..{high}, "
                                 f"got {value!r:.40}")
            out[name] = value
    return out


# -- output ------------------------------------------------------------------------------------

Render = Callable[[list], bytes]


def renderer(fmt: str) -> Render:
    """The function turning a list of ``Record`` into output bytes, for ``--format``:
    ``text``, ``json``, or a format string (``ValueError`` if it cannot be read)."""
    if fmt == "text":
        return lambda records: b"".join((r.value or b"") + b"\n" for r in records)
    if fmt == "json":
        return lambda records: "".join(
            json.dumps(record_to_json(r), ensure_ascii=False) + "\n" for r in records
        ).encode()
    if "%" not in fmt:
        raise ValueError(f"--format must be text, json or a format string with %-fields, got {fmt!r}")
    pieces = compile_format(fmt)
    return lambda records: b"".join(b"".join(p(r) for p in pieces) for r in records)


def _size(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


FIELDS: dict[str, Callable] = {
    "t": lambda r: r.topic.encode(),
    "p": lambda r: str(r.partition).encode(),
    "o": lambda r: str(r.offset).encode(),
    "T": lambda r: str(r.timestamp).encode(),
    "D": lambda r: (iso_time(r.timestamp) or str(r.timestamp)).encode(),
    "k": lambda r: r.key or b"",
    "s": lambda r: r.value or b"",
    "K": lambda r: _size(r.key),
    "S": lambda r: _size(r.value),
    "h": lambda r: b",".join(k.encode() + b"=" + v for k, v in r.headers),
}
FIELD = re.compile(r"%(.?)", re.S)


def compile_format(fmt: str) -> list[Callable]:
    """A kcat-like format string as a list of functions of a record, one per piece."""
    pieces: list[Callable] = []
    pos = 0
    for match in FIELD.finditer(fmt):
        literal = unescape(fmt[pos : match.start()])
        if literal:
            pieces.append(lambda r, literal=literal: literal)
        code = match.group(1)
        if code == "%":
            pieces.append(lambda r: b"%")
        elif code in FIELDS:
            pieces.append(FIELDS[code])
        else:
            known = " ".join(f"%{c}" for c in FIELDS)
            raise ValueError(f"--format: unknown field %{code} (known: {known}, %%)")
        pos = match.end()
    literal = unescape(fmt[pos:])
    if literal:
        pieces.append(lambda r: literal)
    return pieces
