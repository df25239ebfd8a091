"""The Postgres entry repository, on a raw psycopg connection (the push hot path)."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry
from pulse_core.ports import EntryRepository

STAMPED = (*MERGE_FIELDS, DELETED)
VALUE_COLUMNS = (
    "date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version",
    "deleted",
)
COLUMNS = VALUE_COLUMNS + tuple(c for f in STAMPED for c in (f"{f}_hlc", f"{f}_src"))
_SELECT = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


def row_to_entry(user: str, row: tuple[Any, ...]) -> Entry:
    values = dict(zip(COLUMNS, row, strict=True))
    return Entry(
        user=user,
        date=values["date"],
        sleep_hours=values["sleep_hours"],
        hrv_ms=values["hrv_ms"],
        hrv_method=values["hrv_method"],
        steps=values["steps"],
        weight_kg=values["weight_kg"],
        note=values["note"],
        score=values["score"],
        score_version=values["score_version"],
        deleted=values["deleted"],
        stamps={f: values[f"{f}_hlc"] for f in STAMPED if values[f"{f}_hlc"] is not None},
        sources={f: values[f"{f}_src"] for f in STAMPED if values[f"{f}_src"] is not None},
    )


class PostgresEntryRepository(EntryRepository):
    """Entries of users named by their numeric id (as text, the domain's user key).

    `get(..., lock=True)` takes the row lock the push path needs for a read-merge-write.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def get(self, user: str, day: dt.date, lock: bool = False) -> Entry | None:
        query = sql.SQL("SELECT {} FROM entries WHERE user_id = %s AND date = %s{}").format(
            _SELECT, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
        )
        row = self.conn.execute(query, (int(user), day)).fetchone()
        return None if row is None else row_to_entry(user, row)

    def list(self, user: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Entry]:
        return self.list_including_deleted(user, start, end, include_deleted=False)

    def list_including_deleted(
        self, user: str, start: dt.date | None, end: dt.date | None, include_deleted: bool = True
    ) -> builtins.list[Entry]:
        query = sql.SQL(
            "SELECT {} FROM entries WHERE user_id = %s AND date >= %s AND date <= %s{} ORDER BY date"
        ).format(_SELECT, sql.SQL("") if include_deleted else sql.SQL(" AND NOT deleted"))
        rows = self.conn.execute(query, (int(user), start or dt.date.min, end or dt.date.max)).fetchall()
        return [row_to_entry(user, row) for row in rows]

    def previous_with(self, user: str, day: dt.date, field: str) -> Entry | None:
        if field not in MERGE_FIELDS:
            raise ValueError(f"unknown field {field!r}")
        query = sql.SQL(
            "SELECT {} FROM entries WHERE user_id = %s AND date < %s AND NOT deleted AND {} IS NOT NULL"
            " ORDER BY date DESC LIMIT 1"
        ).format(_SELECT, sql.Identifier(field))
        row = self.conn.execute(query, (int(user), day)).fetchone()
        return None if row is None else row_to_entry(user, row)

    def get_many(self, user: str, days: Sequence[dt.date], lock: bool = False) -> builtins.list[Entry]:
        """The entries of these days that exist, locked for update when asked, in one query."""
        if not days:
            return []
        query = sql.SQL("SELECT {} FROM entries WHERE user_id = %s AND date = ANY(%s) ORDER BY date{}").format(
            _SELECT, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
        )
        rows = self.conn.execute(query, (int(user), list(days))).fetchall()
        return [row_to_entry(user, row) for row in rows]

    def save(self, entry: Entry) -> None:
        self.conn.execute(_UPSERT, _row_values(entry))

    def save_many(self, entries: Sequence[Entry]) -> None:
        """One pipelined statement for every entry."""
        if entries:
            with self.conn.cursor() as cur:
                cur.executemany(_UPSERT, [_row_values(e) for e in entries])


def _row_values(entry: Entry) -> list[Any]:
    return [
        int(entry.user), entry.date, entry.sleep_hours, entry.hrv_ms, entry.hrv_method, entry.steps,
        entry.weight_kg, entry.note, entry.score, entry.score_version, entry.deleted,
        *(v for f in STAMPED for v in (entry.stamps.get(f), entry.sources.get(f))),
    ]


_UPSERT = sql.SQL(
    "INSERT INTO entries ({cols}) VALUES ({vals}, now()) ON CONFLICT (user_id, date) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in ("user_id", *COLUMNS, "updated_at")),
    vals=sql.SQL(", ").join(sql.Placeholder() for _ in ("user_id", *COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in (*COLUMNS[1:], "updated_at")
    ),
)
