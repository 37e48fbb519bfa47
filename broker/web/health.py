"""``/health``, ``/health/live`` and ``/health/ready``: for supervisors and containers.

* live: the broker's event loop answers (200; nothing else is checked -- a process that can
  answer should not be restarted).
* ready: it serves requests -- 200 while serving, 503 while it is still opening its data
  directory (``starting``: recovery after a crash can take minutes) and once it is shutting
  down (draining).
  Partitions refused at startup (offline) do not make it unready, since every other partition
  is served; they make its status ``degraded`` and are listed.

While starting, ``web.starting.StartingAdapter`` answers these three paths (and 503 to every
other). Each answers JSON: ``status`` (``starting``, ``ok``, ``degraded`` or ``stopping``),
``live``, ``ready``, the broker id, uptime and the offline partitions with the reason each
was refused.
"""

from __future__ import annotations

import time

from sluice.broker.web.http import HttpRequest, HttpResponse
from sluice.broker.web.view import BrokerView


def health(view: BrokerView) -> dict:
    broker = view.broker
    offline = [
        {"topic": topic, "partition": partition, "reason": reason}
        for (topic, partition), (_, reason) in sorted(broker.store.offline.items())
    ]
    status = "stopping" if broker.stopping else "degraded" if offline else "ok"
    return _report(status, not broker.stopping, broker.broker_id, view.started, offline)


def starting(broker_id: int, since: float) -> dict:
    """The report while the data directory is being opened (``since``: when that began)."""
    return _report("starting", False, broker_id, since, [])


def _report(status: str, ready: bool, broker_id: int, since: float, offline: list) -> dict:
    """The one shape every health answer has."""
    return {
        "status": status, "live": True, "ready": ready, "broker_id": broker_id,
        "uptime_s": round(time.time() - since, 3), "offline_partitions": offline,
    }


class Health:
    """The endpoints over one ``BrokerView``."""

    def __init__(self, view: BrokerView) -> None:
        self._view = view

    def ready(self, request: HttpRequest) -> HttpResponse:
        """``/health`` and ``/health/ready``: the whole report; 200 while ready, else 503."""
        report = health(self._view)
        return HttpResponse.of_json(report, 200 if report["ready"] else 503)

    @staticmethod
    def live(request: HttpRequest) -> HttpResponse:
        return HttpResponse.of_json({"status": "live", "live": True})
