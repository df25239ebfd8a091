"""An erasure applied to a real SQLite store (docs/erasure.md): what leaves each table, what stays, what a
pending change becomes, and a pull that brings back a change logged before the erasure."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from pulse_cli.agent import erasures
from pulse_cli.agent.pull import apply_batch
from pulse_cli.store.connection import open_store, read_meta
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.usecases import log_entry
from sync.erasure import Erasure
from sync.shape_client import ChangeMessage, ShapeBatch, ShapeCursor

TODAY = dt.date(2026, 12, 1)
BEFORE_MS = 1_764_000_000_000  # the device's clock when it logged the days
ERASED_MS = BEFORE_MS + 3_600_000  # an hour later, on the server
AFTER_MS = ERASED_MS + 60_000


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_store(tmp_path)


def log(conn: sqlite3.Connection, day: str, at_ms: int, **fields: object) -> None:
    log_entry(SqliteUnitOfWork(conn, lambda: at_ms), "", day, fields, TODAY)


def statuses(conn: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
    rows = conn.execute("SELECT date, status, result FROM outbox ORDER BY seq").fetchall()
    return [(d, s, (json.loads(r).get("error") or {}).get("code") if r else None) for d, s, r in rows]


def server_row(conn: sqlite3.Connection, user: str, day: str, steps: int, at_ms: int) -> None:
    conn.execute("INSERT INTO server_entries (user_id, date, steps, steps_hlc, steps_src) VALUES (?, ?, ?, ?, ?)",
                 (user, day, steps, f"{at_ms:016d}:00000:srv", "manual"))


def test_an_erasure_empties_its_days_and_refuses_the_pending_changes_made_before_it(conn: sqlite3.Connection) -> None:
    log(conn, "2026-11-10", BEFORE_MS, steps=1000, note="secret")
    log(conn, "2026-11-11", BEFORE_MS + 1, steps=2000)
    log(conn, "2026-11-12", BEFORE_MS + 2, steps=3000)  # outside the range
    conn.execute("UPDATE outbox SET status = 'applied', reflected = 1 WHERE date = '2026-11-10'")
    conn.execute("UPDATE outbox SET status = 'rejected', result = ? WHERE date = '2026-11-12'",
                 (json.dumps({"error": {"code": "out_of_range"}}),))
    server_row(conn, "", "2026-11-10", 1000, BEFORE_MS)
    server_row(conn, "coach-athlete", "2026-11-10", 4000, BEFORE_MS)  # another user's row (a coach's view)
    conn.execute("INSERT INTO conflicts (id, version, date, field, kept, lost, rule, created_at) VALUES"
                 " (1, 1, '2026-11-10', 'note', '\"secret\"', '\"other\"', 'lww@2', '2026-11-30')")
    log(conn, "2026-11-11", AFTER_MS, note="after")  # made after the erasure (a device that heard of it)
    relayed = {"seq": 4, "status": "conflict", "hlc": "h", "conflicts": [{"field": "note", "kept": "secret"}]}
    conn.execute("INSERT INTO relayed (client_id, seq, outbox_seq, result, digest, created_at) VALUES"
                 " ('browser', 4, 1, ?, 'abc', '2026-11-30')", (json.dumps(relayed),))

    erasure = Erasure(7, "ana", dt.date(2026, 11, 10), dt.date(2026, 11, 11), ERASED_MS)
    assert erasures.apply(conn, [erasure], "ana") == 1

    assert statuses(conn) == [("2026-11-11", "rejected", "erased"), ("2026-11-12", "rejected", "out_of_range"),
                              ("2026-11-11", "pending", None)]
    assert [r[0] for r in conn.execute("SELECT date FROM server_entries WHERE user_id = ''")] == []
    assert conn.execute("SELECT count(*) FROM server_entries WHERE user_id = 'coach-athlete'").fetchone() == (1,)
    view = {d: (s, n) for d, s, n in conn.execute("SELECT date, steps, note FROM entries WHERE user_id = ''")}
    # 11-11 again from the change made after the erasure only; 11-12 (outside the range) untouched.
    assert view == {"2026-11-11": (None, "after"), "2026-11-12": (3000, None)}
    assert conn.execute("SELECT count(*) FROM conflicts").fetchone() == (0,)
    # A browser's replay of the dropped change is still answered, with nothing of its values.
    assert conn.execute("SELECT result, digest FROM relayed").fetchone() == (
        json.dumps({"seq": 4, "status": "conflict", "hlc": "h"}), None)
    assert conn.execute("SELECT id, user_id, date_from, date_to, erased_ms FROM erasures").fetchall() == [
        (7, "", "2026-11-10", "2026-11-11", ERASED_MS)]
    last = read_meta(conn, "hlc_last")
    assert last is not None and int(last[:16]) >= ERASED_MS  # later edits here sort after the erasure
    assert read_meta(conn, "scrub_due") == "0"
    assert erasures.apply(conn, [erasure], "ana") == 0  # applied once


def test_a_coachs_erasure_of_an_athlete_leaves_the_coachs_other_athletes_alone(conn: sqlite3.Connection) -> None:
    server_row(conn, "ana", "2026-11-10", 1000, BEFORE_MS)
    server_row(conn, "bob", "2026-11-10", 2000, BEFORE_MS)
    erasures.apply(conn, [Erasure(3, "ana", None, None, ERASED_MS, whole_account=True)], "coach-kim")
    assert conn.execute("SELECT user_id FROM server_entries").fetchall() == [("bob",)]


def change(day: str, steps: int, at_ms: int) -> ChangeMessage:
    value = {"user_id": 7, "date": dt.date.fromisoformat(day), "steps": steps, "deleted": False,
             "steps_hlc": f"{at_ms:016d}:00000:srv", "steps_src": "manual"}
    return ChangeMessage(f'"public"."entries"/"7"/"{day}"', "insert", value, {"operation": "insert"})


def test_a_pull_that_brings_a_change_logged_before_the_erasure_does_not_keep_it(conn: sqlite3.Connection) -> None:
    erasures.apply(conn, [Erasure(1, "ana", dt.date(2026, 11, 10), dt.date(2026, 11, 10), ERASED_MS)], "ana")
    batch = ShapeBatch([change("2026-11-10", 111, BEFORE_MS), change("2026-11-11", 222, BEFORE_MS)],
                       ShapeCursor("h", "5_0"), up_to_date=True)
    apply_batch(conn, batch, "athlete")
    assert conn.execute("SELECT date, steps FROM server_entries ORDER BY date").fetchall() == [("2026-11-11", 222)]
    apply_batch(conn, ShapeBatch([change("2026-11-10", 333, AFTER_MS)], ShapeCursor("h", "6_0"), up_to_date=True),
                "athlete")
    assert conn.execute("SELECT date, steps FROM server_entries ORDER BY date").fetchall() == [
        ("2026-11-10", 333), ("2026-11-11", 222)]


def test_an_erasure_that_cannot_be_scrubbed_yet_is_said_by_pulse_status_until_it_is(tmp_path: Path) -> None:
    """Another process reading the store keeps its WAL (holding the erased values) from being emptied: the
    days are out of the tables, `scrub_due` stays set, and `pulse status` says so until a later scrub."""
    from pulse_cli.agent.runner import sync_status
    from pulse_cli.bootstrap import bootstrap
    from pulse_cli.sync_text import status_lines

    device = bootstrap(str(tmp_path))
    log(device.conn, "2026-11-10", BEFORE_MS, steps=1000, note="secret")
    assert not sync_status(device)["scrub_due"]
    reader = sqlite3.connect(tmp_path / "pulse.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM outbox").fetchone()  # a read transaction holds the WAL
        erasures.apply(device.conn, [Erasure(1, "ana", dt.date(2026, 11, 10), dt.date(2026, 11, 10), ERASED_MS)],
                       "ana")
        assert device.conn.execute("SELECT count(*) FROM entries WHERE note = 'secret'").fetchone() == (0,)
        info = sync_status(device)
        assert info["scrub_due"] is True
        assert any(line.startswith("erasure") and "still in the store's files" in line for line in status_lines(info))
    finally:
        reader.rollback()
        reader.close()
    erasures.scrub_if_due(device.conn)  # as the next round does
    info = sync_status(device)
    assert info["scrub_due"] is False
    assert not any(line.startswith("erasure") for line in status_lines(info))
    device.close()
