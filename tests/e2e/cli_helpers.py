"""Running ``sluice`` in the end-to-end tests: to completion, or as a live process to signal."""

from __future__ import annotations

import subprocess

import trio

from tests.e2e.conftest import SLUICE

RUN_TIMEOUT_S = 30


async def sluice(*args: str, env, stdin: bytes = b"", check: bool = True):
    """Run ``sluice ARGS`` to completion (bounded); with ``check``, it must exit 0."""
    with trio.fail_after(RUN_TIMEOUT_S):
        result = await trio.run_process(
            [*SLUICE, *args], stdin=stdin, capture_stdout=True, capture_stderr=True,
            env=env, check=False,
        )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


async def start(*args: str, env) -> trio.Process:
    """``sluice ARGS`` running, with stdin, stdout and stderr as pipes."""
    return await trio.lowlevel.open_process(
        [*SLUICE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env,
    )


async def read_line(stream) -> bytes:
    """The next line of a process's pipe (bounded wait), without the newline."""
    data = b""
    with trio.fail_after(RUN_TIMEOUT_S):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            assert chunk, f"stream ended after {data!r}"
            data += chunk
    return data[:-1]


async def finish(process: trio.Process) -> tuple[int, bytes]:
    """Wait (bounded) for the process to exit: its exit code and the rest of its stderr."""
    with trio.fail_after(RUN_TIMEOUT_S):
        rest = b""
        while chunk := await process.stderr.receive_some(1 << 16):
            rest += chunk
        return await process.wait(), rest
