"""Hand memory that Python and torch have freed back to the operating system between pipeline stages.

On Linux with glibc, tensors below malloc's mmap threshold (it rises up to 32 MiB as large blocks are freed)
live in the C heap, and freeing them keeps the pages resident: a stage that freed a gigabyte of small tensors
(the measure stage's per-layer weight errors, a block's tuning state) leaves the process that much larger for
the rest of the job. `release_free_memory` runs the garbage collector and then glibc's `malloc_trim(0)`, which
returns every free page of every arena; elsewhere (macOS, Windows, musl) it only collects garbage. Measured in
docs/benchmarks/plan.md. Torch-free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache


@cache
def _malloc_trim():  # noqa: ANN202
    """glibc's malloc_trim, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Collect garbage and return the C heap's free pages to the system; True when the heap was trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
