"""The Postgres entry repository, on a raw psycopg connection (the push hot path)."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry
from pulse_core.ports import EntryRepository

STAMPED = (*MERGE_FIELDS, DELETED)
VALUE_COLUMNS = (
    "date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version",
    "deleted",
)
COLUMNS = VALUE_COLUMNS + tuple(c for f in STAMPED for c in (f"{f}_hlc", f"{f}_src"))
_SELECT = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
_LOCK = {False: sql.SQL(""), True: sql.SQL(" FOR UPDATE")}


def _render(query: sql.Composable) -> bytes:
    """A composed query rendered once, at import: psycopg renders a Composed again on every execute,
    which cost the push more CPU than Postgres spent running the statements."""
    return query.as_bytes()


_GET = {lock: _render(sql.SQL("SELECT {} FROM entries WHERE user_id = %s AND date = %s{}").format(_SELECT, tail))
        for lock, tail in _LOCK.items()}
_GET_MANY = {
    lock: _render(sql.SQL("SELECT {} FROM entries WHERE user_id = %s AND date = ANY(%s) ORDER BY date{}").format(
        _SELECT, tail))
    for lock, tail in _LOCK.items()
}
_LIST = {
    deleted: _render(sql.SQL(
        "SELECT {} FROM entries WHERE user_id = %s AND date >= %s AND date <= %s{} ORDER BY date"
    ).format(_SELECT, sql.SQL("") if deleted else sql.SQL(" AND NOT deleted")))
    for deleted in (False, True)
}
_PREVIOUS_WITH = {
    field: _render(sql.SQL(
        "SELECT {} FROM entries WHERE user_id = %s AND date < %s AND NOT deleted AND {} IS NOT NULL"
        " ORDER BY date DESC LIMIT 1"
    ).format(_SELECT, sql.Identifier(field)))
    for field in MERGE_FIELDS
}


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


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as a row object for jsonb_populate_record(NULL::entries, ...): unset columns left out
    (read as NULL); encode with `json_dumps`."""
    return {k: v for k, v in zip(_ROW_KEYS, _row_values(entry), strict=True) if v is not None}


class PostgresEntryRepository(EntryRepository):
    """Entries of users named by their numeric id (as text, the domain's user key).

    `get(..., lock=True)` takes the row lock the push path needs for a read-merge-write.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def get(self, user: str, day: dt.date, lock: bool = False) -> Entry | None:
        row = self.conn.execute(_GET[lock], (int(user), day)).fetchone()
        return None if row is None else row_to_entry(user, row)

    def list(self, user: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Entry]:
        return self.list_including_deleted(user, start, end, include_deleted=False)

    def list_including_deleted(
        self, user: str, start: dt.date | None, end: dt.date | None, include_deleted: bool = True
    ) -> builtins.list[Entry]:
        query = _LIST[include_deleted]
        rows = self.conn.execute(query, (int(user), start or dt.date.min, end or dt.date.max)).fetchall()
        return [row_to_entry(user, row) for row in rows]

    def previous_with(self, user: str, day: dt.date, field: str) -> Entry | None:
        if field not in MERGE_FIELDS:
            raise ValueError(f"unknown field {field!r}")
        row = self.conn.execute(_PREVIOUS_WITH[field], (int(user), day)).fetchone()
        return None if row is None else row_to_entry(user, row)

    def get_many(self, user: str, days: Sequence[dt.date], lock: bool = False) -> builtins.list[Entry]:
        """The entries of these days that exist, locked for update when asked, in one query."""
        if not days:
            return []
        rows = self.conn.execute(_GET_MANY[lock], (int(user), list(days))).fetchall()
        return [row_to_entry(user, row) for row in rows]

    def save(self, entry: Entry) -> None:
        self.conn.execute(_UPSERT, _row_values(entry))

    def save_many(self, entries: Sequence[Entry]) -> None:
        """Every entry in one statement: the rows travel as one JSON array, read back with the table's row
        type (a statement per row cost the push more than its merge). At most one entry per day."""
        if entries:
            # A key left out is read as NULL, and most stamps and values of a day are unset.
            self.conn.execute(_UPSERT_MANY, (Jsonb([entry_json(e) for e in entries], dumps=json_dumps),))


def _row_values(entry: Entry) -> list[Any]:
    return [
        int(entry.user), entry.date, entry.sleep_hours, entry.hrv_ms, entry.hrv_method, entry.steps,
        entry.weight_kg, entry.note, entry.score, entry.score_version, entry.deleted,
        *(v for f in STAMPED for v in (entry.stamps.get(f), entry.sources.get(f))),
    ]


_UPSERT = _render(sql.SQL(
    "INSERT INTO entries ({cols}) VALUES ({vals}, now()) ON CONFLICT (user_id, date) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in ("user_id", *COLUMNS, "updated_at")),
    vals=sql.SQL(", ").join(sql.Placeholder() for _ in ("user_id", *COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in (*COLUMNS[1:], "updated_at")
    ),
))

_ROW_KEYS = ("user_id", *COLUMNS)
_UPSERT_MANY = _render(sql.SQL(
    "INSERT INTO entries ({cols}) SELECT {vals}, now() FROM jsonb_populate_recordset(NULL::entries, %s)"
    " ON CONFLICT (user_id, date) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in (*_ROW_KEYS, "updated_at")),
    vals=sql.SQL(", ").join(sql.Identifier(c) for c in _ROW_KEYS),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in (*COLUMNS[1:], "updated_at")
    ),
))


def _json_value(value: Any) -> str:
    """Decimals and dates as their text, which the column types read back exactly."""
    if isinstance(value, (Decimal, dt.date)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(obj: Any) -> bytes:
    """JSON for a jsonb parameter (dates as ISO text, Decimals through `_json_value`)."""
    return orjson.dumps(obj, default=_json_value)
