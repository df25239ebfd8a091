"""Whole transactions held in memory, written to the shape log set-wise (docs/shapes.md, "Batches").

Each round's transactions that arrived whole and small go into the log with one `INSERT ... SELECT FROM
unnest(...)`, and into `shape_rows` as the last change of each row they touch: a few statements per
batch, whatever its number of changes. (Bigger ones are staged on the way: `staging.py`.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json

from pulse_server.replication.pgoutput import Begin, Change, Commit, Relation, Truncate
from pulse_server.shapes.protocol import row_value, stored_message

SYNCED_TABLES = ("entries",)
ERASURES_TABLE = "erasures"  # published too (migration 0011): its inserts purge the log of the erased days
ERASED_CHANNEL = "pulse_erased"  # an erasure's days left the log: watchers drop them from their tails

Key = tuple[int, str]  # (user_id, date)


@dataclass
class Transaction:
    begin: Begin
    changes: list[Change | Truncate] = field(default_factory=list)  # of synced tables, and erasure records
    commit: Commit | None = None
    staged: bool = False  # its changes are in the staging table, not in `changes`


def synced(change: Change | Truncate) -> bool:
    if isinstance(change, Truncate):
        return any(r.name in SYNCED_TABLES for r in change.relations)
    return isinstance(change.relation, Relation) and change.relation.name in SYNCED_TABLES


def erasure_record(change: Change | Truncate) -> bool:
    """An erasure's record (an insert into `erasures`): the reader purges the log of its days."""
    return (isinstance(change, Change) and change.operation == "insert" and change.new is not None
            and isinstance(change.relation, Relation) and change.relation.name == ERASURES_TABLE)


@dataclass(frozen=True)
class Erased:
    """An erasure record read from the stream: its user, days (None: an open end) and transaction's LSN."""

    user_id: int
    first: str | None
    last: str | None
    lsn: int

    @classmethod
    def of(cls, record: Change, lsn: int) -> Erased:
        assert record.new is not None
        return cls(int(record.new["user_id"] or 0), record.new.get("date_from"), record.new.get("date_to"), lsn)

    def payload(self) -> str:
        return json.dumps({"user_id": self.user_id, "from": self.first, "to": self.last, "lsn": self.lsn})


def erase(conn: psycopg.Connection[Any], erasures: Iterable[Erased]) -> None:
    """Every change of an erased day before the erasure's transaction leaves the log, so no value of it
    stays (docs/erasure.md); the erasure's own deletes (key only) stay, and a client behind them reads
    those, which is all it needs of the rows. The watchers drop them from their tails."""
    for erased in erasures:
        conn.execute(
            "DELETE FROM shape_log WHERE user_id = %s AND (%s::date IS NULL OR date >= %s::date)"
            " AND (%s::date IS NULL OR date <= %s::date) AND lsn < %s",
            (erased.user_id, erased.first, erased.first, erased.last, erased.last, erased.lsn))
        conn.execute("SELECT pg_notify(%s, %s)", (ERASED_CHANNEL, erased.payload()))


def change_row(change: Change) -> tuple[Key, dict[str, str | None]]:
    """The row a change leaves (or, for a delete, its key), and the row's key."""
    row = change.new if change.new is not None else change.old
    assert row is not None
    if change.new is not None and change.old is not None:
        row = {**change.old, **change.new}
    return (int(row["user_id"] or 0), str(row["date"])), row


def truncate_rows(conn: psycopg.Connection[Any]) -> None:
    """A truncate of a synced table: clients cannot follow it change by change, so every handle must refetch."""
    conn.execute("DELETE FROM shape_rows")
    conn.execute("UPDATE shape_state SET generation = generation + 1, log_id = gen_random_uuid() WHERE id = 1")


@dataclass(frozen=True)
class LogEntry:
    lsn: int
    op: int
    xid: int  # its transaction's 32-bit id: the log's txid is it with the reader's xid epoch (`Batch.write`)
    key: Key
    operation: str  # "insert" | "update" | "delete"
    row: dict[str, str | None]

    @functools.cached_property
    def shown(self) -> dict[str, str | None]:
        """The row's shape columns, the value shape_log and shape_rows hold for the change."""
        return row_value(self.row)


@dataclass
class Batch:
    """One round's transactions, written set-wise: every change into shape_log, and the last change of each row
    into shape_rows (a few statements per batch, not several per change)."""

    log: list[LogEntry] = field(default_factory=list)
    rows: dict[Key, LogEntry] = field(default_factory=dict)  # the last change of each row, after any truncate
    truncated: bool = False  # a truncate came before the changes in `rows`
    usernames: dict[int, str | None] = field(default_factory=dict)
    erasures: list[Erased] = field(default_factory=list)  # erasure records committed in these transactions

    def add(self, entry: LogEntry) -> None:
        self.log.append(entry)
        self.rows[entry.key] = entry

    def truncate(self) -> None:
        self.rows.clear()
        self.truncated = True

    def current(self, key: Key) -> dict[str, str | None] | None:
        """The row as this batch left it so far; None when only the database knows."""
        entry = self.rows.get(key)
        if entry is None:
            return {} if self.truncated else None
        return {} if entry.operation == "delete" else entry.row

    @property
    def plain(self) -> bool:
        """Only changes of rows: no erasure to purge the log for, no truncate (`write_alone` can log it)."""
        return not self.erasures and not self.truncated

    def write(self, conn: psycopg.Connection[Any], epoch: int) -> None:
        """Into the log and `shape_rows`, in the caller's transaction (which sets the new head after)."""
        if self.log:
            conn.execute(
                "INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
                " SELECT r.lsn, r.op, %s::int8 | r.xid, r.user_id, r.date, r.operation, r.value"
                f" FROM json_to_recordset(%s) AS {_LOG_RECORD} ON CONFLICT DO NOTHING",
                (epoch << 32, self._log_document()),
            )
        erase(conn, self.erasures)
        if self.truncated:
            truncate_rows(conn)
        gone, present = self._row_documents()
        if gone is not None:
            conn.execute(f"DELETE FROM shape_rows s USING json_to_recordset(%s) AS {_GONE_RECORD} WHERE {_GONE_MATCH}",
                         (gone,))
        if present is not None:
            conn.execute(f"INSERT INTO shape_rows (user_id, date, value, lsn, op, message) {_PRESENT_ROWS}",
                         {"present": present})

    def write_alone(self, conn: psycopg.Connection[Any], channel: str) -> tuple[int, int] | None:
        """A plain batch in one statement, its own transaction: the log, `shape_rows`, the new head and the
        notification that wakes the watchers (one statement a round, not seven: at a few transactions a round,
        the statements were most of the reader's cost). The new head, or None when every change was logged
        already (a replay after a crash: the head stays and no one is woken)."""
        assert self.plain
        gone, present = self._row_documents()
        row = conn.execute(
            "WITH logged AS (INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
            "  SELECT r.lsn, r.op, ((pg_current_xact_id()::text::int8 >> 32) << 32) | r.xid, r.user_id, r.date,"
            f"  r.operation, r.value FROM json_to_recordset(%(log)s) AS {_LOG_RECORD}"
            "  ON CONFLICT DO NOTHING RETURNING lsn, op),"
            f" gone AS (DELETE FROM shape_rows s USING json_to_recordset(%(gone)s) AS {_GONE_RECORD}"
            f"  WHERE {_GONE_MATCH}),"
            f" present AS (INSERT INTO shape_rows (user_id, date, value, lsn, op, message) {_PRESENT_ROWS}),"
            " head AS (UPDATE shape_state s SET head_lsn = h.lsn, head_op = h.op, updated_at = now()"
            "  FROM (SELECT lsn, op FROM logged ORDER BY lsn DESC, op DESC LIMIT 1) h"
            "  WHERE s.id = 1 AND (h.lsn, h.op) > (s.head_lsn, s.head_op) RETURNING s.head_lsn, s.head_op)"
            " SELECT head_lsn, head_op, pg_notify(%(channel)s, head_lsn || '_' || head_op) FROM head",
            {"log": self._log_document(), "gone": gone or "[]", "present": present or "[]", "channel": channel},
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _log_document(self) -> Json:
        return _document([{"lsn": e.lsn, "op": e.op, "xid": e.xid, "user_id": e.key[0], "date": e.key[1],
                           "operation": e.operation, "value": e.shown} for e in self.log])

    def _row_documents(self) -> tuple[Json | None, Json | None]:
        """The rows the batch deleted (their keys and offsets), and those it left (their values and snapshot
        messages: the message with the default columns is encoded once here, not on every snapshot request)."""
        gone = [{"user_id": e.key[0], "date": e.key[1], "lsn": e.lsn, "op": e.op}
                for e in self.rows.values() if e.operation == "delete"]
        present = [{"user_id": e.key[0], "date": e.key[1], "value": e.shown, "lsn": e.lsn, "op": e.op,
                    "message": stored_message(e.row, *e.key, self.usernames.get(e.key[0]))}
                   for e in self.rows.values() if e.operation != "delete"]
        return (_document(gone) if gone else None), (_document(present) if present else None)


_LOG_RECORD = "r(lsn int8, op int4, xid int8, user_id int8, date date, operation text, value jsonb)"
_GONE_RECORD = "k(user_id int8, date date, lsn int8, op int4)"
_GONE_MATCH = "s.user_id = k.user_id AND s.date = k.date AND (s.lsn, s.op) < (k.lsn, k.op)"
_PRESENT_ROWS = (
    "SELECT * FROM json_to_recordset(%(present)s) AS r(user_id int8, date date, value jsonb, lsn int8, op int4,"
    " message text)"
    " ON CONFLICT (user_id, date) DO UPDATE SET value = excluded.value, lsn = excluded.lsn, op = excluded.op,"
    " message = excluded.message WHERE (shape_rows.lsn, shape_rows.op) < (excluded.lsn, excluded.op)"
)


def build_batch(conn: psycopg.Connection[Any], transactions: list[Transaction]) -> Batch:
    """The log entries of these (in-memory) transactions, and the final state of every row they touch."""
    batch = Batch()
    for tx in transactions:
        lsn = tx.begin.final_lsn
        batch.erasures.extend(Erased.of(c, lsn) for c in tx.changes if isinstance(c, Change) and erasure_record(c))
        for op, change in enumerate(c for c in tx.changes if synced(c)):
            if isinstance(change, Truncate):
                batch.truncate()
                continue
            key, row = change_row(change)
            if change.unchanged:  # unchanged TOASTed columns are not sent: keep what we have
                previous = batch.current(key)
                if previous is None:
                    stored = conn.execute(
                        "SELECT value FROM shape_rows WHERE user_id = %s AND date = %s", key
                    ).fetchone()
                    previous = stored[0] if stored else {}
                row = {**{k: previous.get(k) for k in change.unchanged}, **row}
            batch.add(LogEntry(lsn, op, tx.begin.xid, key, change.operation, row))
    return batch


def _document(rows: list[dict[str, Any]]) -> Json:
    """Rows as one JSON array for json_to_recordset(): a statement's whole batch in one parameter, encoded
    by orjson (per-column arrays cost psycopg's array dumpers more CPU than the rest of the reader's round)."""
    return Json(rows, dumps=orjson.dumps)
