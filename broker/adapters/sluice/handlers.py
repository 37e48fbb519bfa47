"""One function per API of Sluice's protocol: request in, outcome out.

Handlers run on the session's reader task, in request order, so anything that must happen in
order -- appends above all -- happens inline, or in a ``Pending`` the reader awaits before it
reads the next request (an append that waits its partition's turn or is written by a worker
thread). Work that waits (an ``acks=all`` commit, a long-polling fetch) is returned as a
``Deferred``; the session's writer awaits it when that response's turn comes, so responses
stay in request order while later requests are already being read and appended (that
overlap is what lets one connection's pipelined ``acks=all`` produces share fsyncs).

An outcome is a response, a ``Deferred`` or ``Pending`` one, or None (``acks=0``: no answer);
a handler raises ``ApiError`` to answer with an error response.
"""

from __future__ import annotations

from collections.abc import Callable

from sluice.broker.adapters.sluice.context import RequestContext
from sluice.broker.adapters.sluice.groups import (
    handle_commit_offsets,
    handle_delete_groups,
    handle_describe_groups,
    handle_fetch_offsets,
    handle_group_heartbeat,
    handle_list_groups,
)
from sluice.broker.adapters.sluice.records import (
    handle_fetch,
    handle_init_producer_id,
    handle_list_offsets,
    handle_produce,
)
from sluice.broker.adapters.sluice.topics import (
    handle_alter_topics,
    handle_create_topics,
    handle_delete_topics,
    handle_describe_topics,
    handle_handshake,
    handle_metadata,
)
from sluice.protocol import messages as m
from sluice.protocol.errors import InvalidRequestError

HANDLERS: dict[type, Callable] = {
    m.HandshakeRequest: handle_handshake,
    m.MetadataRequest: handle_metadata,
    m.CreateTopicsRequest: handle_create_topics,
    m.DeleteTopicsRequest: handle_delete_topics,
    m.DescribeTopicsRequest: handle_describe_topics,
    m.ProduceRequest: handle_produce,
    m.FetchRequest: handle_fetch,
    m.ListOffsetsRequest: handle_list_offsets,
    m.InitProducerIdRequest: handle_init_producer_id,
    m.GroupHeartbeatRequest: handle_group_heartbeat,
    m.CommitOffsetsRequest: handle_commit_offsets,
    m.FetchOffsetsRequest: handle_fetch_offsets,
    m.ListGroupsRequest: handle_list_groups,
    m.DescribeGroupsRequest: handle_describe_groups,
    m.AlterTopicsRequest: handle_alter_topics,
    m.DeleteGroupsRequest: handle_delete_groups,
}


def dispatch(ctx: RequestContext, request: object):
    """Run the handler for ``request``: its outcome (see the module docstring)."""
    handler = HANDLERS.get(type(request))
    if handler is None:
        raise InvalidRequestError(f"{type(request).__name__} is not served by this broker")
    return handler(ctx, request)
