"""The device's relay of a browser's mutations, and the shape log, on a real SQLite store."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pulse_cli.agent.outbox import pending
from pulse_cli.agent.relay import prune, relay_batch
from pulse_cli.agent.replica import rebuild_view
from pulse_cli.store.connection import open_store, read_meta
from pulse_cli.store.uow import SqliteUnitOfWork

NOW_MS = 1_764_230_400_000
TODAY = dt.date(2025, 11, 27)
BROWSER = "b1"


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_store(tmp_path)


def stamp(ms: int, client: str = BROWSER) -> str:
    return f"{ms:016d}:00000:{client}"


def relay(conn: sqlite3.Connection, *mutations: dict[str, Any]) -> list[dict[str, Any]]:
    return relay_batch(SqliteUnitOfWork(conn, lambda: NOW_MS), BROWSER, list(mutations), NOW_MS, TODAY)


def log_rows(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute("SELECT date, op FROM shape_log ORDER BY seq")]


def test_a_relayed_mutation_is_queued_under_the_browsers_id_and_replays_are_duplicates(
    conn: sqlite3.Connection,
) -> None:
    first = {"seq": 7, "date": "2025-11-26", "op": "set", "fields": {"steps": 9000}, "base": {"steps": None},
             "hlc": stamp(NOW_MS - 5000)}
    assert relay(conn, first) == [{"seq": 7, "status": "applied", "hlc": stamp(NOW_MS - 5000)}]
    again = relay(conn, first)[0]
    assert again["status"] == "duplicate" and again["original_status"] == "applied"
    queued = pending(conn, 10)
    assert len(queued) == 1
    assert (queued[0].client_id, queued[0].client_seq, queued[0].wire()["seq"]) == (BROWSER, 7, 7)
    assert queued[0].wire()["hlc"] == stamp(NOW_MS - 5000) and queued[0].fields == {"steps": 9000}
    # Later device stamps sort after the browser's.
    assert (read_meta(conn, "hlc_last") or "") > stamp(NOW_MS - 5000)[:22]
    assert log_rows(conn) == [("2025-11-26", "upsert")]


def test_an_invalid_mutation_is_rejected_alone_and_queues_nothing(conn: sqlite3.Connection) -> None:
    results = relay(
        conn,
        {"seq": 1, "date": "2025-11-26", "op": "set", "fields": {"sleep_hours": 30}, "base": {},
         "hlc": stamp(NOW_MS)},
        {"seq": 2, "date": "2025-11-26", "op": "set", "fields": {"note": "ok"}, "base": {}, "hlc": stamp(NOW_MS)},
        {"seq": 3, "date": "2025-11-26", "op": "set", "fields": {"steps": 1}, "base": {}, "hlc": f"{NOW_MS}:0:b1"},
    )
    assert [r["status"] for r in results] == ["rejected", "applied", "rejected"]
    assert results[0]["error"]["field"] == "sleep_hours" and results[2]["error"]["field"] == "hlc"
    assert [row.client_seq for row in pending(conn, 10)] == [2]
    stored = json.loads(conn.execute("SELECT result FROM relayed WHERE seq = 1").fetchone()[0])
    assert stored["status"] == "rejected"


def test_the_later_stamp_wins_in_the_local_view_and_a_clock_far_ahead_is_clamped(conn: sqlite3.Connection) -> None:
    relay(conn, {"seq": 1, "date": "2025-11-26", "op": "set", "fields": {"steps": 500}, "base": {},
                 "hlc": stamp(NOW_MS - 1000)})
    older = relay(conn, {"seq": 2, "date": "2025-11-26", "op": "set", "fields": {"steps": 400}, "base": {},
                         "hlc": stamp(NOW_MS - 2000)})[0]
    assert older["status"] == "conflict" and older["conflicts"][0]["kept"] == 500
    assert conn.execute("SELECT steps FROM entries WHERE date = '2025-11-26'").fetchone()[0] == 500
    ahead = relay(conn, {"seq": 3, "date": "2025-11-25", "op": "set", "fields": {"steps": 1}, "base": {},
                         "hlc": stamp(NOW_MS + 3_600_000)})[0]
    assert ahead["hlc"] == stamp(NOW_MS) and ahead["clamped_from"] == stamp(NOW_MS + 3_600_000)


def test_a_browser_far_ahead_keeps_the_order_of_its_edits_once_clamped(conn: sqlite3.Connection) -> None:
    # Two edits of one field, both an hour ahead, in one batch: clamped to the same stamp, the correction
    # would be taken for the typo again.
    typo, fixed = stamp(NOW_MS + 3_600_000), stamp(NOW_MS + 3_600_010)
    results = relay(conn, {"seq": 1, "date": "2025-11-26", "op": "set", "fields": {"steps": 1000}, "base": {},
                           "hlc": typo},
                    {"seq": 2, "date": "2025-11-26", "op": "set", "fields": {"steps": 10000},
                     "base": {"steps": typo}, "hlc": fixed})
    assert [r["status"] for r in results] == ["applied", "applied"]
    assert results[0]["hlc"] == stamp(NOW_MS) < results[1]["hlc"] <= f"{NOW_MS + 60_000:016d}"
    assert conn.execute("SELECT steps FROM entries WHERE date = '2025-11-26'").fetchone()[0] == 10000
    queued = [row.wire() for row in pending(conn, 10)]
    assert [m["hlc"] for m in queued] == [r["hlc"] for r in results]  # as queued upstream
    assert queued[1]["base"] == {"steps": results[0]["hlc"]}  # made on top of the first: not a conflict there


def test_a_copied_browser_profile_reusing_pruned_seqs_is_a_clash_and_a_replay_still_a_duplicate(
    conn: sqlite3.Connection,
) -> None:
    made = NOW_MS - 40 * 86_400_000  # forty days ago: relayed then, results pruned since
    old = [{"seq": n, "date": f"2025-10-{10 + n}", "op": "set", "fields": {"steps": n}, "base": {},
            "hlc": stamp(made + n)} for n in (1, 2, 3)]
    assert [r["status"] for r in relay(conn, *old)] == ["applied"] * 3
    conn.execute("UPDATE outbox SET status = 'applied'")  # the device pushed them on
    conn.execute("BEGIN IMMEDIATE")
    assert prune(conn, dt.datetime.now(dt.UTC) + dt.timedelta(days=31)) == 2  # seqs 1 and 2; 3, the newest, kept
    conn.execute("COMMIT")
    copy = {"seq": 2, "date": "2025-11-20", "op": "set", "fields": {"note": "made on the copy"}, "base": {},
            "hlc": stamp(NOW_MS)}
    assert [r["status"] for r in relay(conn, copy, old[0])] == ["clash", "duplicate"]
    assert conn.execute("SELECT count(*) FROM entries WHERE date = '2025-11-20'").fetchone() == (0,)


def test_a_rebuild_that_changes_nothing_adds_nothing_to_the_shape_log(conn: sqlite3.Connection) -> None:
    relay(conn, {"seq": 1, "date": "2025-11-26", "op": "set", "fields": {"steps": 500}, "base": {},
                 "hlc": stamp(NOW_MS)})
    before = log_rows(conn)
    conn.execute("BEGIN IMMEDIATE")
    rebuild_view(conn, pending(conn, 10))  # the server copy is empty; the pending mutation re-applied
    conn.execute("COMMIT")
    assert log_rows(conn) == before
    conn.execute("BEGIN IMMEDIATE")
    rebuild_view(conn, [])  # nothing pending: the day leaves the view
    conn.execute("COMMIT")
    assert log_rows(conn) == [*before, ("2025-11-26", "delete")]
