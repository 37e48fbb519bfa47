"""One function per Kafka API: ``(context, request header, request)`` in, outcome out.

Outcomes are those of Sluice's handlers (``adapters.sluice.handlers``): a response, a
``Deferred`` or ``Pending`` one, None (a Produce with acks=0), or a raised ``ApiError``,
which the connection answers with the API's error response.
"""

from __future__ import annotations

from collections.abc import Callable

from sluice.broker.adapters.kafka import groups, records, topics
from sluice.broker.adapters.kafka.context import KafkaContext
from sluice.protocol.kafka import RequestHeader

HANDLERS: dict[int, Callable] = {
    0: records.handle_produce,
    1: records.handle_fetch,
    2: records.handle_list_offsets,
    3: topics.handle_metadata,
    8: groups.handle_offset_commit,
    9: groups.handle_offset_fetch,
    10: groups.handle_find_coordinator,
    11: groups.handle_join_group,
    12: groups.handle_heartbeat,
    13: groups.handle_leave_group,
    14: groups.handle_sync_group,
    15: groups.handle_describe_groups,
    16: groups.handle_list_groups,
    18: topics.handle_api_versions,
    19: topics.handle_create_topics,
    20: topics.handle_delete_topics,
    22: records.handle_init_producer_id,
    32: topics.handle_describe_configs,
}


def dispatch(ctx: KafkaContext, header: RequestHeader, request: object):
    """Run the handler of ``header``'s API (every API the protocol layer decodes has one)."""
    return HANDLERS[header.api_key](ctx, header, request)
