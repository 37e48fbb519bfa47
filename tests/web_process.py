"""A broker process with its HTTP port on (``--http-port 0``): ``url`` is where its start-up
lines said the port is, and ``get`` asks it something (blocking, with a timeout)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.processes import BrokerProcess


class WebBrokerProcess(BrokerProcess):
    """``BrokerProcess`` with ``--http-port 0``; ``url`` is its HTTP port's address."""

    url = ""

    def broker_args(self) -> list[str]:
        return ["--http-port", "0"]

    def start(self, args=()) -> None:
        super().start(args)
        if self.http is None:
            self.kill()
            raise RuntimeError(f"no HTTP port announced; log: {self.log_text()}")
        self.url = f"http://{self.http}"

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
