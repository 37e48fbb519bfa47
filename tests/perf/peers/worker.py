"""``python -m peers.worker SYSTEM ROLE PARAMS_JSON``: run one measured role in this process
and print its figures as one ``RESULT {json}`` line (``READY`` first, for a consumer that must
be subscribed before its producer starts)."""

from __future__ import annotations

import importlib
import json
import sys

from peers.common import emit_result

MODULES = {"sluice": "peers.sluice_peer", "redis": "peers.redis_peer", "nats": "peers.nats_peer",
           "sluice-blocking": "peers.sluice_blocking_peer", "kafka": "peers.kafka_peer"}


def main(argv: list[str]) -> int:
    system, role, params = argv[0], argv[1], json.loads(argv[2])
    if params.get("client") == "blocking":  # Sluice's blocking client
        system += "-blocking"
    module = importlib.import_module(MODULES[system])
    emit_result(module.run(role, params))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
