"""Sluice client library: ``Producer``, ``Consumer`` and ``Admin`` on trio (``sluice.client.sync``
has blocking twins), plus the record types they exchange."""

from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.producer import DeliveryHandle, Producer
from sluice.client.records import Record, RecordMetadata

__all__ = ["Admin", "Consumer", "DeliveryHandle", "Producer", "Record", "RecordMetadata"]
