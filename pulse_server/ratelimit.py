"""Sign-in throttling per (username, address) and per address, with growing delays, its counts kept in
memory (one process) or in Postgres (every instance); a concurrency gate with load shedding for the push
endpoint."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import psycopg

from pulse_server.errors import ApiError

T = TypeVar("T")


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failed sign-ins are free, then how long each next attempt waits.

    A (username, address) pair gets `pair_free` failures, an address `address_free` (across usernames: many
    people may share one address behind a NAT); past that, each failure makes the next attempt wait
    `first_delay_s`, doubling, at most `max_delay_s`. A key's count is forgotten `forget_s` after its last
    failure. A username is never limited on its own: an attacker elsewhere cannot lock its owner out."""

    pair_free: int = 5
    address_free: int = 30
    first_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_s: float = 86_400.0

    def delay(self, failures: int, free: int) -> float:
        if failures <= free:
            return 0.0
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(failures - free - 1, 60))


@dataclass
class Count:
    """One key's failures; times in seconds on the store's own clock."""

    failures: int = 0
    last_failure: float | None = None
    blocked_until: float = 0.0


def pair_key(username: str, address: str) -> str:
    # The username as a JSON string (ASCII, escaped): Postgres text holds no NUL, and a name may have one.
    return f"pair:{address}/{json.dumps(username)}"  # an address holds no "/"


def address_key(address: str) -> str:
    return f"addr:{address}"


def admit(counts: dict[str, Count], free: dict[str, int], now: float, policy: ThrottlePolicy) -> float:
    """One attempt under these keys: the seconds to wait if any key is still blocked (nothing counted);
    else the attempt is counted as a failure now, before its password is checked (a success takes it
    back), so that attempts sent at once cannot all slip in before the first is counted."""
    wait = max((c.blocked_until - now for c in counts.values()), default=0.0)
    if wait > 0:
        return wait
    for key, count in counts.items():
        if count.last_failure is None or now - count.last_failure >= policy.forget_s:
            count.failures = 0
        count.failures += 1
        count.last_failure = now
        count.blocked_until = now + policy.delay(count.failures, free[key])
    return 0.0


def take_back(count: Count, free: int) -> None:
    """A success: the attempt counted against the address was not a failure after all."""
    count.failures = max(0, count.failures - 1)
    if count.failures <= free:
        count.blocked_until = 0.0


class ThrottleStore(Protocol):
    def attempt(self, keys: dict[str, int], policy: ThrottlePolicy) -> float:
        """Admit (and count) one attempt under keys (key -> free failures), atomically: 0 or the wait."""

    def succeeded(self, pair: str, address: str, address_free: int) -> None:
        """Forget the pair's failures; take the attempt back from the address."""


class MemoryThrottleStore:
    """Counts in this process's memory: for one process (the device app)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.counts: dict[str, Count] = {}
        self._lock = threading.Lock()

    def attempt(self, keys: dict[str, int], policy: ThrottlePolicy) -> float:
        with self._lock:
            now = self.clock()
            for key in [k for k, c in self.counts.items() if c.last_failure is not None
                        and now - c.last_failure >= policy.forget_s and c.blocked_until <= now]:
                del self.counts[key]
            return admit({k: self.counts.setdefault(k, Count()) for k in keys}, keys, now, policy)

    def succeeded(self, pair: str, address: str, address_free: int) -> None:
        with self._lock:
            self.counts.pop(pair, None)
            if address in self.counts:
                take_back(self.counts[address], address_free)


class PostgresThrottleStore:
    """Counts in Postgres (table `login_throttle`, migration 0010), shared by every worker and instance.

    Each attempt is one short transaction that locks its keys' rows (in key order: no deadlock), so two
    instances counting at once count exactly; times are Postgres's clock, the same for every instance."""

    def __init__(self, run: Callable[[Callable[[psycopg.Connection[Any]], Any]], Any]) -> None:
        self.run = run

    def attempt(self, keys: dict[str, int], policy: ThrottlePolicy) -> float:
        ordered = sorted(keys)

        def work(conn: psycopg.Connection[Any]) -> float:
            conn.execute("INSERT INTO login_throttle (key) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                         (ordered,))
            rows = conn.execute(
                "SELECT key, failures, extract(epoch FROM last_failure)::float8,"
                " extract(epoch FROM blocked_until)::float8, extract(epoch FROM clock_timestamp())::float8"
                " FROM login_throttle WHERE key = ANY(%s) ORDER BY key FOR UPDATE", (ordered,)).fetchall()
            now = float(rows[0][4])
            counts = {str(r[0]): Count(int(r[1]), r[2], r[3] or 0.0) for r in rows}
            wait = admit(counts, keys, now, policy)
            if wait == 0:
                conn.execute(
                    "UPDATE login_throttle t SET failures = u.failures, last_failure = to_timestamp(u.last),"
                    " blocked_until = to_timestamp(u.until)"
                    " FROM unnest(%s::text[], %s::int[], %s::float8[], %s::float8[]) AS u(key, failures, last, until)"
                    " WHERE t.key = u.key",
                    (ordered, [counts[k].failures for k in ordered], [counts[k].last_failure for k in ordered],
                     [counts[k].blocked_until for k in ordered]))
                if random.random() < PRUNE_CHANCE:
                    conn.execute("DELETE FROM login_throttle WHERE last_failure < clock_timestamp() - make_interval("
                                 "secs => %s) AND (blocked_until IS NULL OR blocked_until < clock_timestamp())",
                                 (policy.forget_s,))
            return wait

        wait: float = self.run(work)
        return wait

    def succeeded(self, pair: str, address: str, address_free: int) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("DELETE FROM login_throttle WHERE key = %s", (pair,))
            conn.execute("UPDATE login_throttle SET failures = greatest(failures - 1, 0),"
                         " blocked_until = CASE WHEN failures - 1 <= %s THEN NULL ELSE blocked_until END"
                         " WHERE key = %s", (address_free, address))
            conn.execute("DELETE FROM login_throttle WHERE key = %s AND failures = 0", (address,))

        self.run(work)


PRUNE_CHANCE = 0.01  # one counted attempt in 100 also deletes the counts forgotten by now


class LoginThrottle:
    """Sign-in attempts limited per (username, address) and per address, with growing delays; a correct
    password from an address that did nothing wrong always gets through (docs/api.md)."""

    def __init__(self, store: ThrottleStore, policy: ThrottlePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or ThrottlePolicy()

    def check(self, username: str, address: str) -> None:
        """Count this attempt, or raise 429 with Retry-After while the pair or the address waits."""
        keys = {pair_key(username, address): self.policy.pair_free, address_key(address): self.policy.address_free}
        wait = self.store.attempt(keys, self.policy)
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many failed sign-ins from this address; try again later",
                           headers={"Retry-After": str(math.ceil(wait))})

    def succeeded(self, username: str, address: str) -> None:
        self.store.succeeded(pair_key(username, address), address_key(address), self.policy.address_free)


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
