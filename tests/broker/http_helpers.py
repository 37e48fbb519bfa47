"""A minimal HTTP/1.1 client (h11 on a trio stream) for tests of the broker's HTTP port: one
connection, requests in turn (keep-alive), and server-sent events read as they arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import trio


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    event: str
    data: str

    def json(self):
        return json.loads(self.data)


class HttpClient:
    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, host: str | None = None) -> HttpClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        return cls(stream, f"127.0.0.1:{port}" if host is None else host)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stream.aclose()

    async def send_head(self, method: str, path: str, body: bytes = b"",
                        headers: dict[str, str] | None = None) -> None:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = {"Host": self.host, "Content-Length": str(len(body)), **(headers or {})}
        data = self.conn.send(h11.Request(method=method, target=path, headers=list(fields.items())))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def request(self, method: str, path: str, *, json_body=None, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> Reply:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        await self.send_head(method, path, body, headers)
        response = await self._response_head()
        data = bytearray()
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        return Reply(response.status_code, _headers(response), bytes(data))

    async def get(self, path: str, **kwargs) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, value, **kwargs) -> Reply:
        return await self.request("POST", path, json_body=value, **kwargs)

    async def events(self, path: str) -> AsyncIterator[Event]:
        """GET ``path`` as an event stream: its events as they arrive, until it ends."""
        await self.send_head("GET", path)
        response = await self._response_head()
        assert response.status_code == 200, response
        assert _headers(response)["content-type"] == "text/event-stream"
        pending = ""
        while True:
            event = await self._next()
            if isinstance(event, h11.EndOfMessage):
                return
            pending += event.data.decode()
            while "\n\n" in pending:
                block, pending = pending.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.splitlines()
                              if line and not line.startswith(":"))
                if "data" in fields:  # a block without data (e.g. retry: alone) is no event
                    yield Event(fields.get("event", "message"), fields.get("data", ""))

    async def _response_head(self) -> h11.Response:
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event

    async def _next(self):
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(1 << 16))
                continue
            return event


def _headers(response: h11.Response) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in response.headers}
