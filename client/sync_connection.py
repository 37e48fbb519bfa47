"""``SyncConnection``: one blocking, pipelined connection to a broker, on a plain socket.

The blocking clients (``sluice.client.sync``) and the ``sluice`` command line share it. It
imports neither trio nor the record-batch code, so a short command that only talks to the
broker starts fast.
"""

from __future__ import annotations

import socket
import time

from sluice.client import admin_ops as ops
from sluice.client.bootstrap import describe_connect_error, parse_bootstrap
from sluice.client.errors import BrokerUnreachableError, ConnectionLostError, raise_for_error
from sluice.protocol import messages as m
from sluice.protocol.connection import ClientConnection, ResponseReceived
from sluice.protocol.errors import ProtocolError
from sluice.protocol.framing import NEED_DATA

RECEIVE_BYTES = 1 << 20


class SyncConnection:
    """A blocking, pipelined connection: ``send`` many, ``receive`` their answers in order."""

    def __init__(self, bootstrap: str, client_id: str, reconnect_timeout_s: float = 30.0):
        self.addresses = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sock: socket.socket | None = None
        self.proto = ClientConnection()
        self.ever_connected = False

    def connect(self) -> None:
        """Open a connection, trying every address with backoff (once, on first connect)."""
        deadline = time.monotonic() + (self.reconnect_timeout_s if self.ever_connected else 0)
        delay = 0.05
        while True:
            errors = []
            for host, port in self.addresses:
                try:
                    self.sock = socket.create_connection((host, port), timeout=30)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.proto = ClientConnection()
                    self.ever_connected = True
                    self.request(m.HandshakeRequest(client_id=self.client_id))
                    return
                except (OSError, ConnectionLostError) as exc:
                    self.close()
                    errors.append(f"{host}:{port} ({describe_connect_error(exc)})")
            if time.monotonic() + delay > deadline:
                raise BrokerUnreachableError(f"cannot connect to broker at {', '.join(errors)}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def ensure(self) -> None:
        if self.sock is None:
            self.connect()

    def send(self, request) -> None:
        self.ensure()
        _cid, pieces = self.proto.send_request(request)
        try:
            self.sock.sendall(b"".join(pieces))
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"connection lost: {exc}") from None

    def receive(self):
        """The next response in request order (``ConnectionLostError`` if the socket dies)."""
        try:
            while True:
                event = self.proto.next_event()
                if isinstance(event, ResponseReceived):
                    return event.response
                if event is not NEED_DATA:
                    raise ConnectionLostError("broker closed the connection")
                with self.proto.receive_buffer(RECEIVE_BYTES) as view:
                    n = self.sock.recv_into(view)
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
        self.sock.setblocking(False)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        except OSError:
            return True  # let receive() see the error
        finally:
            if self.sock is not None:
                self.sock.setblocking(True)

    def topic(self, topic: str) -> ops.TopicMeta:
        """The topic's partition count and id (``UnknownTopicOrPartitionError`` if none)."""
        return ops.topic_meta(self.request(ops.metadata([topic])), topic)

    def partitions(self, topic: str) -> int:
        return self.topic(topic).partitions

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
