"""Looking everywhere for erased values: every Postgres table, every SQLite table and the store's raw bytes.

What the erasure tests search with (docs/erasure.md): a value left anywhere is found by its text, not by
knowing where the code puts it. Postgres tables are read through information_schema, each row as its
text form; a table with a user column is read for that user's rows only (the test database is shared by
the tests of a run), every other table whole.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# Tables whose rows name their user in another column than `user_id`.
_USER_COLUMN = {"users": "id"}


def postgres_tables(pg: psycopg.Connection[Any]) -> list[str]:
    rows = pg.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                      " AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()
    return [str(r[0]) for r in rows]


def postgres_holding(pg: psycopg.Connection[Any], user_id: int, needles: list[str]) -> dict[str, list[str]]:
    """Per table, the rows (as text) of this user (or of every user, for a table without a user column)
    that hold any of `needles`. Empty when nothing holds them."""
    found: dict[str, list[str]] = {}
    for table in postgres_tables(pg):
        columns = {str(r[0]) for r in pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,)).fetchall()}
        column = _USER_COLUMN.get(table, "user_id")
        query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
        params: tuple[Any, ...] = ()
        if column in columns:
            query = sql.SQL("{} WHERE {} = %s").format(query, sql.Identifier(column))
            params = (user_id,)
        rows = [str(r[0]) for r in pg.execute(query, params).fetchall()]
        hits = [row for row in rows if any(needle in row for needle in needles)]
        if hits:
            found[table] = hits
    return found


def sqlite_holding(path: Path, needles: list[str]) -> dict[str, list[str]]:
    """Per table of a SQLite store, the rows holding any of `needles`; and under "<file>" each of the
    store's files (pulse.db, -wal) whose raw bytes hold one, after a checkpoint that empties the WAL."""
    found: dict[str, list[str]] = {}
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows = [repr(r) for r in conn.execute(f'SELECT * FROM "{table}"')]
            hits = [row for row in rows if any(needle in row for needle in needles)]
            if hits:
                found[table] = hits
    finally:
        conn.close()
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            data = file.read_bytes()
            held = [n for n in needles if n.encode() in data]
            if held:
                found[f"<{file.name}>"] = held
    return found
