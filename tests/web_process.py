"""A broker process with its HTTP port on (``--http-port 0``): ``start`` also reads the line
that says where the port is, and ``get`` asks it something (blocking, with a timeout)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from tests.processes import BrokerProcess

CONSOLE_LINE = re.compile(rb"console and metrics on http://([^/]+)/")


class WebBrokerProcess(BrokerProcess):
    """``BrokerProcess`` with ``--http-port 0``; ``url`` is its HTTP port's address."""

    url = ""

    def broker_args(self) -> list[str]:
        return ["--http-port", "0"]

    def start(self, args=()) -> None:
        super().start(args)
        # Printed right after "listening on", in the same call: already on its way (and
        # perhaps already read into the pipe's buffer, where select would not see it).
        line = self.proc.stdout.readline()
        found = CONSOLE_LINE.match(line)
        if found is None:
            self.kill()
            raise RuntimeError(f"no HTTP port announced: {line!r}; log: {self.log_text()}")
        self.url = f"http://{found.group(1).decode()}"

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """``(status, body)`` of ``GET path``."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> object:
        status, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)
