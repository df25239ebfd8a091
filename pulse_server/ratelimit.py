"""A sliding-window limiter for login attempts, per username and per client address."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable


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
