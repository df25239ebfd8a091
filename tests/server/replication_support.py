"""Helpers shared by the replication reader's tests: waiting, one value, and what Postgres itself holds
(the table in pgoutput's text form; a transaction's changes as `test_decoding` decodes them), to compare
the shape log with."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

ENTRY_CHANGE = re.compile(
    r"^table public\.entries: (INSERT|UPDATE|DELETE): user_id\[bigint\]:(\d+) date\[date\]:'([0-9-]+)'")

Change = tuple[str, int, str]  # (operation, user_id, date)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05) -> float:
    """Poll until `condition()` holds; the seconds it took (fails the test after `timeout_s`)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def one(conn: psycopg.Connection[tuple[Any, ...]], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def decoded_transactions(conn: psycopg.Connection[Any], slot: str) -> dict[int, list[Change]]:
    """Per (32-bit) xid, the changes to public.entries that `test_decoding` saw, in order."""
    found: dict[int, list[Change]] = defaultdict(list)
    for xid, data in conn.execute(
            "SELECT xid::text::bigint, data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'include-xids', '0')"
            " WHERE data LIKE 'table public.entries:%%'", (slot,)):
        match = ENTRY_CHANGE.match(data)
        assert match is not None, data
        found[int(xid)].append((match[1].lower(), int(match[2]), match[3]))
    return dict(found)


def entries_as_text(conn: psycopg.Connection[Any]) -> dict[tuple[int, str], dict[str, str | None]]:
    """The current `entries`, every value in Postgres text format (what pgoutput sends), in every
    column but `updated_at` (server bookkeeping that no shape carries, so the log does not keep it)."""
    columns = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = 'entries' AND column_name <> 'updated_at' ORDER BY ordinal_position")]
    # format('%s', v) goes through the type's output function ('t' for true), as pgoutput does; v::text
    # would not ('true').
    query = sql.SQL("SELECT {} FROM entries").format(sql.SQL(", ").join(
        sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END").format(c=sql.Identifier(c))
        for c in columns))
    rows = {}
    for values in conn.execute(query):
        row = dict(zip(columns, values, strict=True))
        rows[(int(row["user_id"]), str(row["date"]))] = row
    return rows


def shape_rows_values(conn: psycopg.Connection[Any]) -> dict[tuple[int, str], dict[str, str | None]]:
    return {(int(u), d.isoformat()): v for u, d, v in conn.execute("SELECT user_id, date, value FROM shape_rows")}


