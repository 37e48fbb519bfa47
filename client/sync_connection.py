"""``SyncConnection``: one blocking, pipelined connection to a broker, on a plain socket.

The blocking clients (``sluice.client.sync``) and the ``sluice`` command line share it. It
imports neither trio nor the record-batch code, so a short command that only talks to the
broker starts fast.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections import deque

from sluice.client import admin_ops as ops
from sluice.client.bootstrap import describe_connect_error, parse_bootstrap
from sluice.client.errors import (
    BrokerUnreachableError,
    ConnectionLostError,
    RequestTimeoutError,
    raise_for_error,
)
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection, ResponseReceived
from sluice.protocol.errors import ProtocolError
from sluice.protocol.framing import NEED_DATA

RECEIVE_BYTES = 1 << 20


class SyncConnection:
    """A blocking, pipelined connection: ``send`` many, ``receive`` their answers in order.

    Every request that expects an answer has a deadline: ``request_timeout_s`` after it was
    sent (or its own ``timeout_s``, e.g. a long poll's), never before the deadline of the one
    ahead of it, as answers come in order. Waiting past it closes the connection and raises
    ``RequestTimeoutError``. The socket is non-blocking and every wait goes through ``poll``
    with the time left, so nothing blocks past a deadline; ``receive(until=...)`` also gives
    up earlier without failing the request, for callers with a deadline of their own.

    A lost connection is reopened by ``connect``, which keeps trying for
    ``reconnect_timeout_s`` from the loss, across calls (``BrokerUnreachableError`` after).
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        *,
        request_timeout_s: float = 30.0,
        reconnect_timeout_s: float = 30.0,
    ):
        self.addresses = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.request_timeout_s = request_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sock: socket.socket | None = None
        self.proto = ClientConnection()
        self.ever_connected = False
        self._deadlines: deque[float] = deque()  # of the requests awaiting an answer
        self._readable: select.poll | None = None
        self._writable: select.poll | None = None
        self._down_since: float | None = None  # when the last connection was lost

    def connect(self, until: float | None = None) -> bool:
        """Open a connection, trying every address with backoff: one round on the first
        connect, then until ``reconnect_timeout_s`` after the connection was lost
        (``BrokerUnreachableError``). With ``until``, returns False at that time if still not
        connected, the window left open for a later call; True once connected."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        give_up = self._down_since + (self.reconnect_timeout_s if self.ever_connected else 0)
        delay = 0.05
        while True:
            errors = []
            for host, port in self.addresses:
                if until is not None and time.monotonic() >= until:
                    return False
                try:
                    self._open(host, port, until)
                    self.send(m.HandshakeRequest(client_id=self.client_id))
                    response = self.receive(until)
                    if response is None:  # no answer yet, and out of time for this call
                        self.close()
                        return False
                    raise_for_error(response)
                    self._down_since = None
                    return True
                except (OSError, ConnectionLostError) as exc:
                    self.close()
                    errors.append(f"{host}:{port} ({describe_connect_error(exc)})")
                except BaseException:  # e.g. the broker refused the handshake
                    self.close()
                    raise
            now = time.monotonic()
            if now + delay > give_up:
                self._down_since = None  # a later connect starts a new window
                raise BrokerUnreachableError(f"cannot connect to broker at {', '.join(errors)}")
            if until is not None and now + delay > until:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _open(self, host: str, port: int, until: float | None) -> None:
        timeout = self.request_timeout_s
        if until is not None:
            timeout = max(0.001, min(timeout, until - time.monotonic()))
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.proto = ClientConnection()
        self._deadlines.clear()
        self._readable, self._writable = select.poll(), select.poll()
        self._readable.register(sock, select.POLLIN)
        self._writable.register(sock, select.POLLOUT)
        self.ever_connected = True

    def ensure(self) -> None:
        if self.sock is None:
            self.connect()

    def send(self, request, timeout_s: float | None = None) -> None:
        """Write ``request`` (connecting first if needed); its answer is due within
        ``timeout_s`` (default ``request_timeout_s``)."""
        self.ensure()
        _cid, pieces = self.proto.send_request(request)
        deadline = time.monotonic() + (self.request_timeout_s if timeout_s is None else timeout_s)
        deadlines = self._deadlines
        if deadlines and deadlines[-1] > deadline:
            deadline = deadlines[-1]
        data = b"".join(pieces)
        try:
            sent = self.sock.send(data)
            if sent < len(data):
                self._send_rest(memoryview(data)[sent:], deadline)
        except BlockingIOError:
            self._send_rest(memoryview(data), deadline)
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"connection lost: {exc}") from None
        if m.expects_response(request):
            deadlines.append(deadline)

    def _send_rest(self, view: memoryview, deadline: float) -> None:
        """Write what the socket did not take at once, waiting for room until ``deadline``."""
        try:
            while view:
                if not self._wait(self._writable, deadline):
                    self.close()
                    raise RequestTimeoutError(
                        f"request not written within its timeout ({self.request_timeout_s:g} s):"
                        " the broker stopped reading; connection closed")
                try:
                    view = view[self.sock.send(view):]
                except BlockingIOError:
                    pass
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"connection lost: {exc}") from None

    @staticmethod
    def _wait(poller: select.poll, until: float) -> bool:
        """Whether the socket became ready before ``until`` (monotonic seconds; may be inf)."""
        if until == math.inf:
            return bool(poller.poll())
        return bool(poller.poll(max(0.0, until - time.monotonic()) * 1000))

    def receive(self, until: float | None = None):
        """The next response in request order (``ConnectionLostError`` if the socket dies,
        ``RequestTimeoutError`` once its deadline passes). With ``until``: None if it has not
        arrived by then (it stays due; receive it later)."""
        try:
            while True:
                event = self.proto.next_event()
                if isinstance(event, ResponseReceived):
                    self._deadlines.popleft()
                    return event.response
                if event is not NEED_DATA:
                    raise ConnectionLostError("broker closed the connection")
                with self.proto.receive_buffer(RECEIVE_BYTES) as view:
                    while True:
                        try:
                            n = self.sock.recv_into(view)
                            break
                        except BlockingIOError:
                            deadline = self._deadlines[0] if self._deadlines else math.inf
                            wait_until = deadline if until is None or until > deadline else until
                            if self._wait(self._readable, wait_until):
                                continue
                            if wait_until is deadline:
                                self.close()
                                raise RequestTimeoutError(
                                    f"no answer within the request timeout "
                                    f"({self.request_timeout_s:g} s); connection closed"
                                ) from None
                            return None
                self.proto.received(n)
        except (OSError, ProtocolError, AttributeError) as exc:
            self.close()
            raise ConnectionLostError(f"connection lost: {exc}") from None

    def request(self, request):
        self.send(request)
        response = self.receive()
        raise_for_error(response)
        return response

    def has_data(self) -> bool:
        """Whether a response may be read without blocking."""
        if self.sock is None:
            return False
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        except OSError:
            return True  # let receive() see the error

    def topic(self, topic: str) -> ops.TopicMeta:
        """The topic's partition count and id (``UnknownTopicOrPartitionError`` if none)."""
        return ops.topic_meta(self.request(ops.metadata([topic])), topic)

    def partitions(self, topic: str) -> int:
        return self.topic(topic).partitions

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self._deadlines.clear()
            if self._down_since is None:
                self._down_since = time.monotonic()
