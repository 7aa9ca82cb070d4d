"""release_free_memory hands freed C-heap memory back to the system (glibc), and is harmless elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bitsmith.engine.memory import release_free_memory


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_small_blocks_leave_the_process() -> None:
    release_free_memory()
    chunks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MiB in blocks below malloc's mmap threshold
    keep = chunks[-1]  # the last block sits on top of the heap, so plain free() cannot shrink it
    grown = _rss()
    del chunks
    kept = _rss()
    assert release_free_memory() is True
    trimmed = _rss()
    assert len(keep) and kept - trimmed > 0.8 * (grown - trimmed) > 100 * 2**20, (grown, kept, trimmed)
