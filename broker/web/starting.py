"""The HTTP port while the broker opens its data directory.

Recovery after a crash re-validates the logs' tails and can take minutes on a big data
directory. A supervisor probing ``/health/live`` must not take that silence for a dead
process and restart it (which would start the recovery again, forever), so the HTTP port is
bound first and answers from the start: ``/health/live`` 200, ``/health`` and
``/health/ready`` 503 with ``status: starting``, every other path 503 with ``Retry-After``.
``serve`` swaps in the ``WebAdapter`` once the broker is open (connections still open are
closed then; clients reconnect).

Nothing here touches the broker, which does not exist yet; connections are capped by
``StartupAdmission``, since the descriptor budget is only known once the logs are open.
"""

from __future__ import annotations

import time
from typing import NoReturn

from sluice.broker.config import BrokerConfig
from sluice.broker.web.app import Guard, HttpAdapter, route
from sluice.broker.web.health import starting
from sluice.broker.web.http import HttpError, HttpRequest, HttpResponse
from sluice.protocol.errors import ApiError, TooManyConnectionsError

STARTUP_CONNECTIONS = 16  # open at once while starting: probes and a curl or two
RETRY_AFTER_S = 1


class StartingAdapter(HttpAdapter):
    """The HTTP port of a broker still opening its data directory (module docstring)."""

    def __init__(self, config: BrokerConfig) -> None:
        self._broker_id = config.broker_id
        self._since = time.time()
        super().__init__(Guard.of(config), [
            route("GET", "/health", self.ready),
            route("GET", "/health/ready", self.ready),
            route("GET", "/health/live", self.live),
        ])

    def ready(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.of_json(starting(self._broker_id, self._since), 503)

    def live(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.of_json(starting(self._broker_id, self._since))

    def unmatched(self, request: HttpRequest, allowed: list[str]) -> NoReturn:
        raise HttpError(503, "the broker is starting: it is opening (recovering) its data "
                             "directory", (("Retry-After", str(RETRY_AFTER_S)),))


class StartupAdmission:
    """At most ``limit`` connections at once (an ``io.listener.Admission``)."""

    def __init__(self, limit: int = STARTUP_CONNECTIONS) -> None:
        self.limit = limit
        self.open = 0

    def admit_connection(self) -> ApiError | None:
        if self.open >= self.limit:
            return TooManyConnectionsError(
                f"the broker is starting and takes at most {self.limit} HTTP connections "
                "until it is open")
        self.open += 1
        return None

    def release_connection(self) -> None:
        self.open -= 1
