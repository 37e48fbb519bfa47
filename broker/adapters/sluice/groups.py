"""The group APIs: Sluice's wire messages <-> the domain's ``GroupCoordinator``."""

from __future__ import annotations

from sluice.broker.adapters.sluice.context import RequestContext
from sluice.protocol import messages as m


def handle_group_heartbeat(ctx: RequestContext, request: m.GroupHeartbeatRequest):
    return ctx.broker.groups.heartbeat(request, ctx.client_id)


def handle_commit_offsets(ctx: RequestContext, request: m.CommitOffsetsRequest):
    return ctx.broker.groups.commit(request)


def handle_fetch_offsets(ctx: RequestContext, request: m.FetchOffsetsRequest):
    return ctx.broker.groups.fetch_offsets(request)


def handle_list_groups(ctx: RequestContext, request: m.ListGroupsRequest):
    return ctx.broker.groups.list_groups(request)


def handle_describe_groups(ctx: RequestContext, request: m.DescribeGroupsRequest):
    return ctx.broker.groups.describe_groups(request)


def handle_delete_groups(ctx: RequestContext, request: m.DeleteGroupsRequest):
    return ctx.broker.groups.delete_groups(request)
