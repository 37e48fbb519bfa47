"""Sluice client library: ``Producer``, ``Consumer`` and ``Admin`` on trio (``client.sync``
has blocking twins), plus the record types they exchange."""

from client.admin import Admin
from client.consumer import Consumer
from client.producer import DeliveryHandle, Producer
from client.records import Record, RecordMetadata

__all__ = ["Admin", "Consumer", "DeliveryHandle", "Producer", "Record", "RecordMetadata"]
