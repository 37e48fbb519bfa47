"""Backslash escapes in command-line text (``\\n \\r \\t \\0 \\\\ \\xHH``), as kcat reads them:
for delimiters, separators and format strings typed in a shell."""

from __future__ import annotations

import re

ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.?)", re.S)


def unescape(text: str) -> bytes:
    """The bytes ``text`` stands for: its escapes replaced, the rest encoded as UTF-8.

    ``ValueError`` names an unknown escape."""
    out = bytearray()
    pos = 0
    for match in ESCAPE.finditer(text):
        out += text[pos : match.start()].encode()
        code = match.group(1)
        if code in ESCAPES:
            out += ESCAPES[code]
        elif code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif not code:
            raise ValueError(f"a lone \\ ends {text!r} (write \\\\ for a backslash)")
        else:
            raise ValueError(
                f"unknown escape \\{code} in {text!r} (known: \\n \\r \\t \\0 \\\\ \\xHH)")
        pos = match.end()
    out += text[pos:].encode()
    return bytes(out)
