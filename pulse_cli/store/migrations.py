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

-- Every local change, written in the same transaction as the change (docs/push-protocol.md).
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
    (
        "0002_device_app",
        """
-- The shape log of `pulse agent --serve`: every change to the owner's rows of the local view, in order,
-- written by triggers in the same transaction as the change, whichever process made it.
CREATE TABLE shape_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    date TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete'))
);
CREATE TRIGGER shape_log_insert AFTER INSERT ON entries WHEN NEW.user_id = '' BEGIN
    INSERT INTO shape_log (date, op) VALUES (NEW.date, 'upsert');
END;
CREATE TRIGGER shape_log_update AFTER UPDATE ON entries WHEN NEW.user_id = '' BEGIN
    INSERT INTO shape_log (date, op) VALUES (NEW.date, 'upsert');
END;
CREATE TRIGGER shape_log_delete AFTER DELETE ON entries WHEN OLD.user_id = '' BEGIN
    INSERT INTO shape_log (date, op) VALUES (OLD.date, 'delete');
END;

-- A browser's mutation relayed upstream keeps its own client id and seq, so the server applies it
-- exactly once by the browser's (client, seq); NULL means this device's own mutation (seq = outbox seq).
ALTER TABLE outbox ADD COLUMN client_id TEXT;
ALTER TABLE outbox ADD COLUMN client_seq INTEGER;

-- Mutations a browser pushed to this device: exactly once by (client, seq), with the result given.
CREATE TABLE relayed (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outbox_seq INTEGER,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;

-- Sign-ins to the device's app: SHA-256 of each bearer token, never the token.
CREATE TABLE web_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;
""",
    ),
    (
        "0003_identity_and_server_conflicts",
        """
-- The outbox's client_id now names the id a row is (or was) sent under when it is not the device's
-- current id: a browser's, or a former id of this device (it took a new one when its store turned out
-- to be a copy). NULL still means the device's current id, with seq as the wire seq.

-- Conflicts come from the server (every device of the user sees each one, with its state): keyed by the
-- server's id. The rows kept before were this device's own only; the next sync fetches them all again.
DROP TABLE conflicts;
CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    date TEXT NOT NULL,
    field TEXT NOT NULL,
    kept TEXT,
    lost TEXT,
    kept_hlc TEXT,
    lost_hlc TEXT,
    rule TEXT NOT NULL,
    clamped INTEGER NOT NULL DEFAULT 0,
    client_id TEXT,
    seq INTEGER,
    created_at TEXT NOT NULL,
    dismissed INTEGER NOT NULL DEFAULT 0,
    dismiss_queued INTEGER NOT NULL DEFAULT 0
);
DELETE FROM meta WHERE key = 'conflicts_version';

-- A browser's replay of a (client, seq) with other content is a clash, as on the server: SHA-256 of
-- what it sent (NULL for mutations relayed before).
ALTER TABLE relayed ADD COLUMN digest TEXT;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE status <> 'pending';
""",
    ),
    (
        "0004_athlete_zones",
        """
-- A coach's athletes as the server last listed them (GET /v1/grants, at each sync), with the zone each
-- one's devices last pushed from, in minutes east of UTC (NULL: never told). The coach commands count
-- each athlete's days in that zone, offline (docs/reports.md).
CREATE TABLE athlete_zones (
    username TEXT PRIMARY KEY,
    utc_offset_min INTEGER CHECK (utc_offset_min BETWEEN -840 AND 840),
    fetched_at TEXT NOT NULL
) WITHOUT ROWID;
""",
    ),
    (
        "0005_reflected",
        """
-- An acknowledged mutation the server copy is known to show (applying it there would change nothing):
-- the local view no longer re-applies it. Rows before this start unknown; the next rebuild marks them.
ALTER TABLE outbox ADD COLUMN reflected INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_unreflected ON outbox (user_id, date, seq) WHERE status = 'pending' OR reflected = 0;
""",
    ),
    (
        "0006_erasures",
        """
-- Erasures this device applied (docs/erasure.md): whose entries (the local user key: '' for the owner, a
-- coach's athlete by username), which days (NULL: an open end), the server's time of the erasure. No value:
-- the device app serves the owner's to a browser, and the relay refuses a browser's write they cover.
CREATE TABLE erasures (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    date_from TEXT,
    date_to TEXT,
    erased_ms INTEGER NOT NULL,
    whole_account INTEGER NOT NULL DEFAULT 0,
    applied_at TEXT NOT NULL
);
""",
    ),
]


def _statements(sql: str) -> list[str]:
    """Split a script into statements, keeping a trigger's BEGIN ... END body whole."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return [s for s in statements if s and not all(part.startswith("--") for part in s.splitlines() if part.strip())]


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
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, datetime('now'))", (name,)
            )
        applied.append(name)
    return applied
