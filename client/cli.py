"""``sluice``: the command line. One subcommand per job; user errors are one line on stderr.

Exit codes: 0 success (also when stdout is a closed pipe, as with ``| head``), 1 a Sluice
error (unknown topic, broker unreachable or not answering...), 2 a bad command line, 130 and
143 stopped by Ctrl-C (SIGINT) or SIGTERM.

Short commands use the blocking client (``client.sync_admin`` and friends), which imports
neither trio nor the broker: ``sluice topics list`` starts in a few tens of milliseconds
(docs/DESIGN-NOTES.md). Only ``broker`` and ``perf`` run on trio.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

from sluice.client.bootstrap import parse_bootstrap
from sluice.client.cli_parser import UsageError, build_parser
from sluice.client.cli_signals import Interrupted
from sluice.protocol.errors import SluiceError


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("sluice")
    except PackageNotFoundError:
        return "(unknown: not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        if args.version:
            print(f"sluice {version()}")
            return 0
        if args.command is None:
            raise UsageError("sluice: a command is required (see --help)")
        if getattr(args, "bootstrap", None):
            parse_bootstrap(args.bootstrap)
    except (UsageError, ValueError) as exc:
        print(exc if isinstance(exc, UsageError) else f"sluice: {exc}", file=sys.stderr)
        return 2
    return run(args)


def run(args) -> int:
    """Run a parsed command; turns errors into one line and an exit code."""
    words = [args.command, getattr(args, "action", None) or getattr(args, "mode", None)]
    prog = " ".join(["sluice", *filter(None, words)])
    module, _, name = args.run.partition(":")
    try:
        return getattr(import_module(module), name)(args)
    except BaseException as exc:  # noqa: BLE001 -- sorted below; anything else is re-raised
        return exit_code(prog, exc)


def exit_code(prog: str, exc: BaseException) -> int:
    if isinstance(exc, BaseExceptionGroup):  # from a trio command (perf)
        from sluice.client.lifecycle import single_exception

        exc = single_exception(exc) or exc
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        return 0
    if isinstance(exc, UsageError):
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, (SluiceError, ValueError, OSError)):
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    raise exc


def silence_stdout() -> None:
    """stdout is a closed pipe: point it at /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
