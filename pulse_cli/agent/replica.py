"""The server copy on the device, and the local view rebuilt from it plus pending mutations.

`server_entries` holds the rows as the shape stream last delivered them. The local view (`entries`)
is that copy with every mutation the server may not show yet re-applied on top, by the same merge
rules the server uses, so what the user sees is what the server will hold once it has their edits.
"""

from __future__ import annotations

import copy
import datetime as dt
import sqlite3
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from pulse_cli.agent.outbox import ACKED, OutboxRow
from pulse_cli.store.clock import observe
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.store.entries import COLUMNS, SqliteEntryRepository, entry_to_row, row_to_entry
from pulse_core.entry import DELETED, MERGE_FIELDS, Entry
from sync.merge import merge_delete, merge_set
from sync.wire import parse_mutation

OWNER = ""
STAMPED = (*MERGE_FIELDS, DELETED)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def entry_from_shape(value: Mapping[str, Any], user: str) -> Entry:
    """A shape row (typed values) as an Entry of the local user key `user`."""
    date = value["date"]
    steps = value.get("steps")
    score = value.get("score")
    version = value.get("score_version")
    return Entry(
        user=user,
        date=date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date)),
        sleep_hours=_decimal(value.get("sleep_hours")),
        hrv_ms=_decimal(value.get("hrv_ms")),
        hrv_method=value.get("hrv_method"),
        steps=None if steps is None else int(steps),
        weight_kg=_decimal(value.get("weight_kg")),
        note=value.get("note"),
        score=None if score is None else int(score),
        score_version=None if version is None else int(version),
        deleted=value.get("deleted") in (True, "t", "true"),
        stamps={f: value[f"{f}_hlc"] for f in STAMPED if value.get(f"{f}_hlc")},
        sources={f: value[f"{f}_src"] for f in STAMPED if value.get(f"{f}_src")},
    )


def local_user(value: Mapping[str, Any], role: str) -> str:
    """An athlete's own rows are the owner's (''); a coach's are keyed by the athlete's username."""
    return OWNER if role == "athlete" else str(value.get("username") or value["user_id"])


def apply_changes(conn: sqlite3.Connection, changes: Iterable[tuple[str, Mapping[str, Any]]], role: str) -> int:
    """Apply shape change messages to the server copy (inside the caller's transaction)."""
    server = SqliteEntryRepository(conn, "server_entries")
    count = 0
    owner_id = None
    seen: list[str | None] = []
    for operation, value in changes:
        count += 1
        seen.extend(value.get(f"{f}_hlc") for f in STAMPED)
        if role == "athlete" and value.get("user_id") is not None:
            owner_id = str(value["user_id"])
        if operation == "delete":
            date = value["date"]
            day = date.isoformat() if isinstance(date, dt.date) else str(date)
            if role == "athlete":
                conn.execute("DELETE FROM server_entries WHERE user_id = ? AND date = ?", (OWNER, day))
            else:
                user = read_meta(conn, f"shape_user:{value['user_id']}")
                conn.execute("DELETE FROM server_entries WHERE user_id = ? AND date = ?", (user, day))
            continue
        user = local_user(value, role)
        if role != "athlete":  # deletes carry only the key: remember whose server id this is
            write_meta(conn, f"shape_user:{value['user_id']}", user)
        previous = server.get(user, entry_from_shape(value, user).date)
        incoming = entry_from_shape(value, user)
        if previous is not None:  # an update may carry only some columns
            merged = {**_as_shape(previous), **{k: v for k, v in value.items()}}
            incoming = entry_from_shape(merged, user)
        server.save(incoming)
    observe(conn, seen)  # an edit made after seeing these values outranks them
    if owner_id is not None and read_meta(conn, "owner_user_id") != owner_id:
        write_meta(conn, "owner_user_id", owner_id)  # the server's id of this device's user (for its shape)
    return count


def _as_shape(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": entry.date, "sleep_hours": entry.sleep_hours, "hrv_ms": entry.hrv_ms, "hrv_method": entry.hrv_method,
        "steps": entry.steps, "weight_kg": entry.weight_kg, "note": entry.note, "score": entry.score,
        "score_version": entry.score_version, "deleted": entry.deleted,
    }
    for f in STAMPED:
        out[f"{f}_hlc"] = entry.stamps.get(f)
        out[f"{f}_src"] = entry.sources.get(f)
    return out


def clear_server_copy(conn: sqlite3.Connection) -> None:
    """After a must-refetch: the server copy starts again from a snapshot. The outbox is untouched."""
    conn.execute("DELETE FROM server_entries")


def rebuild_view(conn: sqlite3.Connection, reapply: list[OutboxRow], today: dt.date) -> int:
    """entries := server copy + the given mutations re-applied in order (inside the caller's transaction)."""
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM server_entries").fetchall()
    view: dict[tuple[str, dt.date], Entry] = {}
    for row in rows:
        entry = row_to_entry(row)
        view[(entry.user, entry.date)] = entry
    for m in reapply:
        stamp = m.hlc
        if m.status in ACKED and m.result and m.result.get("hlc"):
            stamp = m.result["hlc"]  # the stamp the server stored (clamped if it was too far ahead)
        wire = {**m.wire(), "hlc": m.hlc}
        mutation = parse_mutation(wire, m.hlc.rsplit(":", 1)[1], today + dt.timedelta(days=1))
        key = (m.user_id, mutation.date)
        entry = view.get(key) or Entry(user=m.user_id, date=mutation.date)
        entry = copy.deepcopy(entry)
        if mutation.op == "delete":
            merge_delete(entry, mutation.base, stamp, mutation.source)
        else:
            merge_set(entry, mutation.fields, mutation.base, stamp, mutation.source)
        view[key] = entry
    _write_view(conn, view)
    return len(view)


def _write_view(conn: sqlite3.Connection, view: dict[tuple[str, dt.date], Entry]) -> None:
    """Write only the rows that differ: the shape log of `pulse agent --serve` records each write."""
    current = {(row[0], row[1]): row for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM entries")}
    local = SqliteEntryRepository(conn, "entries")
    for (user, date), entry in view.items():
        if current.pop((user, date.isoformat()), None) != entry_to_row(entry):
            local.save(entry)
    for user, day in current:
        conn.execute("DELETE FROM entries WHERE user_id = ? AND date = ?", (user, day))


def compact_shape_log(conn: sqlite3.Connection) -> int:
    """The device app's shape log keeps only each day's newest change (inside the caller's transaction).

    It is served folded already (a read after a position sends each day's current row once), so a
    client at any position reads the same after this as before: what it skips was superseded by a later
    change of the same day, which it still reads. The log is then bounded by the days, not the writes."""
    kept = "SELECT max(seq) FROM shape_log GROUP BY date"
    return conn.execute(f"DELETE FROM shape_log WHERE seq NOT IN ({kept})").rowcount
