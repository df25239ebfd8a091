"""Regression tests for bugs found while building the reports, outside the report code: the weight
flag measured against the wrong weight, and two in the replication reader."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from report_support import wait_for
from throwaway_db import migrated_database

from pulse_core.entry import Entry
from pulse_core.reports import flags
from pulse_server.accounts import add_user
from pulse_server.push import Reconciler
from sync.hlc import Stamp


def _write_entry(conn: psycopg.Connection[Any], user_id: int, day: dt.date, steps: int) -> None:
    now = time.time_ns() // 1_000_000
    raw = {"seq": day.toordinal(), "date": day.isoformat(), "op": "set", "fields": {"steps": steps},
           "base": {"steps": None}, "hlc": str(Stamp(now, 0, "bugcheck")), "source": "manual"}
    outcome = Reconciler(lambda: now, 60_000).apply_batch(conn, user_id, "bugcheck", [raw])
    assert outcome.results[0]["status"] == "applied", outcome.results


def test_a_write_made_while_the_server_runs_reaches_the_shape_log(demo_server: Any, db: Any) -> None:
    """Was: `_wait_for_wal` called conn.notifies() inside another conn.notifies() loop on the same
    connection; psycopg 3.3 holds the connection's lock while that generator is suspended, so the first
    NOTIFY that woke the reader deadlocked it and no later write reached any device."""
    with db.session() as session:
        athlete = add_user(session, f"late-{secrets.token_hex(4)}", "correct horse battery", False)
    assert athlete.id is not None
    user_id = athlete.id
    db.run(lambda conn: _write_entry(conn, user_id, dt.date(2021, 1, 1), 1234))

    def in_shape_log() -> bool:
        def check(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute("SELECT 1 FROM shape_rows WHERE user_id = %s", (user_id,)).fetchone() is not None
        return bool(db.run(check))

    wait_for(in_shape_log, 15, "the replication reader to log a write made after the server started")


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with migrated_database("pulse_bug") as url:
        yield url


def test_entries_written_before_the_replication_slot_exists_reach_the_shape_log(fresh_database: str) -> None:
    """Was: the shape log came only from WAL read through the slot, which the first server with the
    reader creates, so entries written before it (a seed script, a restore) never reached a device."""
    from pulse_server.replication.reader import ReplicationReader

    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("INSERT INTO users (username, password_hash, is_coach, created_at)"
                           " VALUES ('early', '!', false, now()) RETURNING id").fetchone()
        assert row is not None
        _write_entry(conn, int(row[0]), dt.date(2021, 1, 1), 4321)
    reader = ReplicationReader(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        reader.ensure_slot(conn)
        reader.catch_up(conn)
        reader.close()
        count = conn.execute("SELECT count(*) FROM shape_rows").fetchone()
    assert count == (1,)


def test_a_weight_drop_of_exactly_two_percent_is_not_flagged() -> None:
    start = dt.date(2026, 5, 1)
    week = [Entry(user="a", date=start, weight_kg=Decimal("100.00")),
            Entry(user="a", date=start + dt.timedelta(days=3), weight_kg=Decimal("98.00"))]
    assert [f.code for f in flags(week, start + dt.timedelta(days=3))] == []


def test_a_weight_rise_of_more_than_two_percent_is_flagged() -> None:
    start = dt.date(2026, 5, 1)
    week = [Entry(user="a", date=start, weight_kg=Decimal("98.00")),
            Entry(user="a", date=start + dt.timedelta(days=3), weight_kg=Decimal("100.00"))]
    assert [f.code for f in flags(week, start + dt.timedelta(days=3))] == ["weight_change"]
