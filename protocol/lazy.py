"""Package attributes loaded on first use (PEP 562), for package ``__init__`` modules whose
names live in submodules: importing one submodule then costs only that submodule."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, homes: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for ``package`` that load each name of ``homes``
    (name -> the module defining it) from its module when first asked for."""

    def __getattr__(name: str):
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    def __dir__() -> list[str]:
        return sorted([*import_module(package).__dict__, *homes])

    return __getattr__, __dir__
