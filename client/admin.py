"""The trio ``Admin``: topics, offsets and consumer groups. Every operation is a procedure of
``client.admin_ops.AdminBase``, shared with the blocking ``Admin``; here each is awaited."""

from __future__ import annotations

import trio
from sluice.client import admin_ops as ops
from sluice.client.lifecycle import ClientLifecycle
from sluice.client.procedure import expose
from sluice.client.trio_driver import awaited


class Admin(ops.AdminBase, ClientLifecycle):
    """``async with Admin(bootstrap) as admin: await admin.create_topic("orders", 3)``
    (options: ``AdminBase``)."""

    def __init__(self, *args, **options) -> None:
        super().__init__(*args, clock=trio.current_time, **options)


expose(Admin, ops.AdminBase.OPERATIONS, awaited)
