"""Giving freed memory back to the system after a burst.

CPython returns its small-object arenas only when they are wholly empty, and glibc's malloc keeps freed
blocks in its heaps (a busy thread gets heaps of its own) for the next allocation: after one big
transaction the process would stay as big as its peak. `malloc_trim(0)` hands every free page of
every heap back. On a C library other than glibc there is nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Give free heap pages back; whether the C library could. (No garbage collection first: a full
    collection pauses every thread for the whole heap, and what a burst leaves has no reference cycles.)"""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


# Young collections every this many new container objects (CPython's default is 700).
COLLECT_EVERY = 20_000


def settle_heap() -> None:
    """Once the app is built: what start-up made (modules, the app, the pools; most of the heap) is
    moved out of the collector's sight (`gc.freeze`), and young collections come less often. A full
    collection walks every tracked object: with thousands of held long polls, made and dropped every
    20 s, the collector took two thirds of a worker's event loop (bench/shape_latency.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(COLLECT_EVERY, *gc.get_threshold()[1:])
