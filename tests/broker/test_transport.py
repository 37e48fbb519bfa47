"""The sendfile transport: page-cache probing and warming of cold ranges."""

from __future__ import annotations

import os

import pytest

from broker.transport import is_cached, warm


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
def test_cold_pages_are_detected_and_warmed(tmp_path):
    path = tmp_path / "segment.log"
    path.write_bytes(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop the clean pages
        if is_cached(fd, 0, 4 << 20):
            pytest.skip("this filesystem keeps pages cached despite DONTNEED (e.g. tmpfs)")
        warm(fd, 0, 4 << 20)
        assert is_cached(fd, 0, 4 << 20)
    finally:
        os.close(fd)
