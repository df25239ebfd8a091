"""A circuit breaker around Postgres: after repeated failures, fail fast instead of piling up.

closed ──(N failures in a row)──► open ──(reset_s later, one trial)──► half-open ──ok──► closed
                                    ▲                                       │
                                    └───────────────failure─────────────────┘
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitOpenError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"database unavailable; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state = CLOSED
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self.clock() - self._opened_at >= self.reset_s:
                return HALF_OPEN
            return self._state

    def before_call(self) -> None:
        """Raise CircuitOpenError at once while open; let one trial call through when half-open."""
        with self._lock:
            if self._state == CLOSED:
                return
            waited = self.clock() - self._opened_at
            if waited < self.reset_s:
                raise CircuitOpenError(max(1.0, self.reset_s - waited))
            if self._trial_running:
                raise CircuitOpenError(1.0)
            self._state = HALF_OPEN
            self._trial_running = True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._state = CLOSED
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._state == HALF_OPEN or self._failures >= self.threshold:
                self._state = OPEN
                self._opened_at = self.clock()

    def record_neutral(self) -> None:
        """A call that ended without telling us anything about the database (e.g. a user error)."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._state = CLOSED
                self._failures = 0
            self._trial_running = False
