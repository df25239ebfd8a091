"""The SQLite entry repository: one row per user and date, with each field's stamp and source."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from typing import Any

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry
from pulse_core.errors import StoreError
from pulse_core.ports import EntryRepository

# The device owner's rows. Other users' rows (a coach's athletes) are keyed by their username.
OWNER = ""
STAMPED = (*MERGE_FIELDS, DELETED)  # the fields with a stamp and a source: the merge fields, and the delete
VALUE_COLUMNS = (
    "user_id", "date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note",
    "score", "score_version", "deleted",
)
COLUMNS = VALUE_COLUMNS + tuple(c for f in STAMPED for c in (f"{f}_hlc", f"{f}_src"))
_SELECT = ", ".join(COLUMNS)
_INSERT = (
    f"INSERT OR REPLACE INTO {{table}} ({_SELECT}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def row_to_entry(row: tuple[Any, ...]) -> Entry:
    values = dict(zip(COLUMNS, row, strict=True))
    return Entry(
        user=values["user_id"],
        date=dt.date.fromisoformat(values["date"]),
        sleep_hours=_dec(values["sleep_hours"]),
        hrv_ms=_dec(values["hrv_ms"]),
        hrv_method=values["hrv_method"],
        steps=values["steps"],
        weight_kg=_dec(values["weight_kg"]),
        note=values["note"],
        score=values["score"],
        score_version=values["score_version"],
        deleted=bool(values["deleted"]),
        stamps={f: values[f"{f}_hlc"] for f in STAMPED if values[f"{f}_hlc"] is not None},
        sources={f: values[f"{f}_src"] for f in STAMPED if values[f"{f}_src"] is not None},
    )


def entry_to_row(entry: Entry) -> tuple[Any, ...]:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return (
        entry.user, entry.date.isoformat(), text(entry.sleep_hours), text(entry.hrv_ms),
        entry.hrv_method, entry.steps, text(entry.weight_kg), entry.note, entry.score,
        entry.score_version, int(entry.deleted),
        *(v for f in STAMPED for v in (entry.stamps.get(f), entry.sources.get(f))),
    )


class SqliteEntryRepository(EntryRepository):
    def __init__(self, conn: sqlite3.Connection, table: str = "entries") -> None:
        if table not in ("entries", "server_entries"):
            raise ValueError(f"unknown entry table {table!r}")
        self.conn = conn
        self.table = table

    def get(self, user: str, day: dt.date) -> Entry | None:
        row = self.conn.execute(
            f"SELECT {_SELECT} FROM {self.table} WHERE user_id = ? AND date = ?",
            (user, day.isoformat()),
        ).fetchone()
        return None if row is None else row_to_entry(row)

    def list(self, user: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Entry]:
        rows = self.conn.execute(
            f"SELECT {_SELECT} FROM {self.table} WHERE user_id = ? AND deleted = 0"
            " AND date >= ? AND date <= ? ORDER BY date",
            (user, (start or dt.date.min).isoformat(), (end or dt.date.max).isoformat()),
        )
        return [row_to_entry(row) for row in rows]

    def previous_with(self, user: str, day: dt.date, field: str) -> Entry | None:
        if field not in MERGE_FIELDS:
            raise ValueError(f"unknown field {field!r}")
        row = self.conn.execute(
            f"SELECT {_SELECT} FROM {self.table} WHERE user_id = ? AND date < ? AND deleted = 0"
            f" AND {field} IS NOT NULL ORDER BY date DESC LIMIT 1",
            (user, day.isoformat()),
        ).fetchone()
        return None if row is None else row_to_entry(row)

    def save(self, entry: Entry) -> None:
        try:
            self.conn.execute(_INSERT.format(table=self.table), entry_to_row(entry))
        except sqlite3.Error as exc:
            raise StoreError(f"store: cannot save the entry for {entry.date.isoformat()}: {exc}") from exc
