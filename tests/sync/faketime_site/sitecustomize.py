"""Loaded first by processes the sync tests run under libfaketime (see sync_support.shifted_clock).

libfaketime 0.9.10 (Debian 12) breaks Python 3.11's `time.sleep`, which waits with an absolute
CLOCK_MONOTONIC deadline: with the monotonic clock left real it fails with EINVAL, with it faked it hangs.
Every other way Python waits (Event.wait, select, queue and asyncio timeouts) works, so a process under
a shifted clock sleeps on an Event instead. Nothing else is changed.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds > 0:
        threading.Event().wait(seconds)


time.sleep = _sleep
