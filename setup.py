"""The compiled record codec (``sluice.protocol._records``); everything else is in pyproject.

The extension is optional: where it cannot be built (no C compiler or Python headers) the
install still succeeds and ``sluice.protocol.codec`` falls back to the pure-Python codec
with a warning.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sluice.protocol._records",
            sources=["protocol/_records.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
