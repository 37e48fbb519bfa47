"""The broker's layers, enforced: what each package may import (docs/DESIGN-NOTES.md, "Layers
inside the broker"). An AST walk over every module of broker/, so a forbidden import fails
here whether or not any test runs the code that has it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BROKER = Path(__file__).resolve().parents[2] / "broker"

# The wire: Sluice's messages and connections, the frame layer, the Kafka protocol.
WIRE = ("sluice.protocol.messages", "sluice.protocol.connection", "sluice.protocol.framing",
        "sluice.protocol.kafka")
ABOVE_DOMAIN = ("sluice.broker.adapters", "sluice.broker.io", "sluice.broker.web",
                "sluice.broker.server", "sluice.broker.__main__", "sluice.broker.descriptors")

FORBIDDEN = {
    # Synchronous files and bytes; knows nothing of trio, the broker above it or the wire.
    "storage": (*WIRE, *ABOVE_DOMAIN, "sluice.broker.domain", "trio", "socket"),
    # Topics, partitions, producers, groups: no wire types, no sockets, no connections.
    "domain": (*WIRE, *ABOVE_DOMAIN, "socket"),
    # Protocols on the domain: channels through their interface only, never storage directly.
    "adapters": ("sluice.broker.storage", "sluice.broker.web", "sluice.broker.io.sockets",
                 "sluice.broker.io.streams",
                 "sluice.broker.io.listener", "sluice.broker.io.pagecache",
                 "sluice.broker.server", "sluice.broker.__main__", "socket"),
    # Connections: bytes and file slices, no domain, no adapters, no storage.
    "io": ("sluice.broker.domain", "sluice.broker.adapters", "sluice.broker.storage",
           "sluice.broker.server", "sluice.broker.web"),
    # The HTTP port (metrics, health, console): reads the domain and the channels' counters;
    # its connections are channels; no storage, no wire protocol, no other adapter.
    "web": (*WIRE, "sluice.broker.storage", "sluice.broker.adapters", "sluice.broker.io.sockets",
            "sluice.broker.io.streams", "sluice.broker.io.listener", "sluice.broker.io.pagecache",
            "sluice.broker.server", "sluice.broker.__main__", "sluice.broker.descriptors",
            "socket"),
    # The composition root (server, config, the entry point, descriptors): no wire types.
    "root": WIRE,
}
# System calls of the raw-socket fast path: one module only.
SOCKET_CALLS = {"readv", "sendfile"}
SOCKET_MODULE = BROKER / "io" / "sockets.py"


def layer_of(path: Path) -> str:
    parts = path.relative_to(BROKER).parts
    return parts[0] if len(parts) > 1 else "root"


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every import; ``from a import b`` counts as ``a`` and ``a.b``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports are not used in the broker"
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


MODULES = sorted(BROKER.rglob("*.py"))


def test_every_layer_has_modules():
    assert {layer_of(path) for path in MODULES} == set(FORBIDDEN)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(BROKER)))
def test_imports_respect_the_layers(path):
    tree = ast.parse(path.read_text(), str(path))
    layer = layer_of(path)
    bad = [f"line {line}: {module}" for line, module in imported(tree)
           if any(matches(module, prefix) for prefix in FORBIDDEN[layer])]
    assert not bad, f"{layer} module {path.name} imports what its layer may not: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(BROKER)))
def test_socket_readv_and_sendfile_live_in_one_module(path):
    if path == SOCKET_MODULE:
        return
    tree = ast.parse(path.read_text(), str(path))
    calls = [f"line {node.lineno}: {node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in SOCKET_CALLS]
    assert not calls, f"{path.name} uses {calls}; only io/sockets.py may"


def test_the_rules_catch_a_forbidden_import():
    tree = ast.parse("from sluice.protocol import messages as m\nimport os\nos.sendfile(1, 2, 0, 3)")
    assert any(matches(module, "sluice.protocol.messages") for _, module in imported(tree))
