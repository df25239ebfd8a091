"""The SQLite unit of work: entry changes, their outbox mutations and the clock commit together."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pulse_cli.store import meta
from pulse_cli.store.connection import ensure_client_id, read_meta, write_meta
from pulse_cli.store.entries import SqliteEntryRepository
from pulse_core.errors import StoreError, UsageError
from pulse_core.ports import EntryChange, UnitOfWork
from sync.hlc import HybridClock, Stamp


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def wire_value(value: Any) -> Any:
    """Decimals go on the wire as JSON numbers; they carry at most two decimal places."""
    return float(value) if isinstance(value, Decimal) else value


class SqliteUnitOfWork(UnitOfWork):
    """`BEGIN IMMEDIATE` on enter, so two `pulse` processes never interleave a read-modify-write."""

    def __init__(self, conn: sqlite3.Connection, wall: Callable[[], int] = wall_ms) -> None:
        self.conn = conn
        self.wall = wall
        self.entries = SqliteEntryRepository(conn)
        self._clock: HybridClock | None = None

    def __enter__(self) -> SqliteUnitOfWork:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"store: busy or locked: {exc}") from exc
        self._clock = None
        return self

    def _hlc(self) -> HybridClock:
        if self._clock is None:
            last = read_meta(self.conn, meta.HLC_LAST)
            offset = int(read_meta(self.conn, meta.CLOCK_OFFSET_MS) or 0)
            self._clock = HybridClock(
                ensure_client_id(self.conn),
                self.wall,
                Stamp.parse(last) if last else None,
                offset_ms=offset,
            )
        return self._clock

    def next_stamp(self) -> str:
        return str(self._hlc().now())

    def observe(self, stamp: Stamp) -> None:
        """A stamp made elsewhere (a browser's): later local stamps are ordered after it."""
        self._hlc().observe(stamp)

    def record(self, change: EntryChange) -> None:
        if read_meta(self.conn, meta.ACCOUNT_ROLE) == "coach":
            # The sync server refuses every write of a coach (403): refuse it here, before it is queued.
            user = read_meta(self.conn, meta.ACCOUNT_USERNAME) or "a coach"
            raise UsageError("account", user, "an athlete's account",
                             f"account: this home is signed in as {user}, a coach: coaches read their athletes'"
                             " entries and cannot log their own (use another --home for an athlete)")
        try:
            self.queue(change.user, change.date, change.op, change.fields, change.base, change.stamp, change.source)
        except sqlite3.Error as exc:
            raise StoreError(f"store: cannot record the change to the outbox: {exc}") from exc

    def queue(
        self, user: str, date: dt.date, op: str, fields: Mapping[str, Any], base: Mapping[str, str | None],
        stamp: str, source: str, client_id: str | None = None, client_seq: int | None = None,
    ) -> int:
        """The one writer of the outbox: a mutation queued for the sync server (in this unit's transaction),
        under the device's own id, or under `client_id` and `client_seq` (a browser's, relayed); its seq."""
        cursor = self.conn.execute(
            "INSERT INTO outbox (user_id, date, op, fields, base, hlc, source, created_at, client_id, client_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, date.isoformat(), op, json.dumps({k: wire_value(v) for k, v in fields.items()}, sort_keys=True),
             json.dumps(base, sort_keys=True), stamp, source, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             client_id, client_seq),
        )
        return int(cursor.lastrowid or 0)

    def commit(self) -> None:
        if not self.conn.in_transaction:
            return
        if self._clock is not None:
            write_meta(self.conn, meta.HLC_LAST, str(self._clock.last))
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store: commit failed: {exc}") from exc
        self._clock = None

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._clock = None
