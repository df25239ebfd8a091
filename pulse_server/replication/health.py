"""Whether this server may tell a shape client it is up to date: some reader follows the slot now.

Two views, both needed: the replication reader of this process, when it leads (it knows at once when
it starts, rebuilds or fails), and the slot as Postgres shows it (`origin.read_status`), read every
second by the shape log watcher of every process (a process whose reader does not lead learns of the
leader only from there). While either says no, `/readyz` is 503 with the reason and a shape request
that would answer up-to-date answers 503 with Retry-After (docs/shapes.md, "Self-healing").
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from pulse_server.replication.origin import SlotStatus

if TYPE_CHECKING:
    from pulse_server.replication.reader import ReplicationReader


class ReplicationHealth:
    check_every_s = 1.0  # how often the watcher reads the slot's status while ready
    recheck_s = 0.2  # ... and while not ready, to notice recovery soon
    stale_after_s = 5.0  # a view older than this (the watcher stuck or disconnected) is no view

    def __init__(self, reader: ReplicationReader | None = None, watched: bool = True) -> None:
        self.reader = reader
        self.watched = watched  # a watcher reads the slot's status (False: only the local reader's view)
        self.status: SlotStatus | None = None
        self.error: str | None = "the replication status has not been read yet"
        self.checked_at = 0.0
        self.closing = False
        self._lock = threading.Lock()

    def update(self, status: SlotStatus) -> bool:
        """A new view of the slot; whether readiness just turned bad (held requests must look again)."""
        with self._lock:
            was = self._reason()
            self.status, self.error, self.checked_at = status, None, time.monotonic()
            return was is None and self._reason() is not None

    def failed(self, error: str) -> bool:
        with self._lock:
            was = self._reason()
            self.status, self.error, self.checked_at = None, error, time.monotonic()
            return was is None

    @property
    def next_check_s(self) -> float:
        return self.check_every_s if self.not_ready() is None else self.recheck_s

    async def wait_ready(self, timeout_s: float) -> str | None:
        """Wait up to `timeout_s` for readiness (a reader starting or healing takes well under a second);
        the reason it is still not ready, or None."""
        deadline = time.monotonic() + timeout_s
        while (reason := self.not_ready()) is not None and not self.closing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return reason

    def not_ready(self) -> str | None:
        """Why a shape client must not be told it is up to date now; None when it may."""
        with self._lock:
            return self._reason()

    def _reason(self) -> str | None:
        if self.closing:
            return "the server is shutting down"
        reader = self.reader
        if reader is not None and reader.is_leader:  # it knows first, and checks the slot itself
            return None if reader.state == "following" else f"replication reader {reader.state}: {reader.reason}"
        if not self.watched:
            return None
        if self.error is not None:
            return self.error
        if time.monotonic() - self.checked_at > self.stale_after_s:
            return "the replication status is stale (the watcher cannot read it)"
        assert self.status is not None
        return self.status.not_following
