"""``python -m sluice.broker`` (also ``sluice broker``): run a broker in the foreground.

Prints ``listening on HOST:PORT`` on stdout once it accepts connections, after a line for each
other listener (``kafka listener on HOST:PORT``: Kafka's protocol, for Kafka clients; the HTTP
port's ``console and metrics on http://HOST:PORT/``); logs go to stderr in
logfmt (``time=... level=... logger=... msg="..."``), starting with where the data lives.
SIGINT/SIGTERM shut it down cleanly (exit 0: stopping is a server's normal end). Bad flags or
settings print one line per problem on stderr and exit 2; a broker that cannot start (port in
use, unusable data directory) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path

from sluice.broker.config import LOG_LEVELS, BrokerConfig
from sluice.protocol.errors import SluiceError

DESCRIPTION = "Run a Sluice broker in the foreground (Ctrl-C or SIGTERM stops it cleanly)."
EXAMPLES = """examples:
  sluice broker                                  # ./sluice-data, 127.0.0.1:9092 (+ Kafka 9093)
  sluice broker --data-dir /var/lib/sluice --port 9192 --kafka-port 9092
  sluice broker --config sluice.toml --log-level DEBUG
  sluice broker --http-port 9644                 # /metrics, /health, console: http://127.0.0.1:9644/
  sluice broker --repair-truncate orders-3       # once, after it refused a corrupt partition
"""


class LogfmtFormatter(logging.Formatter):
    """One line per event: ``time=... level=... logger=... msg="..."``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage().replace('"', '\\"')
        line = (
            f'time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} '
            f'logger={record.name} msg="{message}"'
        )
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


class AnnounceReady:
    """``serve``'s task status: says where it listens on stdout once it accepts connections,
    one line per listener, the Sluice one last (a script waits for it, as for a ready
    signal)::

        kafka listener on HOST:PORT                  (unless it is off)
        console and metrics on http://HOST:PORT/     (with an HTTP port)
        listening on HOST:PORT
    """

    def started(self, handle) -> None:
        if handle.kafka_port is not None:
            print(f"kafka listener on {handle.host}:{handle.kafka_port}", flush=True)
        if handle.http is not None:
            print(f"console and metrics on http://{handle.http}/", flush=True)
        print(f"listening on {handle.host}:{handle.port}", flush=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (exit 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or OneLineParser(
        prog="sluice broker",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (default ./sluice-data)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 9092; 0 = any)")
    parser.add_argument(
        "--kafka-port", type=int, metavar="PORT",
        help="port of the Kafka-protocol listener (default: --port + 1, so 9093; 0 = any)",
    )
    parser.add_argument(
        "--no-kafka", dest="kafka", action="store_false", default=None,
        help="do not listen for Kafka clients",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="default INFO")
    parser.add_argument(
        "--http-port", type=int, metavar="P",
        help="serve /metrics, /health and the web console on this port, on the broker's host "
        "(default: off; 0 = any)",
    )
    parser.add_argument(
        "--in-memory", action="store_true", default=None, help="keep logs in memory (no files)"
    )
    parser.add_argument(
        "--repair-truncate", action="append", metavar="TOPIC-P", default=None,
        help="a partition refused at startup for corruption below its flushed point: truncate it "
        "at the first invalid byte anyway, discarding the records after it (repeatable; use once)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the broker for parsed ``args``; returns the process exit code.

    The broker itself (trio, the server and every layer under it) is imported here, not at
    the top: building the parser (``sluice broker --help``) needs only the settings."""
    import trio
    from sluice.broker.descriptors import raise_soft_limit
    from sluice.broker.server import serve

    try:
        config = BrokerConfig.load(
            args.config,
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            kafka=args.kafka,
            kafka_port=args.kafka_port,
            log_level=args.log_level,
            in_memory=args.in_memory,
            repair_truncate=args.repair_truncate,
            http_port=args.http_port,
        )
    except SluiceError as exc:
        for line in str(exc).splitlines():
            print(f"sluice broker: {line}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("sluice")
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
    root.propagate = False
    limits = raise_soft_limit()
    if limits.after > limits.before:
        logging.getLogger("sluice.server").info(
            "raised the open-files limit (RLIMIT_NOFILE) from %d to %d, its hard limit",
            limits.before, limits.after,
        )

    try:
        trio.run(partial(serve, config, handle_signals=True, task_status=AnnounceReady()))
    except BaseException as raised:
        # A failure to start (a refused data directory, a port in use) comes out of the
        # nurseries wrapped in exception groups: say it in one line.
        exc = raised
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if isinstance(exc, SluiceError):
            print(f"sluice broker: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError):
            print(f"sluice broker: {exc.strerror or exc}", file=sys.stderr)
            return 1
        if isinstance(exc, KeyboardInterrupt):
            return 0
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
