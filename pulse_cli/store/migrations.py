"""Named, registered migrations for the local SQLite store, applied in order and recorded.

A migration is never edited once released: add a new one instead.
"""

from __future__ import annotations

import sqlite3

from pulse_core.entry import MERGE_FIELDS

_STAMP_COLUMNS = "".join(f",\n    {f}_hlc TEXT,\n    {f}_src TEXT" for f in (*MERGE_FIELDS, "deleted"))

_ENTRY_COLUMNS = f"""
    user_id TEXT NOT NULL,
    date TEXT NOT NULL,
    sleep_hours TEXT,
    hrv_ms TEXT,
    hrv_method TEXT CHECK (hrv_method IN ('rmssd', 'sdnn')),
    steps INTEGER,
    weight_kg TEXT,
    note TEXT,
    score INTEGER,
    score_version INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0{_STAMP_COLUMNS},
    PRIMARY KEY (user_id, date)
"""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_entries_outbox_meta",
        f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- The local view: the server's state with still-pending local mutations applied on top.
CREATE TABLE entries ({_ENTRY_COLUMNS}) WITHOUT ROWID;

-- The server's copy as last pulled through the shape stream (filled by sync).
CREATE TABLE server_entries ({_ENTRY_COLUMNS}) WITHOUT ROWID;

-- Every local change, written in the same transaction as the change (sync-protocol.md).
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    date TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('set', 'delete')),
    fields TEXT NOT NULL,
    base TEXT NOT NULL,
    hlc TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'applied', 'duplicate', 'conflict', 'rejected', 'discarded')),
    result TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbox_status ON outbox (status, seq);

-- Conflicts the server reported for this device's mutations.
CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL REFERENCES outbox (seq),
    date TEXT NOT NULL,
    field TEXT NOT NULL,
    kept TEXT,
    lost TEXT,
    kept_hlc TEXT,
    lost_hlc TEXT,
    rule TEXT NOT NULL,
    seen_at TEXT NOT NULL
);

-- Where each followed shape stands: handle and offset, saved with the rows they brought.
CREATE TABLE shape_cursors (
    shape TEXT PRIMARY KEY,
    handle TEXT,
    "offset" TEXT NOT NULL,
    cursor TEXT,
    updated_at TEXT NOT NULL
);
""",
    ),
]


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        with conn:  # one transaction per migration, recorded with it
            conn.execute("BEGIN IMMEDIATE")
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, datetime('now'))", (name,)
            )
        applied.append(name)
    return applied
