"""Reading the shape log: snapshots, changes after an offset, and one watcher per process.

The watcher LISTENs for the reader's notification, reads the new part of the log once, and wakes
every held live request; each filters that one read for its own scope (no query per client).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

from pulse_server.db.database import Database
from pulse_server.memory import release_free_memory
from pulse_server.replication.batch import ERASED_CHANNEL
from pulse_server.replication.health import ReplicationHealth
from pulse_server.replication.origin import read_status
from pulse_server.replication.reader import LOG_CHANNEL
from pulse_server.shapes import protocol
from pulse_server.shapes.callers import Callers

GRANTS_CHANNEL = "pulse_grants"
TOKENS_CHANNEL = "pulse_tokens"  # tokens revoked or removed, a user renamed (migration 0013)

log = logging.getLogger("pulse.shapes")

Offset = tuple[int, int]
CATCH_UP_CHANGES = 10_000  # changes the watcher reads from the log at once
SnapshotRow = tuple[int, bytes | None, dict[str, Any] | None]  # (user_id, stored message(s), value)


@dataclass(frozen=True)
class LogChange:
    lsn: int
    op: int
    txid: int
    user_id: int
    operation: str
    raw: str  # the row's JSON, as Postgres gives it: parsed only if some request serves this change

    @functools.cached_property
    def value(self) -> dict[str, str | None]:
        parsed: dict[str, str | None] = json.loads(self.raw)
        return parsed

    @property
    def offset(self) -> Offset:
        return (self.lsn, self.op)


@dataclass(frozen=True)
class Head:
    offset: Offset
    generation: int
    log_id: str = ""  # random per build of the log: handles carry it
    horizon: Offset = (0, 0)  # compaction removed the log up to here: an older offset must refetch

    @property
    def build(self) -> tuple[int, str]:
        return self.generation, self.log_id


def read_head(conn: psycopg.Connection[Any]) -> Head:
    row = conn.execute(
        "SELECT head_lsn, head_op, generation, log_id::text, horizon_lsn, horizon_op FROM shape_state WHERE id = 1"
    ).fetchone()
    assert row is not None
    return _head(row)


def _head(row: Sequence[Any]) -> Head:
    return Head((int(row[0]), int(row[1])), int(row[2]), row[3], (int(row[4]), int(row[5])))


def read_head_and_changes(conn: psycopg.Connection[Any], after: Offset, limit: int) -> tuple[Head, list[LogChange]]:
    """The head, and every user's changes strictly after `after` (oldest first, `limit` at most), in one
    statement: what the watcher reads at each notification (two statements there were a third of its cost)."""
    rows = conn.execute(
        "SELECT s.head_lsn, s.head_op, s.generation, s.log_id::text, s.horizon_lsn, s.horizon_op,"
        " c.lsn, c.op, c.txid, c.user_id, c.operation, c.value FROM shape_state s"
        " LEFT JOIN LATERAL (SELECT lsn, op, txid, user_id, operation, value::text AS value FROM shape_log"
        "  WHERE (lsn, op) > (%s, %s) ORDER BY lsn, op LIMIT %s) c ON true"
        " WHERE s.id = 1 ORDER BY c.lsn, c.op",
        (after[0], after[1], limit),
    ).fetchall()
    assert rows
    changes = [LogChange(int(r[6]), int(r[7]), int(r[8]), int(r[9]), r[10], r[11]) for r in rows if r[6] is not None]
    return _head(rows[0]), changes


class _RawText(Loader):
    """Text columns as their UTF-8 bytes, undecoded: stored messages go to the response as they are."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


class SnapshotRead:
    """One consistent read of a scope's current rows, held open while its response streams.

    `open()` starts a repeatable-read transaction, reads the log position the rows reflect (the
    head) and Postgres's snapshot (for snapshot-end); `chunk()` then gives the rows a few at a time,
    ordered by user and date, until it gives an empty list; `close()` ends the transaction.

    Each item is (user_id, message, value). With `columns` None (a filtered shape, whose filter the
    server applies, or columns naming `stamps` beside others), one row with its value (message None).
    Otherwise the rows' messages are joined
    in Postgres, one item per user: (user_id, b'<message>,<message>,...', None), so a coach's year of
    100 athletes is 100 values to fetch, not 36,500. With the default columns, the messages are those the
    reader stored; a user with a row that has none yet (after the log was rebuilt from a copy) comes
    row by row instead: the message where there is one, else the value. With fewer columns, Postgres
    builds each message from the stored value (the column names come from the allow-list, never from
    request text)."""

    USERS_PER_CHUNK = 8
    ROWS_PER_CHUNK = 2_000

    def __init__(self, db: Database, user_ids: Sequence[int], columns: tuple[str, ...] | None) -> None:
        self.db = db
        self.user_ids = sorted(user_ids)
        # `stamps` is folded from the stored values (row by row, by the caller), except in the default
        # columns, whose messages the reader stored: Postgres does not build it.
        folded = columns is not None and "stamps" in columns and columns != protocol.DEFAULT_COLUMNS
        self.columns = None if folded else columns
        self._stack = contextlib.ExitStack()
        self._conn: psycopg.Connection[Any] | None = None
        self._cursor: psycopg.ServerCursor[Any] | None = None
        self.exhausted = False  # the last chunk was the end of the read

    def open(self) -> tuple[Head, tuple[str, str, list[str]]]:
        """The head and (xmin, xmax, xip) of the read's snapshot."""
        try:
            conn = self._conn = self._stack.enter_context(self.db.reading())
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = read_head(conn)
            snap = conn.execute(
                "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,"
                " ARRAY(SELECT pg_snapshot_xip(s)::text) FROM pg_current_snapshot() s"
            ).fetchone()
            assert snap is not None
            cursor = self._cursor = conn.cursor("shape_snapshot", binary=True)
            cursor.adapters.register_loader("text", _RawText)
            if self.columns == protocol.DEFAULT_COLUMNS:
                cursor.execute(
                    "SELECT user_id, CASE WHEN bool_and(message IS NOT NULL)"
                    " THEN string_agg(message, ',' ORDER BY date) END"
                    " FROM shape_rows WHERE user_id = ANY(%s) GROUP BY user_id ORDER BY user_id",
                    (self.user_ids,),
                )
            elif self.columns is not None:
                cursor.execute(_built_messages(self.columns), (self.user_ids,))
            else:
                cursor.execute(
                    "SELECT user_id, NULL::text, value FROM shape_rows WHERE user_id = ANY(%s)"
                    " ORDER BY user_id, date",
                    (self.user_ids,),
                )
        except BaseException:
            self.close()
            raise
        return head, (snap[0], snap[1], list(snap[2]))

    def chunk(self) -> list[SnapshotRow]:
        """The next few rows (or users' joined rows); empty when the read is done."""
        assert self._cursor is not None and self._conn is not None
        if self.exhausted:
            return []
        if self.columns is None:
            rows = self._cursor.fetchmany(self.ROWS_PER_CHUNK)
            self.exhausted = len(rows) < self.ROWS_PER_CHUNK
            return [(int(r[0]), None, r[2]) for r in rows]
        items: list[SnapshotRow] = []
        groups = self._cursor.fetchmany(self.USERS_PER_CHUNK)
        self.exhausted = len(groups) < self.USERS_PER_CHUNK
        for user_id, joined in groups:
            if joined is not None:
                items.append((int(user_id), joined, None))
                continue
            singles = self._conn.cursor(binary=True)
            singles.adapters.register_loader("text", _RawText)
            items.extend((int(r[0]), r[1], r[2]) for r in singles.execute(
                "SELECT user_id, message, CASE WHEN message IS NULL THEN value END FROM shape_rows"
                " WHERE user_id = %s ORDER BY date",
                (int(user_id),),
            ))
        return items

    def close(self) -> None:
        """End the read (its transaction is rolled back and the connection goes back to the pool)."""
        self._cursor = self._conn = None
        self._stack.close()


def _built_messages(columns: Sequence[str]) -> sql.Composed:
    """Per user, the snapshot messages of these columns joined with commas, built from shape_rows."""
    pairs = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(
            sql.Literal(c), sql.SQL("to_json(u.username)") if c == "username" else sql.SQL("s.value -> {}").format(
                sql.Literal(c)))
        for c in columns if c in protocol.SCHEMA
    )
    headers = protocol.encode({"operation": "insert", "relation": protocol.RELATION})
    return sql.SQL(
        "SELECT s.user_id, string_agg('{{\"key\":' || to_json(format('\"public\".\"entries\"/\"%%s\"/\"%%s\"',"
        " s.value ->> 'user_id', s.value ->> 'date'))::text || ',\"value\":' || json_build_object({pairs})::text"
        " || {tail}, ',' ORDER BY s.date)"
        " FROM shape_rows s JOIN users u ON u.id = s.user_id WHERE s.user_id = ANY(%s)"
        " GROUP BY s.user_id ORDER BY s.user_id"
    ).format(pairs=pairs, tail=sql.Literal(',"headers":' + headers + "}"))


def read_changes(
    conn: psycopg.Connection[Any], user_ids: Sequence[int] | None, after: Offset, limit: int
) -> list[LogChange]:
    """Changes strictly after `after`, oldest first; all users when `user_ids` is None."""
    if user_ids is None:
        rows = conn.execute(
            "SELECT lsn, op, txid, user_id, operation, value::text FROM shape_log WHERE (lsn, op) > (%s, %s)"
            " ORDER BY lsn, op LIMIT %s",
            (after[0], after[1], limit),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT lsn, op, txid, user_id, operation, value::text FROM shape_log"
            " WHERE user_id = ANY(%s) AND (lsn, op) > (%s, %s) ORDER BY lsn, op LIMIT %s",
            (list(user_ids), after[0], after[1], limit),
        ).fetchall()
    return [LogChange(int(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in rows]


@dataclass(frozen=True)
class Before:
    """A row as it was just before a change: `row` None when it did not exist (or was deleted).
    `known` False when the log cannot tell (see `rows_before`)."""

    known: bool
    row: dict[str, str | None] | None = None


UNKNOWN = Before(False)


def rows_before(conn: psycopg.Connection[Any], changes: Sequence[LogChange], tail_changes: int) -> dict[Offset, Before]:
    """For each change (one scope's, in log order), its row as it was just before it: from the previous
    change of the same row, in these changes or else in the log.

    That previous change is the row's state before this one only if compaction removed nothing between
    them. Compaction folds updates below its live tail (the newest `tail_changes` changes when it runs),
    and that bound only moves up: a previous change at or past the (tail_changes + 1)-th newest change
    now was never below it, so nothing after it was folded. Older (or missing: a log rebuilt from a copy,
    or trimmed) it is UNKNOWN. An insert's row did not exist before it."""
    boundary_row = conn.execute("SELECT lsn, op FROM shape_log ORDER BY lsn DESC, op DESC OFFSET %s LIMIT 1",
                                (tail_changes,)).fetchone()
    boundary: Offset = (0, 0) if boundary_row is None else (int(boundary_row[0]), int(boundary_row[1]))
    befores: dict[Offset, Before] = {}
    previous: dict[tuple[int, str], LogChange] = {}
    lookups: list[LogChange] = []
    for change in changes:
        key = (change.user_id, str(change.value.get("date")))
        earlier = previous.get(key)
        if change.operation == "insert":
            befores[change.offset] = Before(True)
        elif earlier is not None:
            befores[change.offset] = _before(earlier.operation, earlier.value, earlier.offset, boundary)
        else:
            lookups.append(change)
        previous[key] = change
    if lookups:
        found = conn.execute(
            "SELECT k.lsn, k.op, p.operation, p.value::text, p.lsn, p.op"
            " FROM unnest(%s::int8[], %s::text[], %s::int8[], %s::int4[]) AS k(user_id, date, lsn, op)"
            " LEFT JOIN LATERAL (SELECT l.operation, l.value, l.lsn, l.op FROM shape_log l"
            "  WHERE l.user_id = k.user_id AND l.date = k.date::date AND (l.lsn, l.op) < (k.lsn, k.op)"
            "  ORDER BY l.lsn DESC, l.op DESC LIMIT 1) p ON true",
            ([c.user_id for c in lookups], [str(c.value.get("date")) for c in lookups],
             [c.lsn for c in lookups], [c.op for c in lookups]),
        ).fetchall()
        for lsn, op, operation, raw, p_lsn, p_op in found:
            befores[(int(lsn), int(op))] = UNKNOWN if operation is None else _before(
                operation, json.loads(raw), (int(p_lsn), int(p_op)), boundary)
    return befores


def _before(operation: str, value: dict[str, str | None], offset: Offset, boundary: Offset) -> Before:
    if offset < boundary:
        return UNKNOWN
    return Before(True, None if operation == "delete" else value)


# The text form of each column of `entries` a shape carries, as pgoutput sends it (each type's output
# function: 't'/'f' for booleans), built from the allow-list of columns, never from request text.
_ENTRY_TEXT = sql.SQL(", ").join(
    sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE format('%%s', {c}) END").format(c=sql.Identifier(c))
    for c in protocol.ROW_COLUMNS
)


@dataclass(frozen=True)
class SubsetRead:
    """A subset snapshot's rows, read from `entries` itself in one repeatable-read transaction, and that
    transaction's Postgres snapshot and WAL position: Electric's client skips a later change whose
    transaction the snapshot already saw (for a row it holds), until the stream passes that position."""

    xmin: str
    xmax: str
    xip: list[str]
    database_lsn: int
    rows: list[dict[str, str | None]]
    head: Offset  # the log's head in the same snapshot: every change up to it is in `rows`


def read_subset(conn: psycopg.Connection[Any], user_ids: Sequence[int]) -> SubsetRead:
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    snap = conn.execute(
        "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, ARRAY(SELECT pg_snapshot_xip(s)::text),"
        " pg_current_wal_insert_lsn() - '0/0'::pg_lsn FROM pg_current_snapshot() s"
    ).fetchone()
    assert snap is not None
    rows = conn.execute(
        sql.SQL("SELECT {} FROM entries WHERE user_id = ANY(%s) ORDER BY user_id, date").format(_ENTRY_TEXT),
        (sorted(user_ids),),
    ).fetchall()
    return SubsetRead(snap[0], snap[1], list(snap[2]), int(snap[3]),
                      [dict(zip(protocol.ROW_COLUMNS, row, strict=True)) for row in rows], read_head(conn).offset)


class LogWatcher:
    """One per process: follows the log head and keeps its recent tail in memory.

    It also notices what held requests must answer differently: grants changed (a coach's scope), the
    log was rebuilt (a new build: every handle refetches; the tail is read again from the new log), the
    replication stopped following (`health`: up-to-date becomes 503) and the server shutting down. Each
    bumps `epoch` and wakes every held request, which then looks at what changed. Tokens revoked or
    removed wake the held requests of their users only, which read their token again.

    While its LISTEN holds it keeps, in `callers`, who each live client's token is and what it may see,
    and knows the log's build and horizon: a live request is then answered without Postgres
    (`callers.py`)."""

    def __init__(self, dsn: str, keep_bytes: int = 16 << 20, health: ReplicationHealth | None = None) -> None:
        self.dsn = dsn
        # The tail's size in memory, bounded: a change costs its JSON plus ~400 bytes (measured: 965
        # bytes for a 585-byte row), so 16 MiB is the last ~17,000 changes of full entries. Live
        # clients read at the head; one further behind reads the database. (Bounded by a count of
        # 200,000 changes, one 146,000-row transaction left the server 110 MB bigger for good.)
        self.keep_bytes = keep_bytes
        self.health = health
        self.tail: list[LogChange] = []  # ordered by offset
        # The tail's changes by user, each list ordered by offset: a request finds its scope's changes
        # without walking everyone's since its offset (10,000 held requests, bench/shape_latency.py).
        self.by_user: dict[int, list[LogChange]] = {}
        self.tail_bytes = 0  # the tail's estimated size (`_cost`)
        self.offsets: list[Offset] = []
        self.head: Offset = (0, 0)
        self.build: tuple[int, str] | None = None  # the log's (generation, log id) the tail belongs to
        self.base: Offset | None = None  # every change after this offset is in `tail` (None: not yet read)
        self.floor: Offset = (0, 0)  # the offset the tail starts after, while it is being read
        self.grants_epoch = 0  # bumped whenever grants change: coaches' scopes must be checked again
        self.horizon: Offset = (0, 0)  # the log's horizon, as last read (with the head, at every notification)
        self.callers = Callers()
        self.epoch = 0  # bumped by anything that must wake every held request (grants, rebuild, health, shutdown)
        self.closing = False  # the server is shutting down: held requests end at once
        self.loop: asyncio.AbstractEventLoop | None = None
        # Held requests, each with the users whose changes concern it (None: any change, e.g. grants) and
        # the user whose token it holds (None: not woken by tokens changing); indexed by those users, so
        # that a commit wakes its users' requests without a look at every held one (with 5,000 held,
        # that look was half a worker's event loop while 50 changes a second were written).
        self._waiters: set[Waiter] = set()
        self._by_user: dict[int, set[Waiter]] = {}
        self._any_change: set[Waiter] = set()
        self._by_holder: dict[int, set[Waiter]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="shape-log-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def release_all(self) -> None:
        """On the event loop, at shutdown: every held request and stream ends now (clients reconnect)."""
        self.closing = True
        self.epoch += 1
        self._wake(None)

    def known_head(self) -> Head | None:
        """The log's build, horizon and the head of the tail, while the tail is caught up (else None). The
        head is the tail's, which the log's own head may pass without a change (so only for requests that
        carry an offset)."""
        with self._lock:
            if self.base is None or self.build is None:
                return None
            return Head(self.head, self.build[0], self.build[1], self.horizon)

    def covers(self, after: Offset) -> bool:
        """Whether the in-memory tail holds every change after `after`."""
        with self._lock:
            return self.base is not None and after >= self.base

    def changes_after(self, after: Offset, user_ids: set[int]) -> tuple[list[LogChange], Offset]:
        """This scope's changes after `after`, and the head they reach (read together)."""
        with self._lock:
            start = bisect.bisect_right(self.offsets, after)
            if len(user_ids) >= len(self.tail) - start:  # a wide scope, or few changes since: walk them
                return [c for c in self.tail[start:] if c.user_id in user_ids], self.head
            found: list[LogChange] = []
            for user_id in user_ids:
                own = self.by_user.get(user_id)
                if own:
                    found += own[bisect.bisect_right(own, after, key=_offset_of):]
            if len(user_ids) > 1:
                found.sort(key=_offset_of)
            return found, self.head

    async def wait(self, timeout_s: float, since: Offset, epoch: int, user_ids: set[int] | None = None,
                   holder: tuple[int, int] | None = None) -> None:
        """Until a change for one of `user_ids` (or an event for every request) arrives, or the timeout.
        Returns at once if the log moved past `since`, or `epoch` moved on, while the caller was looking.
        `holder`: (user id, mark) of the token the request holds; it also wakes when that user's tokens
        change, and returns at once if the mark moved."""
        if self.head > since or self.epoch != epoch or self.closing:
            return
        if holder is not None and self.callers.mark(holder[0]) != holder[1]:
            return
        wanted = None if user_ids is None else frozenset(user_ids)
        waiter = (asyncio.Event(), wanted, None if holder is None else holder[0])
        self._enlist(waiter)
        # A timer sets the event: asyncio.wait_for would make a task for every wait and cancel it at
        # every timeout, most of a worker's time with thousands of held requests (bench/shape_latency.py).
        timer = asyncio.get_running_loop().call_later(timeout_s, waiter[0].set)
        try:
            await waiter[0].wait()
        finally:
            timer.cancel()
            self._discharge(waiter)

    def _enlist(self, waiter: Waiter) -> None:
        _, wanted, holder = waiter
        self._waiters.add(waiter)
        if wanted is None:
            self._any_change.add(waiter)
        else:
            for user_id in wanted:
                self._by_user.setdefault(user_id, set()).add(waiter)
        if holder is not None:
            self._by_holder.setdefault(holder, set()).add(waiter)

    def _discharge(self, waiter: Waiter) -> None:
        _, wanted, holder = waiter
        self._waiters.discard(waiter)
        if wanted is None:
            self._any_change.discard(waiter)
        else:
            for user_id in wanted:
                _unlist(self._by_user, user_id, waiter)
        if holder is not None:
            _unlist(self._by_holder, holder, waiter)

    def _wake(self, users: frozenset[int] | None) -> None:
        """On the event loop: wake the held requests these changes concern (all of them for grants)."""
        woken: list[Waiter]
        if users is None:
            woken = list(self._waiters)
        else:
            woken = list(self._any_change)
            for user_id in users:
                woken += self._by_user.get(user_id, ())
        for event, _, _ in woken:
            event.set()

    def _wake_holders(self, users: frozenset[int] | None) -> None:
        """On the event loop: wake the held requests holding these users' tokens (everyone's for None)."""
        woken: list[Waiter] = []
        for waiters in (self._by_holder.values() if users is None
                        else (self._by_holder.get(u, ()) for u in users)):
            woken += waiters
        for event, _, _ in woken:
            event.set()

    def wake_all(self, grants: bool = False) -> None:
        """From the watcher's thread: an event every held request must look at."""
        with self._lock:
            self.epoch += 1
            if grants:
                self.grants_epoch += 1
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except psycopg.Error as exc:
                log.warning("shape log watcher reconnecting", extra={"fields": {"error": str(exc)}})
                if self.health is not None and self.health.failed(f"the database cannot be read: {exc}"):
                    self.wake_all()
            except Exception as exc:  # anything else (a notification it cannot read, a bug): never a silent end
                # of every live client's changes. Logged with its traceback, shown by /readyz until the next
                # health check after it follows again, and started again like a lost connection.
                log.exception("shape log watcher failed; starting it again", extra={"fields": {"error": repr(exc)}})
                if self.health is not None:
                    self.health.failed(f"the shape log watcher failed: {exc!r}")
                self.wake_all()
            self._stop.wait(1.0)

    def _follow(self) -> None:
        with self._lock:
            self.base = None  # until we have caught up again
        self.callers.listen(False)
        try:
            self._listen()
        finally:
            self.callers.listen(False)  # notifications may be missed from here: nothing held is trusted
            with self._lock:
                self.base = None  # nor the tail: requests read the database until it has caught up again

    def _listen(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="pulse-shape-watcher",
                             connect_timeout=5) as conn:
            conn.execute(f"LISTEN {LOG_CHANNEL}")
            conn.execute(f"LISTEN {GRANTS_CHANNEL}")
            conn.execute(f"LISTEN {ERASED_CHANNEL}")
            conn.execute(f"LISTEN {TOKENS_CHANNEL}")
            self.callers.listen(True)  # every revocation from now on reaches us
            self.build = None
            self._check_build(conn)
            # Grants or tokens may have changed while no LISTEN held, and their notifications are lost:
            # every held request looks again, and reads its caller again (its mark moved just above).
            self.wake_all()
            checked = 0.0
            while not self._stop.is_set():
                if self.health is not None and time.monotonic() - checked >= self.health.next_check_s:
                    checked = time.monotonic()
                    if self.health.update(read_status(conn)):
                        self.wake_all()
                notes = list(conn.notifies(timeout=self._idle_s(), stop_after=1))
                if not notes:
                    continue
                notes += conn.notifies(timeout=0)  # several commits, one read
                channels = {n.channel for n in notes}
                if TOKENS_CHANNEL in channels:
                    self._tokens_changed([n.payload for n in notes if n.channel == TOKENS_CHANNEL])
                if GRANTS_CHANNEL in channels:
                    self.callers.forget_coaches()
                    self.wake_all(grants=True)
                head, changes = read_head_and_changes(conn, self.head, CATCH_UP_CHANGES)
                if not self._check_build(conn, head):
                    self._catch_up(conn, self.head, changes)
                if ERASED_CHANNEL in channels:
                    self._forget_erased([n.payload for n in notes if n.channel == ERASED_CHANNEL])

    def _tokens_changed(self, payloads: list[str]) -> None:
        """Tokens of these users were revoked or removed (an empty payload: anyone's): what `callers` holds of
        them goes, and their held requests wake to read their token again."""
        named: set[int] = set()
        users: frozenset[int] | None = None
        try:
            for payload in payloads:
                named.update(int(u) for u in payload.split(","))
            users = frozenset(named)
        except ValueError:  # empty (everyone's), or not the trigger's: forget everyone rather than fail
            users = None
        self.callers.forget_tokens(users)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_holders, users)

    def _idle_s(self) -> float:
        return 1.0 if self.health is None else min(1.0, self.health.next_check_s)

    def _check_build(self, conn: psycopg.Connection[Any], head: Head | None = None) -> bool:
        """When the log is another build than the tail's (first read, or rebuilt since): read its tail
        again from the new log, and wake every held request (their handles are stale). Whether it was.
        `head`: as just read, if it was."""
        head = head or read_head(conn)
        with self._lock:
            self.horizon = head.horizon
        if head.build == self.build:
            return False
        first = self.build is None
        # The tail begins at the head (older offsets are read from the database). A rebuilt log may
        # start below the old head (another cluster's LSNs): nothing of the old tail is kept.
        start = head.offset
        with self._lock:
            self.build = head.build
            self.tail, self.offsets, self.tail_bytes, self.by_user = [], [], 0, {}
            self.base, self.head, self.floor = None, start, start
        self._catch_up(conn, start)
        with self._lock:
            self.base = self.floor
        if not first:
            log.info("shape log rebuilt: held requests refetch", extra={"fields": {"generation": head.generation}})
            self.wake_all()
        return True

    def _forget_erased(self, payloads: list[str]) -> None:
        """The tail's changes of erased days from before their erasure, as the reader removed them from the
        log (docs/erasure.md), so no held request serves them again."""
        erased = [json.loads(p) for p in payloads]

        def gone(c: LogChange) -> bool:
            for e in erased:
                if c.user_id == e["user_id"] and c.lsn < e["lsn"]:
                    day = c.value.get("date") or ""
                    if (e["from"] is None or day >= e["from"]) and (e["to"] is None or day <= e["to"]):
                        return True
            return False

        with self._lock:
            kept = [c for c in self.tail if not gone(c)]
            if len(kept) != len(self.tail):
                self.tail, self.offsets = kept, [c.offset for c in kept]
                self.by_user = {}
                for change in kept:
                    self.by_user.setdefault(change.user_id, []).append(change)
                self.tail_bytes = sum(_cost(c) for c in kept)

    def _catch_up(self, conn: psycopg.Connection[Any], after: Offset, first: list[LogChange] | None = None) -> None:
        """The changes after `after` into the tail, `CATCH_UP_CHANGES` a read (`first`: the first read, made)."""
        users: set[int] = set()
        read = 0
        while True:
            changes = read_changes(conn, None, after, CATCH_UP_CHANGES) if first is None else first
            first = None
            users.update(c.user_id for c in changes)
            if not changes:
                break
            read += len(changes)
            with self._lock:
                self._add(changes)
            after = changes[-1].offset
            if len(changes) < CATCH_UP_CHANGES:
                break
        if self.loop is not None and users:
            self.loop.call_soon_threadsafe(self._wake, frozenset(users))
        if read >= CATCH_UP_CHANGES:  # a burst: what it took is free again (most of it was cut from the tail)
            release_free_memory()

    def _add(self, changes: list[LogChange]) -> None:
        """Under the lock: changes newly read from the log (after the head) join the tail."""
        self.tail.extend(changes)
        for change in changes:
            self.by_user.setdefault(change.user_id, []).append(change)
        self.offsets.extend(c.offset for c in changes)
        self.tail_bytes += sum(_cost(c) for c in changes)
        if self.tail_bytes > self.keep_bytes * 5 // 4:  # 25% slack: not a cut on every commit
            self._forget_oldest()
        self.head = changes[-1].offset

    def _forget_oldest(self) -> None:
        """Under the lock: the tail cut down to `keep_bytes`; older offsets go to the database."""
        cut, size = 0, self.tail_bytes
        while size > self.keep_bytes and cut < len(self.tail) - 1:
            size -= _cost(self.tail[cut])
            cut += 1
        if cut:
            self.floor = self.offsets[cut - 1]
            if self.base is not None:
                self.base = self.floor
            for user_id, count in collections.Counter(c.user_id for c in self.tail[:cut]).items():
                own = self.by_user[user_id]  # the oldest changes of the tail are each user's oldest
                if count == len(own):
                    del self.by_user[user_id]
                else:
                    del own[:count]
            self.tail, self.offsets, self.tail_bytes = self.tail[cut:], self.offsets[cut:], size


Waiter = tuple[asyncio.Event, frozenset[int] | None, int | None]  # (event, users it wants, user whose token)


def _unlist(index: dict[int, set[Waiter]], key: int, waiter: Waiter) -> None:
    waiters = index.get(key)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del index[key]


def _offset_of(change: LogChange) -> Offset:
    return change.offset


def _cost(change: LogChange) -> int:
    """A change's estimated size in the tail: its JSON and ~400 bytes of objects around it."""
    return len(change.raw) + 400
