"""Entries over REST: read (own, or a granting athlete's), set fields, delete; the conflict audit."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from pulse_core.errors import ValidationError
from pulse_core.values import parse_date
from pulse_core.warnings import field_warnings
from pulse_server import accounts
from pulse_server.api.content_type import JsonDeclared
from pulse_server.api.deps import Athlete, ClockDep, CurrentUser, DbDep, SettingsDep
from pulse_server.api.schemas import ConflictsOut, DismissRequest, EntriesOut, EntryFields, EntryWrite
from pulse_server.db.entries import COLUMNS, PostgresEntryRepository, row_to_entry
from pulse_server.erasure import hold_off
from pulse_server.errors import ApiError
from pulse_server.push import Reconciler, api_write
from sync.conflict_state import conflict_state
from sync.wire import MutationResult

router = APIRouter(prefix="/v1", tags=["entries"])


def _today(clock: ClockDep) -> dt.date:
    return dt.datetime.fromtimestamp(clock() / 1000, dt.UTC).date()


def _day(value: str, clock: ClockDep, field: str = "date", reading: bool = False) -> dt.date:
    return parse_date(value, _today(clock), field, reading=reading)


@router.get("/entries", response_model=EntriesOut)
def list_entries(
    user: CurrentUser,
    db: DbDep,
    clock: ClockDep,
    start: Annotated[str | None, Query(alias="from", description="First day, YYYY-MM-DD")] = None,
    end: Annotated[str | None, Query(alias="to", description="Last day, YYYY-MM-DD")] = None,
    of: Annotated[str | None, Query(alias="user", description="An athlete who granted you access (coaches)")] = None,
) -> dict[str, Any]:
    """Entries from `from` to `to` (inclusive), oldest first, deleted days left out."""
    first = _day(start, clock, "from", reading=True) if start else None
    last = _day(end, clock, "to", reading=True) if end else None
    with db.session() as session:
        owner = accounts.readable_user(session, user, of)
    rows = db.run(lambda conn: PostgresEntryRepository(conn).list(str(owner), first, last))
    return {"user": of or user.username, "entries": [e.as_json() for e in rows]}


@router.put("/entries/{date}", response_model=EntryWrite)
def put_entry(
    date: str, body: EntryFields, user: Athlete, _json: JsonDeclared, db: DbDep, clock: ClockDep, settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Set the given fields of a day's entry (an explicit null clears one); same path as a push."""
    day = _day(date, clock)
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        raise ApiError(400, "bad_request", "fields: nothing to set (allowed at least one field)", field="fields")
    reconciler = Reconciler(clock, settings.clock_skew_limit_ms)

    def write(conn: Any) -> tuple[MutationResult, Any, Any, str | None]:
        result, entry = api_write(reconciler, conn, user.id, day, "set", fields)
        previous = PostgresEntryRepository(conn).previous_with(str(user.id), day, "weight_kg")
        # An applied write always stamps the row anew, so the shape carries this transaction's id.
        txid = _txid(conn) if result["status"] in ("applied", "conflict") else None
        return result, entry, previous, txid

    result, entry, previous, txid = db.run(write)
    if result["status"] == "rejected":
        error = result["error"]
        raise ValidationError(error.get("field") or "fields", error.get("value"), error.get("allowed") or "",
                              error["message"], code=error["code"])
    warnings = field_warnings({k: getattr(entry, k) for k in fields if k != "note"}, previous, day)
    if txid is not None:
        response.headers[TXID_HEADER] = txid
    return {"entry": entry.as_json(), "warnings": [w.as_json() for w in warnings], "status": result["status"],
            "txid": txid}


@router.delete("/entries/{date}", status_code=204)
def delete_entry(date: str, user: Athlete, db: DbDep, clock: ClockDep, settings: SettingsDep) -> Response:
    """Delete a day's entry (a tombstone, so older writes cannot bring it back). Still a 204 (clients
    rely on it); the transaction's id, which the shape's message for the tombstone carries, is in the
    `x-txid` header (docs/shapes.md, "Writes a client can await")."""
    day = _day(date, clock)
    reconciler = Reconciler(clock, settings.clock_skew_limit_ms)

    def write(conn: Any) -> str | None:
        hold_off(conn, user.id)  # before the entry's lock, which an erasure in progress may want
        existing = PostgresEntryRepository(conn).get(str(user.id), day, lock=True)
        if existing is None or existing.deleted:
            return None
        result, entry = api_write(reconciler, conn, user.id, day, "delete", {})
        if result["status"] not in ("applied", "conflict") or entry is None or not entry.deleted:
            # A 204 says the day is gone: never say it for a write that did not happen.
            raise ApiError(500, "internal", f"date: the delete of {day.isoformat()} was not applied"
                           f" ({result['status']})")
        return _txid(conn)

    txid = db.run(write)
    if txid is None:
        raise ApiError(404, "not_found", f"date: no entry for {day.isoformat()}")
    return Response(status_code=204, headers={TXID_HEADER: txid})


TXID_HEADER = "x-txid"


def _txid(conn: Any) -> str:
    """This transaction's id (xid8, as a decimal string like a push's `txid`): the number in the `txids`
    of the shape messages its changes become."""
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return str(row[0])


_CONFLICT_KEYS = ("id", "version", "date", "client_id", "seq", "field", "kept", "lost", "kept_hlc", "lost_hlc",
                  "rule", "clamped", "created_at")
_CONFLICTS = (
    "SELECT " + ", ".join(f"c.{k}" for k in _CONFLICT_KEYS) + ", c.dismissed_at IS NOT NULL, e.date IS NOT NULL, "
    + ", ".join(f"e.{c}" for c in COLUMNS)
    + " FROM conflicts c LEFT JOIN entries e ON e.user_id = c.user_id AND e.date = c.date"
    " WHERE c.user_id = %(user)s AND c.version > %(after)s"
)


_CONFLICTS_SETTLED = "SELECT pg_advisory_xact_lock(hashtextextended('conflicts:' || %s::text, 0))"


@router.get("/conflicts", response_model=ConflictsOut)
def list_conflicts(
    user: CurrentUser,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    after_version: Annotated[int | None, Query(ge=0, description="Only those changed after this version")] = None,
) -> dict[str, Any]:
    """The conflict audit of your entries, each with its state now (open, reasserted, superseded,
    dismissed): newest first, or with `after_version`, those recorded or dismissed since, oldest first."""
    order = " ORDER BY c.id DESC" if after_version is None else " ORDER BY c.version"

    def read(conn: Any) -> list[dict[str, Any]]:
        # Writers take a version under this lock, shared (migration 0016): holding it, none is in flight
        conn.execute(_CONFLICTS_SETTLED, (user.id,))
        rows = conn.execute(_CONFLICTS + order + " LIMIT %(limit)s",
                            {"user": user.id, "after": after_version or 0, "limit": limit}).fetchall()
        return [_conflict_json(user.id, row) for row in rows]

    found = db.run(read)
    return {"conflicts": found, "version": max((c["version"] for c in found), default=after_version or 0)}


def _conflict_json(user_id: int, row: tuple[Any, ...]) -> dict[str, Any]:
    n = len(_CONFLICT_KEYS)
    item = {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v)
            for k, v in zip(_CONFLICT_KEYS, row[:n], strict=True)}
    dismissed, has_entry = row[n], row[n + 1]
    entry = row_to_entry(str(user_id), row[n + 2:]) if has_entry else None
    item["dismissed"] = dismissed
    item["state"] = conflict_state(item["field"], item["lost"], item["kept_hlc"], dismissed, entry)
    return item


@router.post("/conflicts/dismiss", status_code=204)
def dismiss_conflicts(body: DismissRequest, user: CurrentUser, _json: JsonDeclared, db: DbDep) -> None:
    """Put conflicts aside on every device of yours (ids of other users' conflicts are ignored)."""
    db.run(lambda conn: conn.execute(
        "UPDATE conflicts SET dismissed_at = now()"  # and a new version (migration 0016's trigger)
        " WHERE user_id = %s AND id = ANY(%s) AND dismissed_at IS NULL", (user.id, body.ids)))
