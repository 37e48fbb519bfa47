"""The client's connections to brokers, sans-IO: which to open, what to write, what each
answer is for and by when it must come. The drivers (``client.trio_driver``,
``client.sync_driver``) only move the bytes and report the time.

* A ``Call`` is one request and what becomes of its answer (``on_answer``, a ``waiter`` for
  a trio task).
* A ``Link`` is one socket's worth of protocol: a ``ClientConnection``, the calls awaiting
  answers in request order, the bytes still to write. The driver owns the socket: it
  connects the links in ``opening``, writes a link's bytes with ``Link.flush``, feeds what it
  reads to ``received`` and closes the links in ``closing``.
* A ``Channel`` is the client's way to one broker for one purpose: its current link, the
  calls waiting for a link to be ready, and the reconnect policy. Group requests get a
  channel of their own (purpose ``"group"``), so they never wait behind a long poll.

Invariants: answers come in request order, so each link matches them to ``sent`` in order;
every call written has a deadline (``request_timeout_s`` after it was written, or its own
``timeout_s``) never earlier than the one written before it, and ``tick`` fails a link whose
oldest call (or unwritten byte) outlives it -- the answers behind it could no longer be
matched, so the link is closed and every call on it fails. A link is usable once the broker
has answered its handshake. A lost link is reopened when something needs it: at once, then
with backoff (``RECONNECT_DELAY_S`` doubling up to ``RECONNECT_DELAY_MAX_S``) until
``reconnect_timeout_s`` after the loss; then its waiting calls fail with
``BrokerUnreachableError`` and the ``watchers`` are told. The very first connection of a
client tries each bootstrap address once, so a wrong address fails at once.

Brokers are learned from metadata (``ClusterMetadata``); a request for no broker in
particular goes to a ready channel if there is one, else to a known broker, else to the
bootstrap addresses, whose channel becomes the channel of the broker its handshake names.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from itertools import islice

from sluice.client.bootstrap import describe_connect_error, parse_bootstrap
from sluice.client.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    ConnectionLostError,
    RequestTimeoutError,
    raise_for_error,
)
from sluice.client.routing import Address, ClusterMetadata, TopicMeta
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection
from sluice.protocol.errors import (
    RemoteProtocolError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from sluice.protocol.framing import CLOSED, NEED_DATA

RECONNECT_DELAY_S = 0.05
RECONNECT_DELAY_MAX_S = 1.0
JOIN_BELOW = 64 * 1024  # a request smaller than this in all is written as one piece
WRITE_PIECES = 64  # pieces handed to one writev
IDLE, WAITING, OPENING, READY = "idle", "waiting", "opening", "ready"


class Call:
    """One request and what becomes of its answer.

    ``on_answer(response, error)`` runs the moment the answer (or the failure) is known, in
    the driver's reader; it must not block. A request that gets no answer (``acks=0``) is
    answered with ``(None, None)`` once written. ``waiter`` is the driver's to set (a trio
    event): the network lists the call in ``completed`` when it is done.
    """

    __slots__ = ("request", "on_answer", "timeout_s", "deadline", "response", "error", "done",
                 "waiter")

    def __init__(self, request, on_answer: Callable | None = None,
                 timeout_s: float | None = None) -> None:
        self.request = request
        self.on_answer = on_answer
        self.timeout_s = timeout_s
        self.deadline = math.inf
        self.response = None
        self.error: BaseException | None = None
        self.done = False
        self.waiter = None

    def result(self):
        """The response; raises the failure, or the response's top-level error."""
        if self.error is not None:
            raise self.error
        if self.response is not None:
            raise_for_error(self.response)
        return self.response


class Link:
    """One connection (socket) of a channel: protocol state, calls awaiting answers, bytes
    to write (``[view, deadline, call]``, ``call`` on a request's last piece)."""

    __slots__ = ("channel", "address", "proto", "sent", "out", "deadline", "ready", "closed",
                 "connected")

    def __init__(self, channel: Channel, address: Address, deadline: float) -> None:
        self.channel = channel
        self.address = address
        self.proto = ClientConnection()
        self.sent: deque[Call] = deque()
        self.out: deque[list] = deque()
        self.deadline = deadline  # for the connect and the handshake
        self.connected = False  # the socket is up
        self.ready = False  # the handshake is answered
        self.closed = False

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def receive_buffer(self, size_hint: int) -> memoryview:
        """Where the driver reads the next bytes into (then ``Network.received``)."""
        return self.proto.receive_buffer(size_hint)

    def oldest_deadline(self) -> float:
        """When this link fails unless something comes (or goes) before."""
        if not self.ready:
            return self.deadline
        deadline = self.sent[0].deadline if self.sent else math.inf
        if self.out and self.out[0][1] < deadline:
            return self.out[0][1]
        return deadline


class Channel:
    """The way to one broker (``node``; None: any bootstrap address) for one ``purpose``."""

    __slots__ = ("node", "purpose", "link", "queued", "state", "down_since", "retry_at",
                 "delay", "tried", "errors", "gave_up")

    def __init__(self, node: int | None, purpose: str) -> None:
        self.node = node
        self.purpose = purpose
        self.link: Link | None = None
        self.queued: deque[Call] = deque()  # waiting for a ready link
        self.state = IDLE
        self.down_since: float | None = None  # when this series of attempts started
        self.retry_at = 0.0
        self.delay = RECONNECT_DELAY_S
        self.tried = 0  # addresses tried in this round
        self.errors: list[str] = []  # of this round
        self.gave_up = False  # could not be reopened since it was last ready

    @property
    def ready(self) -> bool:
        return self.state is READY


class Network:
    """Every channel of one client, the cluster metadata they route by, and the work for the
    driver (see the module docstring)."""

    def __init__(self, bootstrap: str, *, client_id: str, clock: Callable[[], float],
                 request_timeout_s: float = 30.0, reconnect_timeout_s: float = 30.0) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.metadata = ClusterMetadata()
        self.channels: dict[tuple[int | None, str], Channel] = {}
        self.opening: list[Link] = []  # for the driver: connect these
        self.closing: list[Link] = []  # for the driver: close their sockets
        self.dirty: list[Link] = []  # for the driver: these have bytes to write
        self.completed: list = []  # for the driver: done things whose waiter to wake
        self.progress = 0  # counts completions, for drivers' generic waits
        # Told ``(channel, error, unreachable)`` when a channel's link is lost, or when it
        # cannot be reopened (``unreachable``): owners reroute or fail what they routed there.
        self.watchers: list[Callable[[Channel, BaseException, bool], None]] = []
        self.patient = False  # a link was ready once: connects try for the reconnect window
        self.closed = False

    # -- for clients --------------------------------------------------------------------------

    def channel(self, node: int | None, purpose: str = "") -> Channel:
        key = (node, purpose)
        channel = self.channels.get(key)
        if channel is None:
            channel = self.channels[key] = Channel(node, purpose)
        return channel

    def any_channel(self, purpose: str = "") -> Channel:
        """A channel for a request no broker in particular must answer: a ready one, else
        one being (re)opened, else a known broker's that did not fail to reopen, else the
        bootstrap addresses' (a cluster that moved is found through them again)."""
        trying = None
        for channel in self.channels.values():
            if channel.purpose == purpose:
                if channel.state is READY:
                    return channel
                if channel.state is not IDLE and trying is None:
                    trying = channel
        if trying is not None:
            return trying
        for node in self.metadata.nodes():
            known = self.channels.get((node, purpose))
            if known is None or not known.gave_up:
                return self.channel(node, purpose)
        return self.channel(None, purpose)

    def submit(self, call: Call, channel: Channel | None = None) -> Call:
        """Send ``call`` on ``channel`` (default: ``any_channel()``) as soon as it is ready."""
        if self.closed:
            self._resolve(call, None, ClientClosedError("the client is closed"))
            return call
        if channel is None:
            channel = self.any_channel()
        if channel.state is READY:
            self._write(channel.link, call)
        else:
            channel.queued.append(call)
            self.use(channel)
        return call

    def connect(self, channel: Channel | None = None) -> Call:
        """A call that is done once ``channel`` (default: ``any_channel()``) is ready, or
        fails (``BrokerUnreachableError``) if it cannot be opened."""
        call = Call(None)
        channel = self.any_channel() if channel is None else channel
        if channel.state is READY:
            self._resolve(call, None, None)
        else:
            channel.queued.append(call)
            self.use(channel)
        return call

    def look_up(self, topic: str):
        """Procedure (``client.procedure``): the topic's ``TopicMeta``, asked now; raises what
        the broker says of it (``UnknownTopicOrPartitionError``...)."""
        response = yield Call(m.MetadataRequest(topics=[topic]))
        meta = self.metadata.update(response).get(topic)
        if isinstance(meta, TopicMeta):
            return meta
        raise meta if meta is not None else UnknownTopicOrPartitionError(
            f"no metadata for topic {topic!r}")

    def use(self, channel: Channel) -> None:
        """Open ``channel`` if it is not open or opening (the first attempt starts now)."""
        if channel.state is IDLE and not self.closed:
            self._attempt(channel, self.clock())

    def bump(self) -> None:
        """Something a generic wait may be waiting for has happened."""
        self.progress += 1

    def close(self) -> None:
        """Close every link; calls still waiting fail with ``ClientClosedError``."""
        self.closed = True
        error = ClientClosedError("the client is closed")
        for channel in list(self.channels.values()):
            if channel.link is not None:
                self._drop(channel.link, error)
            self._fail_queued(channel, error)
            channel.state = IDLE

    # -- for drivers ----------------------------------------------------------------------------

    def connected(self, link: Link) -> None:
        """The driver's socket for ``link`` is up: the handshake goes first."""
        link.connected = True
        handshake = Call(m.HandshakeRequest(client_id=self.client_id),
                         lambda response, error: self._handshaken(link, response))
        self._write(link, handshake, link.deadline)

    def failed(self, link: Link, error: BaseException) -> None:
        """The driver could not connect ``link``, or its socket failed (an ``OSError``)."""
        if link.connected:
            error = ConnectionLostError(f"connection to {link.name} lost: {error}")
        self._lost(link, error)

    def received(self, link: Link, n: int) -> None:
        """``n`` bytes arrived in ``link.receive_buffer``'s view (0: the broker closed)."""
        if link.closed:
            return
        proto = link.proto
        proto.received(n)
        while not link.closed:
            try:
                event = proto.next_event()
            except RemoteProtocolError as exc:
                self._lost(link, ConnectionLostError(f"broker {link.name} broke the protocol: {exc}"))
                return
            if event is NEED_DATA:
                return
            if event is CLOSED:
                self._lost(link, ConnectionLostError(f"broker {link.name} closed the connection"))
                return
            self._resolve(link.sent.popleft(), event.response, None)

    def flush(self, link: Link, writev: Callable[[list], int]) -> bool:
        """Write ``link``'s pending bytes with ``writev(views) -> bytes written``
        (``BlockingIOError``: the socket is full; any other ``OSError`` is the driver's to
        report with ``failed``). Whether all went; if not, flush again once writable."""
        out = link.out
        while out:
            try:
                n = writev([entry[0] for entry in islice(out, WRITE_PIECES)])
            except BlockingIOError:
                return False
            while n:
                entry = out[0]
                size = len(entry[0])
                if n < size:
                    entry[0] = memoryview(entry[0])[n:]
                    break
                n -= size
                out.popleft()
                call = entry[2]
                if call is not None and not call.done and not m.expects_response(call.request):
                    self._resolve(call, None, None)  # no answer comes: written is done
        return True

    def take_opening(self) -> list[Link]:
        links, self.opening = self.opening, []
        return links

    def take_closing(self) -> list[Link]:
        links, self.closing = self.closing, []
        return links

    def take_dirty(self) -> list[Link]:
        links, self.dirty = self.dirty, []
        return links

    def tick(self, now: float) -> None:
        """Fail what is late, reopen what waited long enough."""
        for channel in list(self.channels.values()):
            link = channel.link
            if link is not None and now >= link.oldest_deadline():
                self._timed_out(link)
            elif channel.state is WAITING and now >= channel.retry_at:
                self._attempt(channel, now)

    def wake_time(self) -> float:
        """When ``tick`` has something to do."""
        wake = math.inf
        for channel in self.channels.values():
            link = channel.link
            if link is not None:
                deadline = link.oldest_deadline()
                if deadline < wake:
                    wake = deadline
            elif channel.state is WAITING and channel.retry_at < wake:
                wake = channel.retry_at
        return wake

    # -- inside ---------------------------------------------------------------------------------

    def _resolve(self, call: Call, response, error: BaseException | None) -> None:
        call.response, call.error, call.done = response, error, True
        if call.on_answer is not None:
            call.on_answer(response, error)
        if call.waiter is not None:
            self.completed.append(call)
        self.progress += 1

    def _write(self, link: Link, call: Call, deadline: float | None = None) -> None:
        """Encode ``call`` onto ``link``; its deadline runs from now."""
        _cid, pieces = link.proto.send_request(call.request)
        if deadline is None:
            timeout = self.request_timeout_s if call.timeout_s is None else call.timeout_s
            deadline = self.clock() + timeout
            if link.sent and link.sent[-1].deadline > deadline:  # answers come in order
                deadline = link.sent[-1].deadline
        call.deadline = deadline
        if len(pieces) > 1 and sum(map(len, pieces)) < JOIN_BELOW:
            pieces = [b"".join(pieces)]
        if not link.out:
            self.dirty.append(link)
        out = link.out
        for piece in pieces[:-1]:
            out.append([piece, deadline, None])
        out.append([pieces[-1], deadline, call])
        if m.expects_response(call.request):
            link.sent.append(call)

    def _handshaken(self, link: Link, response) -> None:
        if response is None or link.closed:
            return  # lost meanwhile: the loss is handled by ``_lost``
        channel = link.channel
        if response.error:
            error = error_for_code(response.error, response.message)
            self._lost(link, ConnectionLostError(f"broker {link.name} refused the handshake: {error}"))
            return
        node = response.broker_id
        if channel.node is None:
            if node >= 0:
                self.metadata.found(node, link.address)
                channel = self._rekey(channel, node)
                if channel is None:
                    return
        elif node >= 0 and node != channel.node:  # another broker answers there now
            self.metadata.found_at.pop(channel.node, None)
            self._lost(link, ConnectionLostError(
                f"{link.name} is broker {node}, not broker {channel.node}"))
            return
        link.ready = True
        self.patient = True
        channel.state = READY
        channel.gave_up = False
        channel.down_since = None
        channel.delay = RECONNECT_DELAY_S
        queued, channel.queued = channel.queued, deque()
        for call in queued:
            self._send_queued(link, call)

    def _send_queued(self, link: Link, call: Call) -> None:
        if call.request is None:  # a ``connect`` call: the link is ready
            self._resolve(call, None, None)
        else:
            self._write(link, call)

    def _rekey(self, channel: Channel, node: int) -> Channel | None:
        """A bootstrap channel's handshake named ``node``: it becomes that broker's channel
        (taking over the calls waiting for one not ready yet). If that broker's channel is
        ready already, the calls go there and this link closes; None then."""
        del self.channels[(None, channel.purpose)]
        existing = self.channels.get((node, channel.purpose))
        if existing is not None and existing.state is READY:
            for call in channel.queued:
                self._send_queued(existing.link, call)
            channel.queued.clear()
            self._drop(channel.link, None)
            return None
        if existing is not None:
            channel.queued.extendleft(reversed(existing.queued))
            if existing.link is not None:
                self._drop(existing.link, None)
        channel.node = node
        self.channels[(node, channel.purpose)] = channel
        return channel

    def _addresses(self, channel: Channel) -> list[Address]:
        if channel.node is None:
            return self.bootstrap
        address = self.metadata.address_of(channel.node)
        return [address] if address is not None else []

    def _attempt(self, channel: Channel, now: float) -> None:
        """Connect to the next address of this round."""
        if channel.down_since is None:
            channel.down_since = now
        addresses = self._addresses(channel)
        if not addresses:
            channel.tried = 0
            self._unreachable(channel, BrokerUnreachableError(
                f"no address known for broker {channel.node}"))
            return
        link = Link(channel, addresses[channel.tried % len(addresses)], now + self.request_timeout_s)
        channel.link = link
        channel.state = OPENING
        self.opening.append(link)

    def _timed_out(self, link: Link) -> None:
        timeout = f"{self.request_timeout_s:g} s"
        if not link.connected:
            self._lost(link, RequestTimeoutError(
                f"connect to {link.name} timed out (the request timeout, {timeout})"))
        elif not link.ready:
            self._lost(link, RequestTimeoutError(
                f"no answer to the handshake within the request timeout ({timeout})"))
        elif link.out and (not link.sent or link.out[0][1] <= link.sent[0].deadline):
            stuck = next((entry[2] for entry in link.out if entry[2] is not None), None)
            self._lost(link, ConnectionLostError(f"connection to {link.name} closed: a request "
                                                 "before this one was not written in time"),
                       stuck, RequestTimeoutError(
                f"request to {link.name} not written within its timeout ({timeout}): the "
                "broker stopped reading"))
        else:
            self._lost(link, ConnectionLostError(
                f"connection to {link.name} closed: an earlier request timed out"),
                link.sent[0], RequestTimeoutError(
                f"no answer from {link.name} within the request timeout ({timeout}); "
                "connection closed"))

    def _lost(self, link: Link, error: BaseException, late: Call | None = None,
              late_error: BaseException | None = None) -> None:
        """``link`` is gone: its calls fail with ``error`` (``late`` with ``late_error``). A
        connect that failed counts against the channel's reconnect window; a link that was
        ready is reopened at once if calls wait for it, else on the next use."""
        if link.closed:
            return
        channel = link.channel
        was_ready = link.ready
        self._drop(link, error, late, late_error)
        if not was_ready:
            self._attempt_failed(channel, link, error)
            return
        channel.state = IDLE
        channel.down_since = None  # the reconnect window starts with the next attempt
        for watcher in list(self.watchers):
            watcher(channel, error, False)
        if channel.queued:
            self.use(channel)

    def _drop(self, link: Link, error: BaseException | None, late: Call | None = None,
              late_error: BaseException | None = None) -> None:
        """Close ``link``: the driver closes its socket; its calls fail (the unanswered
        requests that were written in full too: whether they were carried out is unknown)."""
        link.closed = True
        self.closing.append(link)
        if link.channel.link is link:
            link.channel.link = None
        calls = list(link.sent)
        calls += [entry[2] for entry in link.out
                  if entry[2] is not None and not m.expects_response(entry[2].request)]
        link.sent.clear()
        link.out.clear()
        if not link.ready:
            return  # only the handshake was sent: nothing of the client's to fail
        for call in calls:
            if not call.done:
                self._resolve(call, None, late_error if call is late else error)

    def _attempt_failed(self, channel: Channel, link: Link, error: BaseException) -> None:
        """A connect or handshake failed: the next address, else a pause, else give up."""
        now = self.clock()
        channel.errors.append(f"{link.name} ({describe_connect_error(error)})")
        channel.tried += 1
        if channel.tried < len(self._addresses(channel)):
            self._attempt(channel, now)
            return
        channel.tried = 0
        give_up = channel.down_since + (self.reconnect_timeout_s if self.patient else 0.0)
        if now + channel.delay > give_up or self.closed:
            self._unreachable(channel, BrokerUnreachableError(
                f"cannot connect to broker at {', '.join(channel.errors)}"))
            return
        channel.state = WAITING
        channel.retry_at = now + channel.delay
        channel.delay = min(channel.delay * 2, RECONNECT_DELAY_MAX_S)
        channel.errors = []

    def _unreachable(self, channel: Channel, error: BrokerUnreachableError) -> None:
        """Give up on ``channel`` for now: what waits for it fails; a later use starts over."""
        channel.state = IDLE
        channel.gave_up = True
        channel.down_since = None
        channel.delay = RECONNECT_DELAY_S
        channel.errors = []
        self._fail_queued(channel, error)
        for watcher in list(self.watchers):
            watcher(channel, error, True)

    def _fail_queued(self, channel: Channel, error: BaseException) -> None:
        queued, channel.queued = channel.queued, deque()
        for call in queued:
            self._resolve(call, None, error)
