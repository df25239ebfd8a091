"""Checksums of entries, so a device can prove it holds what the server holds (docs/verify.md).

`GET /v1/checksums` answers a digest per user and month (or per day, with `granularity=day`) of the
entries in a range, tombstones included; `GET /v1/checksums/rows` answers the full rows of some days,
with every stamp and source, so a device can repair the days that differ. Both are scoped like
`GET /v1/entries`: an athlete's own entries; a coach's athletes who granted access (one with `user=`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from pulse_core.entry import Entry
from pulse_core.values import fail
from pulse_server import accounts
from pulse_server.accounts import Principal
from pulse_server.api.deps import CurrentUser, DbDep
from pulse_server.db.database import Database
from pulse_server.db.entries import COLUMNS, STAMPED, row_to_entry
from pulse_server.errors import ApiError
from pulse_server.shapes.scope import resolve_scope
from sync.checksums import ALGORITHM, day_digests, month_digests, value_text

router = APIRouter(prefix="/v1", tags=["checksums"])

MAX_DAYS = 366  # rows of at most a year of days per request: a repair asks for the days that differ
DATE_ALLOWED = "YYYY-MM-DD"
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class MonthDigestOut(BaseModel):
    digest: str = Field(description="SHA-256 (hex) of the month's day digests in date order")
    days: int = Field(description="Days of the month, within the range, that have a row (tombstones too)")


class UserDigestsOut(BaseModel):
    months: dict[str, MonthDigestOut] | None = Field(None, description="By 'YYYY-MM' (granularity=month)")
    days: dict[str, str] | None = Field(None, description="By 'YYYY-MM-DD' (granularity=day)")


class ChecksumsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    algorithm: str
    granularity: Literal["month", "day"]
    first: str | None = Field(alias="from")
    last: str | None = Field(alias="to")
    users: dict[str, UserDigestsOut] = Field(description="By username: every user in scope, with rows or not")


class RowsOut(BaseModel):
    rows: list[dict[str, Any]] = Field(description="Full rows (values as text, every _hlc and _src), by user, date")


def _day(value: str | None, field: str) -> dt.date | None:
    if value is None:
        return None
    try:
        if not ISO_DATE.fullmatch(value):  # fromisoformat alone also takes 2026-W48-5
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise fail("invalid_date", field, value, DATE_ALLOWED) from None


def _scope(db: Database, who: Principal, of: str | None) -> dict[int, str]:
    """user id -> username of every user whose entries `who` asks for and may read (else 404)."""
    if of is not None:
        with db.session() as session:
            return {accounts.readable_user(session, who, of): of}
    if not who.is_coach:
        return {who.id: who.username}
    return dict(db.run(lambda conn: resolve_scope(conn, who)).usernames)


_SELECT = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
_RANGE = sql.SQL(
    "SELECT user_id, {} FROM entries WHERE user_id = ANY(%s) AND date >= %s AND date <= %s ORDER BY user_id, date"
).format(_SELECT).as_bytes()
_DAYS = sql.SQL(
    "SELECT user_id, {} FROM entries WHERE user_id = ANY(%s) AND date = ANY(%s) ORDER BY user_id, date"
).format(_SELECT).as_bytes()


def _read(conn: psycopg.Connection[Any], query: bytes, params: tuple[Any, ...]) -> dict[int, list[Entry]]:
    out: dict[int, list[Entry]] = {}
    for row in conn.execute(query, params):
        out.setdefault(int(row[0]), []).append(row_to_entry(str(row[0]), row[1:]))
    return out


@router.get("/checksums", response_model=ChecksumsOut, response_model_by_alias=True)
def checksums(
    user: CurrentUser,
    db: DbDep,
    start: Annotated[str | None, Query(alias="from", description="First day, YYYY-MM-DD (default: no limit)")] = None,
    end: Annotated[str | None, Query(alias="to", description="Last day, YYYY-MM-DD (default: no limit)")] = None,
    of: Annotated[str | None, Query(alias="user", description="One athlete who granted you access (coaches)")] = None,
    granularity: Annotated[Literal["month", "day"], Query(description="A digest per month or per day")] = "month",
) -> dict[str, Any]:
    """A digest per user and month (or day) of the entries from `from` to `to`, tombstones included:
    equal digests mean equal rows, every value with its stamp and source (docs/verify.md)."""
    first, last = _day(start, "from"), _day(end, "to")
    if first and last and first > last:
        raise ApiError(422, "invalid_value", f"from: {first} is after to {last} (allowed a day up to {last})",
                       field="from", value=first.isoformat(), allowed=f"up to {last}")
    scope = _scope(db, user, of)
    params = (list(scope), first or dt.date.min, last or dt.date.max)
    entries = db.run(lambda conn: _read(conn, _RANGE, params))
    users: dict[str, dict[str, Any]] = {}
    for uid, name in scope.items():
        days = day_digests(entries.get(uid, []))
        if granularity == "day":
            users[name] = {"days": {day.isoformat(): digest for day, digest in sorted(days.items())}}
        else:
            users[name] = {"months": {m: d.as_json() for m, d in month_digests(days).items()}}
    return {"algorithm": ALGORITHM, "granularity": granularity, "from": first and first.isoformat(),
            "to": last and last.isoformat(), "users": users}


@router.get("/checksums/rows", response_model=RowsOut)
def checksum_rows(
    user: CurrentUser,
    db: DbDep,
    date: Annotated[list[str], Query(description="Days to read (repeat the parameter)", max_length=MAX_DAYS)],
    of: Annotated[str | None, Query(alias="user", description="One athlete who granted you access (coaches)")] = None,
) -> dict[str, Any]:
    """The full rows of these days (deleted ones too), with every value's stamp and source, as the shape
    carries them: what a device writes into its copy of the server's rows to repair a day that differs."""
    days = sorted({d for d in (_day(value, "date") for value in date) if d is not None})
    scope = _scope(db, user, of)
    entries = db.run(lambda conn: _read(conn, _DAYS, (list(scope), days)))
    rows = [_row(uid, scope[uid], entry) for uid in sorted(entries) for entry in entries[uid]]
    return {"rows": rows}


def _row(uid: int, username: str, entry: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {
        "user": username, "user_id": uid, "date": entry.date.isoformat(),
        "sleep_hours": value_text(entry.sleep_hours), "hrv_ms": value_text(entry.hrv_ms),
        "hrv_method": entry.hrv_method, "steps": entry.steps, "weight_kg": value_text(entry.weight_kg),
        "note": entry.note, "score": entry.score, "score_version": entry.score_version, "deleted": entry.deleted,
    }
    for name in STAMPED:
        row[f"{name}_hlc"] = entry.stamps.get(name)
        row[f"{name}_src"] = entry.sources.get(name)
    return row
