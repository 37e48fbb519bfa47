"""The blocking ``Admin``: topics, offsets and consumer groups. Every operation is a procedure
of ``client.admin_ops.AdminBase``, shared with the trio ``Admin``; here the blocking driver
runs each to its end. Importing it pulls in neither trio nor the producer and consumer
machinery (the command line's short commands use it)."""

from __future__ import annotations

import time

from sluice.client import admin_ops as ops
from sluice.client.procedure import connect, expose
from sluice.client.sync_driver import SyncDriver, blocking


class Admin(ops.AdminBase):
    """Blocking admin: ``with Admin(bootstrap) as admin: admin.create_topic("t", 3)``
    (options: ``AdminBase``)."""

    def __init__(self, *args, **options) -> None:
        super().__init__(*args, clock=time.monotonic, **options)
        self._driver = SyncDriver(self.net, [])

    def __enter__(self) -> Admin:
        try:
            self._driver.run(connect())
        except BaseException:
            self._driver.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._driver.close()



expose(Admin, ops.AdminBase.OPERATIONS, blocking)
