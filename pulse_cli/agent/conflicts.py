"""Conflicts as the server records them, on this device: fetched by version each sync round, each shown
with its state judged from the local view (sync.conflict_state), dismissed here and on the server."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.store.entries import OWNER, SqliteEntryRepository
from sync.conflict_state import conflict_state

if TYPE_CHECKING:
    from sync.client import SyncClient

_KEYS = ("id", "version", "date", "field", "kept", "lost", "kept_hlc", "lost_hlc", "rule", "clamped", "client_id",
         "seq", "created_at", "dismissed")


def exchange(conn: sqlite3.Connection, client: SyncClient) -> int:
    """Send the dismissals made here, then fetch what was recorded or dismissed since the version held;
    returns the number fetched."""
    queued = [int(r[0]) for r in conn.execute("SELECT id FROM conflicts WHERE dismiss_queued = 1")]
    if queued:
        client.dismiss_conflicts(queued)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE conflicts SET dismiss_queued = 0 WHERE id = ?", [(i,) for i in queued])
    fetched = 0
    while True:
        version = int(read_meta(conn, meta.CONFLICTS_VERSION) or 0)
        body = client.conflicts(version)
        found = body.get("conflicts") or []
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for item in found:
                _store(conn, item)
            write_meta(conn, meta.CONFLICTS_VERSION, str(body.get("version", version)))
        fetched += len(found)
        if not found or body.get("version", version) == version:
            return fetched


def _store(conn: sqlite3.Connection, item: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO conflicts (id, version, date, field, kept, lost, kept_hlc, lost_hlc, rule, clamped, client_id,"
        " seq, created_at, dismissed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
        " SET version = excluded.version, dismissed = max(conflicts.dismissed, excluded.dismissed)",
        (item["id"], item["version"], item["date"], item["field"], json.dumps(item.get("kept")),
         json.dumps(item.get("lost")), item.get("kept_hlc"), item.get("lost_hlc"), item.get("rule", ""),
         int(bool(item.get("clamped"))), item.get("client_id"), item.get("seq"), item.get("created_at") or "",
         int(bool(item.get("dismissed")))),
    )


def listed(conn: sqlite3.Connection, include_closed: bool = True, after_version: int | None = None,
           limit: int = -1) -> list[dict[str, Any]]:
    """Conflicts held, with their state now: oldest first, or those changed after a version by version;
    only the open ones unless `include_closed`."""
    if after_version is None:
        rows = conn.execute(f"SELECT {', '.join(_KEYS)} FROM conflicts ORDER BY id LIMIT ?", (limit,)).fetchall()
    else:
        rows = conn.execute(f"SELECT {', '.join(_KEYS)} FROM conflicts WHERE version > ? ORDER BY version LIMIT ?",
                            (after_version, limit)).fetchall()
    entries = SqliteEntryRepository(conn)
    out = []
    for row in rows:
        item = dict(zip(_KEYS, row, strict=True))
        item["kept"] = json.loads(item["kept"]) if item["kept"] else None
        item["lost"] = json.loads(item["lost"]) if item["lost"] else None
        item["dismissed"] = bool(item["dismissed"])
        item["clamped"] = bool(item["clamped"])
        entry = entries.get(OWNER, dt.date.fromisoformat(item["date"]))
        item["state"] = conflict_state(item["field"], item["lost"], item["kept_hlc"], item["dismissed"], entry)
        if include_closed or item["state"] == "open":
            out.append(item)
    return out


def open_count(conn: sqlite3.Connection) -> int:
    return len(listed(conn, include_closed=False))


def dismiss(conn: sqlite3.Connection, *conflict_ids: int) -> int:
    """Dismissed here at once; the server (and so every other device) hears of it at the next sync."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        return sum(conn.execute("UPDATE conflicts SET dismissed = 1, dismiss_queued = 1 WHERE id = ?"
                                " AND dismissed = 0", (i,)).rowcount for i in conflict_ids)


def prune(conn: sqlite3.Connection, now: dt.datetime | None = None, keep: dt.timedelta = dt.timedelta(days=180)) -> int:
    """The server keeps its conflict audit for a window (180 days by default): so does the device."""
    cutoff = ((now or dt.datetime.now(dt.UTC)) - keep).isoformat()
    return conn.execute("DELETE FROM conflicts WHERE created_at < ? AND dismiss_queued = 0", (cutoff,)).rowcount
