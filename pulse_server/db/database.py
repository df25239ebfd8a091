"""The bounded connection pool, the breaker around it, and retries of transient failures."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from psycopg import errors as pg_errors
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from pulse_server.breaker import CircuitBreaker, CircuitOpenError
from pulse_server.settings import Settings, psycopg_url

T = TypeVar("T")

# A pooled connection used again within this many seconds is not pinged first: under load that saves a
# round trip (and two autocommit switches) per checkout, and a connection lost in between is caught
# anyway (ConnectionLostBeforeCommit is retried; a failed ORM statement invalidates the pool).
PING_AFTER_IDLE_S = 1.0


class DatabaseUnavailable(Exception):
    """Postgres cannot be reached (or the breaker is open): answer 503 with Retry-After."""

    def __init__(self, retry_after_s: float, detail: str = "") -> None:
        super().__init__(detail or "database unavailable")
        self.retry_after_s = retry_after_s


class ConnectionLostBeforeCommit(Exception):
    """The connection failed while the transaction was still open: nothing was committed."""


class CommitUncertain(Exception):
    """The connection failed while a statement that commits was running: it may or may not have committed.
    Not retried here (the answer is 503); the client retries, and writes are exactly-once."""


@contextlib.contextmanager
def committing(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Around a statement (or transaction) that commits on an autocommit connection: a connection lost
    inside it leaves the outcome unknown, so it is not retried as a loss before commit would be."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if conn.closed or conn.broken:
            raise CommitUncertain(str(exc)) from exc
        raise


def _transient(exc: BaseException) -> bool:
    return isinstance(
        exc, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, ConnectionLostBeforeCommit)
    )


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # pool exhausted: not the database's fault
        return False
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, (psycopg.OperationalError, ConnectionLostBeforeCommit, CommitUncertain))


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine = create_engine(
            psycopg_url(settings.database_url),
            pool_size=settings.pool_size,
            max_overflow=0,
            pool_timeout=settings.pool_timeout_s,
            pool_pre_ping=False,  # see _ping_if_idle
            connect_args={
                "connect_timeout": 3,
                "options": f"-c statement_timeout={settings.statement_timeout_ms}",
                "application_name": "pulse-server",
            },
        )
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._distrust_before = 0.0  # connections returned before a connection was found lost get pinged
        event.listen(self.engine, "connect", self._mark_used)
        event.listen(self.engine, "checkin", self._mark_used)
        event.listen(self.engine, "checkout", self._ping_if_idle)

    @staticmethod
    def _mark_used(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["used_at"] = time.monotonic()

    def _ping_if_idle(self, dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        """Pessimistic disconnect handling, for connections idle long enough to have been dropped."""
        used_at = record.info.get("used_at", 0.0)
        if used_at > self._distrust_before and time.monotonic() - used_at < PING_AFTER_IDLE_S:
            return
        try:
            alive = not dbapi_connection.closed and self.engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error:
            alive = False
        if not alive:  # the pool replaces it with a new connection (and tries again)
            raise sqlalchemy.exc.DisconnectionError("pooled connection lost")

    def pool_in_use(self) -> int:
        return int(self.engine.pool.checkedout())  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            self.breaker.before_call()
        except CircuitOpenError as exc:
            raise DatabaseUnavailable(exc.retry_after_s) from exc
        try:
            yield
        except Exception as exc:
            if _is_connection_failure(exc):
                self.breaker.record_failure()
                raise DatabaseUnavailable(self.settings.breaker_reset_s, str(exc)) from exc
            if isinstance(exc, sqlalchemy.exc.TimeoutError):
                self.breaker.record_neutral()
                raise DatabaseUnavailable(1.0, "connection pool exhausted") from exc
            self.breaker.record_neutral()
            raise
        else:
            self.breaker.record_success()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session for plain CRUD (accounts, tokens, grants)."""
        with self._guard(), Session(self.engine) as session:
            yield session

    def run(self, work: Callable[[psycopg.Connection[Any]], T], retries: int = 2, autocommit: bool = False) -> T:
        """Run `work` in one transaction on a raw psycopg connection, retrying transient failures.

        With `autocommit`, `work` runs on the connection in autocommit mode instead (each statement its
        own transaction, no BEGIN or COMMIT round trips; `work` opens transactions itself where it needs
        them, and wraps what commits in `committing`).

        Retried: serialization failures, deadlocks, a connection lost before commit (at most
        `retries` times, with jittered exponential backoff). Safe because writes are exactly-once.
        """
        once = self._once_autocommit if autocommit else self._once
        with self._guard():
            try:  # the first attempt without building a Retrying: most calls need no other
                return once(work)
            except Exception as exc:
                if retries < 1 or not _transient(exc):
                    raise
            time.sleep(random.uniform(0, 0.04))  # the backoff tenacity would have waited before attempt 2
            retrying = Retrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(retries),
                wait=wait_random_exponential(multiplier=0.02, max=0.5),
                reraise=True,
            )
            for attempt in retrying:
                with attempt:
                    return once(work)
        raise AssertionError("unreachable")

    def _once(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        fairy = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
            committing = False
            try:
                with conn.transaction():
                    result = work(conn)
                    committing = True
            except psycopg.OperationalError as exc:
                if conn.closed or conn.broken:
                    fairy.invalidate()
                    self._distrust_before = time.monotonic()  # its pool mates may be gone too
                    if not committing:
                        raise ConnectionLostBeforeCommit(str(exc)) from exc
                raise  # lost during COMMIT: the outcome is unknown, so the client retries (exactly-once)
            return result
        finally:
            fairy.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in one transaction for a read that outlives one call (a snapshot
        streamed to its client chunk by chunk), inside the breaker. Not retried: once the response
        has started there is nothing to retry into. The transaction is rolled back at the end."""
        with self._guard():
            fairy = self.engine.raw_connection()
            conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
            try:
                with conn.transaction(force_rollback=True):
                    yield conn
            except psycopg.OperationalError:
                if conn.closed or conn.broken:
                    fairy.invalidate()
                    self._distrust_before = time.monotonic()
                raise
            finally:
                fairy.close()

    def _once_autocommit(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        fairy = self.engine.raw_connection()
        conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
        try:
            conn.autocommit = True
            try:
                return work(conn)
            except CommitUncertain:
                fairy.invalidate()
                self._distrust_before = time.monotonic()
                raise
            except psycopg.OperationalError as exc:
                if conn.closed or conn.broken:
                    fairy.invalidate()
                    self._distrust_before = time.monotonic()
                    raise ConnectionLostBeforeCommit(str(exc)) from exc
                raise
        finally:
            if not conn.closed:
                try:
                    conn.autocommit = False
                except psycopg.Error:
                    fairy.invalidate()  # never back into the pool in autocommit mode
            fairy.close()

    def dispose(self) -> None:
        self.engine.dispose()
