"""A sliding-window limiter for login attempts, per username and per client address; a concurrency gate
with load shedding for the push endpoint."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from pulse_server.errors import ApiError

T = TypeVar("T")


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, *keys: str) -> float:
        """Count one attempt under every key; returns 0, or the seconds to wait if any key is over."""
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key in keys:
                hits = self._hits[key]
                while hits and now - hits[0] >= self.window_s:
                    hits.popleft()
                if len(hits) >= self.limit:
                    wait = max(wait, self.window_s - (now - hits[0]))
            if wait == 0.0:
                for key in keys:
                    self._hits[key].append(now)
            return wait


class ConcurrencyGate:
    """At most `limit` requests do their blocking work at once, each on a worker thread of this gate's own;
    at most `queue` more wait for a turn, and beyond that the answer is 503 with Retry-After at once.

    Fewer threads than requests keeps them from fighting over the GIL, and the bounded queue keeps the
    latency of the requests let in bounded when more arrive than the server can take.
    """

    def __init__(self, limit: int, queue: int, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.queue = queue
        self.retry_after_s = retry_after_s
        self.shed = 0
        self._limiter: anyio.CapacityLimiter | None = None  # made on first use, inside the event loop

    async def run(self, work: Callable[[], T]) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.limit)
        if self._limiter.available_tokens < 1 and self._limiter.statistics().tasks_waiting >= self.queue:
            self.shed += 1
            raise ApiError(503, "unavailable", "server busy; retry later",
                           headers={"Retry-After": str(self.retry_after_s)})
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)
