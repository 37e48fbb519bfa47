"""Sluice client library: ``Producer``, ``Consumer`` and ``Admin`` on trio (``sluice.client.sync``
has blocking twins), plus the record types they exchange.

The names below are loaded on first use, so ``sluice.client.sync`` and the ``sluice`` command
line do not import trio unless they need it.
"""

from sluice.protocol.lazy import lazy_exports

_HOMES = {
    "Admin": "sluice.client.admin",
    "Consumer": "sluice.client.consumer",
    "DeliveryHandle": "sluice.client.producer",
    "Producer": "sluice.client.producer",
    "Record": "sluice.client.records",
    "RecordMetadata": "sluice.client.records",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
