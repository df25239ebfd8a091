"""Giving freed memory back to the system after a burst.

CPython returns its small-object arenas only when they are wholly empty, and glibc's malloc keeps freed
blocks in its heaps (a busy thread gets heaps of its own) for the next allocation: after one big
transaction the process would stay as big as its peak. `malloc_trim(0)` hands every free page of
every heap back. On a C library other than glibc there is nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
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
