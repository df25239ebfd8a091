"""A shape read in parts on a real SQLite store: rows go in as they arrive, the cursor only with the
last part, a snapshot cut short starts again from nothing, and the view is made again once it has
caught up."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from pulse_cli.agent.pull import apply_batch, load_cursor
from pulse_cli.store.connection import open_store
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.usecases import log_entry
from sync.shape_client import ChangeMessage, ShapeBatch, ShapeCursor

TODAY = dt.date(2026, 12, 1)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_store(tmp_path)


def row(day: int, steps: int) -> ChangeMessage:
    value = {"user_id": 7, "date": dt.date(2026, 11, day), "steps": steps, "deleted": False,
             "steps_hlc": f"{1_764_000_000_000 + day:016d}:00000:srv", "steps_src": "manual"}
    return ChangeMessage(f'"public"."entries"/"7"/"2026-11-{day:02d}"', "insert", value, {"operation": "insert"})


def days(conn: sqlite3.Connection, table: str) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute(f"SELECT date, steps FROM {table} ORDER BY date")}


def test_a_snapshot_in_parts_writes_rows_as_they_come_and_the_cursor_and_view_at_the_end(
    conn: sqlite3.Connection,
) -> None:
    log_entry(SqliteUnitOfWork(conn, lambda: 1_764_100_000_000), "", "2026-11-30", {"note": "mine"}, TODAY)
    done = ShapeCursor("h", "90_0")
    apply_batch(conn, ShapeBatch([row(1, 100), row(2, 200)], done, complete=False, fresh=True), "athlete")
    assert days(conn, "server_entries") == {"2026-11-01": 100, "2026-11-02": 200}
    assert load_cursor(conn).offset == "-1", "no cursor before the response is whole"
    apply_batch(conn, ShapeBatch([row(3, 300)], done, snapshot_end=True), "athlete")
    assert load_cursor(conn).offset == "90_0"
    assert "2026-11-01" not in days(conn, "entries"), "the view is made once the snapshot has caught up"
    apply_batch(conn, ShapeBatch([], ShapeCursor("h", "95_0"), up_to_date=True), "athlete")
    assert days(conn, "entries") == {"2026-11-01": 100, "2026-11-02": 200, "2026-11-03": 300, "2026-11-30": None}


def test_a_snapshot_cut_short_starts_again_and_leaves_nothing_stale(conn: sqlite3.Connection) -> None:
    cursor = ShapeCursor("h", "90_0")
    apply_batch(conn, ShapeBatch([row(1, 1), row(2, 2)], cursor, complete=False, fresh=True), "athlete")
    # The connection broke: the next request starts the snapshot again; day 2 is gone on the server now.
    assert load_cursor(conn).offset == "-1"
    apply_batch(conn, ShapeBatch([row(1, 10)], cursor, complete=False, fresh=True), "athlete")
    apply_batch(conn, ShapeBatch([row(3, 30)], cursor, snapshot_end=True), "athlete")
    apply_batch(conn, ShapeBatch([], ShapeCursor("h", "91_0"), up_to_date=True), "athlete")
    assert days(conn, "server_entries") == {"2026-11-01": 10, "2026-11-03": 30}
    assert days(conn, "entries") == {"2026-11-01": 10, "2026-11-03": 30}
