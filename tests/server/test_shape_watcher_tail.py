"""The shape log watcher's in-memory tail is bounded by size, and what it forgets is read from the database.

A throwaway database whose shape log is written directly (no reader: only the watcher's reading is under
test); the watcher reads it in its own pages of 10,000 and keeps about `keep_bytes` of the newest changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from throwaway_db import migrated_database

from pulse_server.shapes.log import LogWatcher, read_changes

CHANGES = 25_000
NOTE = "n" * 300  # each value ~400 bytes of JSON: ~800 bytes a change as the tail counts it
KEEP = 2_000_000  # ~2,500 changes of these


@pytest.fixture(scope="module")
def log_url() -> Iterator[str]:
    with migrated_database("pulse_tail") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
                " SELECT 1000 + i / 100, i %% 100, 1, 1 + i %% 7, date '2020-01-01' + i / 7, 'insert',"
                " jsonb_build_object('steps', i::text, 'note', %s::text)"
                " FROM generate_series(0, %s - 1) i", (NOTE, CHANGES))
            conn.execute("UPDATE shape_state SET head_lsn = 1000 + (%s - 1) / 100, head_op = (%s - 1) %% 100",
                         (CHANGES, CHANGES))
        yield url


def test_the_tail_keeps_about_keep_bytes_of_the_newest_changes_and_older_offsets_go_to_the_database(
    log_url: str,
) -> None:
    watcher = LogWatcher(log_url, keep_bytes=KEEP)
    with psycopg.connect(log_url, autocommit=True) as conn:
        watcher._check_build(conn)  # the first read: the tail from the head (nothing after it yet)
        assert watcher.tail == [] and watcher.covers(watcher.head)
        start = watcher.head
        conn.execute(
            "INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
            " SELECT 5000 + i / 100, i %% 100, 2, 1 + i %% 7, date '2020-01-01' + i / 7, 'update',"
            " jsonb_build_object('steps', i::text, 'note', %s::text)"
            " FROM generate_series(0, %s - 1) i", (NOTE, CHANGES))
        watcher._catch_up(conn, start)  # a burst of 25,000 changes
        everything = read_changes(conn, None, start, 10 * CHANGES)
    assert len(everything) == CHANGES
    sizes = [len(c.raw) + 400 for c in watcher.tail]
    assert sum(sizes) == watcher.tail_bytes
    assert KEEP - max(sizes) < watcher.tail_bytes <= KEEP * 5 // 4
    kept = len(watcher.tail)
    assert 1_000 < kept < CHANGES // 5
    assert [c.offset for c in watcher.tail] == [c.offset for c in everything[-kept:]]
    assert watcher.head == everything[-1].offset
    floor = everything[-kept - 1].offset  # the newest change forgotten
    assert watcher.covers(floor) and not watcher.covers(everything[-kept - 2].offset)
    users = {1, 3}
    got, reached = watcher.changes_after(floor, users)
    assert [(c.offset, c.raw) for c in got] == [(c.offset, c.raw) for c in everything[-kept:] if c.user_id in users]
    assert reached == watcher.head
    assert all(json.loads(c.raw)["note"] == NOTE for c in got)
