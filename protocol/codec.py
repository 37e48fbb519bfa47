"""The record codec in use: the compiled ``_records`` extension, or the pure-Python reference.

``pip install`` builds the extension (a C compiler and Python headers are needed); where it
could not be built, importing this module warns once and uses ``records_ref``, which gives the
same results about ten times slower.
"""

from __future__ import annotations

import warnings

try:
    from sluice.protocol._records import decode_records_into, encode_records

    COMPILED = True
except ImportError:  # pragma: no cover - exercised by test_codec in a subprocess
    from sluice.protocol.records_ref import decode_records_into, encode_records

    COMPILED = False
    warnings.warn(
        "sluice.protocol._records (the compiled record codec) is not built, so records are "
        "encoded and decoded in pure Python, about 10x slower; reinstall with a C compiler "
        "and Python headers present (pip install -e .) to build it",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = ["COMPILED", "decode_records_into", "encode_records"]
