"""Tests that need programs from the system's packages (Debian's chromium, kcat...).

Where a program is missing the test is skipped with the command that installs it -- unless
``SLUICE_REQUIRE_TOOLS=1`` is set, as ``.ci/run`` does after installing them: there a missing
program fails the run at collection, so a broken install step can't pass as a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def needs(*programs: str, install: str) -> pytest.MarkDecorator:
    """A ``skipif`` marker for tests that run ``programs`` (``install``: how to get them)."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing and os.environ.get("SLUICE_REQUIRE_TOOLS") == "1":
        raise RuntimeError(f"SLUICE_REQUIRE_TOOLS=1 but {', '.join(missing)} not found: {install}")
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} ({install})")
