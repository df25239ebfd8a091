"""Wakes held live requests when the device's shape log moves, whichever process wrote to the store.

One poll of the log's head every 100 ms (a single indexed read of a local file) serves every waiting
request; nothing polls per client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

POLL_S = 0.1


class HeadWatcher:
    def __init__(self, read_head: Callable[[], int], poll_s: float = POLL_S) -> None:
        self.read_head = read_head
        self.poll_s = poll_s
        self.head = 0
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="device-shape-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a busy store is read again on the next tick
                head = await run_in_threadpool(self.read_head)
                if head != self.head:
                    self.head = head
                    moved, self._moved = self._moved, asyncio.Event()
                    moved.set()
            await asyncio.sleep(self.poll_s)

    async def wait_past(self, position: int, timeout_s: float) -> None:
        """Return once the head is past `position`, or after `timeout_s`."""
        if self.head > position:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), timeout_s)
