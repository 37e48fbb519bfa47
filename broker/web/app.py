"""``WebAdapter``: the broker's HTTP port -- what each path answers, and who may ask.

Served on the broker's own event loop, like the protocol adapters: the listener admits each
connection against the same descriptor budget and hands it over as a ``Channel``;
``HttpConnection`` (h11) reads the requests and this module routes them.

Paths: ``/metrics`` (Prometheus), ``/health`` ``/health/live`` ``/health/ready``, the
console at ``/`` (static files under ``/static/``) and its JSON API under ``/api/``.

Who may ask (``Guard``; docs in the README, "The HTTP port"). The port can create topics and
produce, as anyone who reaches the Sluice port can; what it adds is a browser's reach, so:

* bound to a loopback address (the default: the broker's host, 127.0.0.1), every request's
  ``Host`` must name a loopback address too -- a page on another site that re-binds its DNS
  name to 127.0.0.1 (DNS rebinding) is refused (403);
* requests that change something (``POST``) must carry a JSON body (415 otherwise), which no
  HTML form can send and which a script on another site can send only after a CORS preflight
  that this port never grants; and if they say where they come from (``Origin``), it must be
  this port's own address (403);
* ``http_read_only = true`` refuses every ``POST`` (403): metrics, health and a console that
  only looks.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import re
from collections.abc import Callable
from typing import NamedTuple, NoReturn
from urllib.parse import urlsplit

import trio
from sluice.broker.config import BrokerConfig
from sluice.broker.io.channel import Channel
from sluice.broker.web.assets import Assets
from sluice.broker.web.console import ConsoleApi
from sluice.broker.web.health import Health
from sluice.broker.web.http import (
    EventStream,
    HttpConnection,
    HttpError,
    HttpRequest,
    HttpResponse,
    refusal_bytes,
)
from sluice.broker.web.metrics import Metrics
from sluice.broker.web.tail import Tail
from sluice.broker.web.view import BrokerView
from sluice.protocol.errors import ApiError

log = logging.getLogger("sluice.web")

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class Route(NamedTuple):
    method: str
    pattern: re.Pattern[str]  # the whole path; its groups are the handler's arguments
    handler: Callable
    writes: bool  # changes something: only with a JSON body, never when read-only


def route(method: str, path: str, handler: Callable) -> Route:
    """A route for ``path``, where ``{name}`` matches one path segment."""
    pattern = re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + r"\Z")
    return Route(method, pattern, handler, method == "POST")


class Guard:
    """Who may ask what (see the module docstring)."""

    def __init__(self, bound_host: str, read_only: bool) -> None:
        self.loopback_only = is_loopback(bound_host)
        self.read_only = read_only

    @classmethod
    def of(cls, config: BrokerConfig) -> Guard:
        """The guard of ``config``'s HTTP port."""
        return cls(config.http_host or config.host, config.http_read_only)

    def check(self, request: HttpRequest, writes: bool) -> None:
        """Raise ``HttpError`` unless ``request`` may be served."""
        host = request.headers.get("host", "")
        if self.loopback_only and not is_loopback(_hostname(host)):
            raise HttpError(403, f"this port is bound to a loopback address and answers only "
                                 f"requests for one (Host: {host or 'missing'})")
        if not writes:
            return
        if self.read_only:
            raise HttpError(403, "this broker's HTTP port is read-only (http_read_only = true)")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, "send the request body as JSON (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            raise HttpError(403, f"cross-origin requests are refused (Origin {origin}, Host {host})")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The host of a ``Host`` header: ``name``, ``name:port``, ``[v6]`` or ``[v6]:port``."""
    if host_header.startswith("["):
        return host_header[: host_header.find("]") + 1]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class HttpAdapter:
    """An ``io.listener.Adapter`` speaking HTTP: each request goes to the first of ``routes``
    whose path and method match, once ``guard`` allows it; connections beyond the budget are
    told 503."""

    def __init__(self, guard: Guard, routes: list[Route]) -> None:
        self.guard = guard
        self.routes = routes

    async def serve(self, channel: Channel) -> None:
        """Serve one connection until it ends."""
        try:
            await HttpConnection(channel).serve(self.handle)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("http connection %s dropped: %s", channel.peer, exc)

    def refusal(self, error: ApiError) -> bytes:
        """What a connection beyond the broker's connection budget is told before closing."""
        return refusal_bytes(503, error.message)

    async def handle(self, request: HttpRequest) -> HttpResponse | EventStream:
        """The answer to ``request`` (``HttpError`` for a refusal)."""
        allowed = []
        for candidate in self.routes:
            found = candidate.pattern.match(request.path)
            if found is None:
                continue
            if candidate.method != request.method:
                allowed.append(candidate.method)
                continue
            self.guard.check(request, candidate.writes)
            answer = candidate.handler(request, **found.groupdict())
            return await answer if inspect.isawaitable(answer) else answer
        self.unmatched(request, allowed)

    def unmatched(self, request: HttpRequest, allowed: list[str]) -> NoReturn:
        """No route answers ``request``: 405 if its path answers other methods (``allowed``),
        else 404."""
        if allowed:
            raise HttpError(405, f"{request.path} answers {', '.join(allowed)} only",
                            (("Allow", ", ".join(allowed)),))
        raise HttpError(404, f"nothing at {request.path}")


class WebAdapter(HttpAdapter):
    """The HTTP port on one broker."""

    def __init__(self, view: BrokerView) -> None:
        health = Health(view)
        assets = Assets()
        console = ConsoleApi(view)
        super().__init__(Guard.of(view.config), [
            route("GET", "/metrics", Metrics(view).scrape),
            route("GET", "/health", health.ready),
            route("GET", "/health/ready", health.ready),
            route("GET", "/health/live", health.live),
            route("GET", "/", assets.index),
            route("GET", "/static/{name}", assets.file),
            route("GET", "/api/broker", console.broker),
            route("GET", "/api/topics", console.topics),
            route("POST", "/api/topics", console.create_topic),
            route("POST", "/api/topics/{name}/records", console.produce),
            route("GET", "/api/topics/{name}/tail", Tail(view.broker).open),
            route("GET", "/api/groups", console.groups),
        ])
