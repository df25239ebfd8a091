"""Who a token is and what it may see, kept in memory for live shape requests (docs/shapes.md, "Live mode").

A live client asks again every time it receives a change and at least every LIVE_HOLD_S: 10,000 of them
are hundreds of requests a second, each of which read the token, the scope and the log head in a
Postgres transaction (bench/shape_latency.py). The process's log watcher keeps them here instead, for as
long as its LISTEN connection holds: it forgets a user's entries when their tokens are revoked or
removed (`pulse_tokens`, migration 0013), coaches' entries when grants change (`pulse_grants`), and
everything when its connection is lost or made again (it may have missed a notification). An entry
read from the database is kept only if nothing was forgotten while it was being read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pulse_server.accounts import Principal
from pulse_server.shapes.scope import Scope


@dataclass(frozen=True)
class Caller:
    who: Principal
    scope: Scope
    expires_at: float  # the token's expiry, seconds since the epoch


class Callers:
    """Token hash -> Caller, for one process; used only while `listening` (the watcher's LISTEN holds).

    Each user also has a mark, moved whenever their tokens may have changed (everyone's when the watcher
    connects again): a held live request notes its user's mark when it reads its token, and reads the
    token again when the mark moved (`route._still_allowed`), so a revoked token's held request ends."""

    LIMIT = 100_000  # entries; past it the map starts again (each token is read again at its next request)

    def __init__(self) -> None:
        self._entries: dict[str, Caller] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped by every forget: a read begun before it is not kept
        self.listening = False
        self._marks: dict[int, int] = {}
        self._everyone = 0

    def lookup(self, token_hash: str) -> tuple[Caller, int] | None:
        """The token's caller and its user's mark now, if held and not expired."""
        with self._lock:
            caller = self._entries.get(token_hash) if self.listening else None
            if caller is None or caller.expires_at <= time.time():
                return None
            return caller, self._everyone + self._marks.get(caller.who.id, 0)

    def keep(self, token_hash: str, caller: Caller, generation: int) -> int:
        """Keep what was read from the database, unless something was forgotten since `generation` (taken
        before the read began) or the watcher is not listening. Returns the user's mark to hold the
        request with: -1 (never a mark: the token is read again at the first wake) when something was
        forgotten meanwhile."""
        with self._lock:
            if generation != self.generation:
                return -1
            if self.listening:
                if len(self._entries) >= self.LIMIT:
                    self._entries = {}
                self._entries[token_hash] = caller
            return self._everyone + self._marks.get(caller.who.id, 0)

    def mark(self, user_id: int) -> int:
        with self._lock:
            return self._everyone + self._marks.get(user_id, 0)

    def forget_tokens(self, user_ids: frozenset[int] | None) -> None:
        """These users' tokens changed (everyone's for None): forget their entries and move their marks."""
        with self._lock:
            self.generation += 1
            if user_ids is None:
                self._everyone += 1
                self._entries = {}
                return
            for user_id in user_ids:
                self._marks[user_id] = self._marks.get(user_id, 0) + 1
            self._entries = {key: c for key, c in self._entries.items() if c.who.id not in user_ids}

    def forget_coaches(self) -> None:
        """Grants changed: every coach's scope is read again."""
        with self._lock:
            self.generation += 1
            self._entries = {key: c for key, c in self._entries.items() if not c.who.is_coach}

    def listen(self, listening: bool) -> None:
        """The watcher's LISTEN now holds (True), or was lost (False). Either way, what is held goes and every
        mark moves: a read begun before the LISTEN took effect could have missed a revocation."""
        with self._lock:
            self.generation += 1
            self._everyone += 1
            self._entries = {}
            self.listening = listening
