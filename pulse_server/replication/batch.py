"""Whole transactions held in memory, written to the shape log set-wise (docs/shapes.md, "Batches").

Each round's transactions that arrived whole and small go into the log with one `INSERT ... SELECT FROM
unnest(...)`, and into `shape_rows` as the last change of each row they touch: a few statements per
batch, whatever its number of changes. (Bigger ones are staged on the way: `staging.py`.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
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
    txid: int
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

    def write(self, conn: psycopg.Connection[Any]) -> None:
        if self.log:
            conn.execute(
                "INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
                " SELECT * FROM json_to_recordset(%s) AS r(lsn int8, op int4, txid int8, user_id int8,"
                " date date, operation text, value jsonb) ON CONFLICT DO NOTHING",
                (_document([{"lsn": e.lsn, "op": e.op, "txid": e.txid, "user_id": e.key[0], "date": e.key[1],
                             "operation": e.operation, "value": e.shown} for e in self.log]),),
            )
        erase(conn, self.erasures)
        if self.truncated:
            truncate_rows(conn)
        gone = [e for e in self.rows.values() if e.operation == "delete"]
        if gone:
            conn.execute(
                "DELETE FROM shape_rows s USING unnest(%b::int8[], %b::text[]::date[], %b::int8[], %b::int4[])"
                " AS k(user_id, date, lsn, op)"
                " WHERE s.user_id = k.user_id AND s.date = k.date AND (s.lsn, s.op) < (k.lsn, k.op)",
                _columns(gone, lambda e: (e.key[0], e.key[1], e.lsn, e.op)),
            )
        present = [e for e in self.rows.values() if e.operation != "delete"]
        if present:
            # `message` is the row's snapshot message with the default columns, encoded once here rather than
            # on every snapshot request.
            conn.execute(
                "INSERT INTO shape_rows (user_id, date, value, lsn, op, message)"
                " SELECT * FROM json_to_recordset(%s) AS r(user_id int8, date date, value jsonb, lsn int8,"
                " op int4, message text)"
                " ON CONFLICT (user_id, date) DO UPDATE SET value = excluded.value, lsn = excluded.lsn,"
                " op = excluded.op, message = excluded.message"
                " WHERE (shape_rows.lsn, shape_rows.op) < (excluded.lsn, excluded.op)",
                (_document([{"user_id": e.key[0], "date": e.key[1], "value": e.shown, "lsn": e.lsn, "op": e.op,
                             "message": stored_message(e.row, *e.key, self.usernames.get(e.key[0]))}
                            for e in present]),),
            )


def build_batch(conn: psycopg.Connection[Any], transactions: list[Transaction], epoch: int) -> Batch:
    """The log entries of these (in-memory) transactions, and the final state of every row they touch."""
    batch = Batch()
    for tx in transactions:
        lsn = tx.begin.final_lsn
        txid = (epoch << 32) | tx.begin.xid
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
            batch.add(LogEntry(lsn, op, txid, key, change.operation, row))
    return batch


def _document(rows: list[dict[str, Any]]) -> Json:
    """Rows as one JSON array for json_to_recordset(): a statement's whole batch in one parameter, encoded
    by orjson (per-column arrays cost psycopg's array dumpers more CPU than the rest of the reader's round)."""
    return Json(rows, dumps=orjson.dumps)


def _columns(entries: list[LogEntry], fields: Callable[[LogEntry], tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to columns: one array parameter per column, for unnest()."""
    return [list(column) for column in zip(*(fields(e) for e in entries), strict=True)]
