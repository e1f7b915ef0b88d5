"""glibc malloc settings for the server process: its RSS should follow what Loupe holds.

A forward pass at T = 1024 allocates and frees tens of MB per layer from a worker thread. glibc
gives each thread its own arena and keeps freed chunks there, so after one long analysis the
process holds the model's whole working set again, fragmented, on top of what the analysis keeps:
peak RSS growth 400-460 MiB against 280-340 MiB with one arena (bench/RESULTS.md, memory row).
One arena costs nothing measurable here (the hot loops are torch kernels, not malloc). After each
job the free memory goes back to the OS.

Both are no-ops on a C library other than glibc, and MALLOC_ARENA_MAX set by the user wins.
"""

import ctypes
import logging
import os
from functools import cache

log = logging.getLogger("loupe")

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def use_one_arena() -> None:
    """Call before the server starts its threads: later threads then share the main arena."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    if not libc.mallopt(M_ARENA_MAX, 1):
        log.warning("mallopt(M_ARENA_MAX, 1) failed; memory use after long analyses will be higher")


def release_free_memory() -> None:
    """Return the allocator's free pages to the OS (after a job: the next one may be far off)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
