"""What the device keeps is bounded, and its identity rules hold, on a real SQLite store: acknowledged
mutations past their window go, rejected and pending ones stay; the device app's shape log folds to each
day's newest change without changing what a client at any position reads; a new client id moves only
the pending mutations; a relayed replay with other content is a clash."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pulse_cli.agent import identity, outbox
from pulse_cli.agent.relay import hand_back, high_water, refused_since, relay_batch
from pulse_cli.agent.relay import prune as prune_relayed
from pulse_cli.agent.replica import compact_shape_log
from pulse_cli.store.connection import open_store
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.usecases import delete_entry, log_entry

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 12, 1)
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_store(tmp_path)


def log(conn: sqlite3.Connection, day: str, **fields: Any) -> None:
    log_entry(SqliteUnitOfWork(conn, lambda: NOW_MS), "", day, fields, TODAY)


def statuses(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in conn.execute("SELECT seq, status FROM outbox ORDER BY seq")]


def test_acknowledged_and_discarded_mutations_go_after_their_window_rejected_and_pending_stay(
    conn: sqlite3.Connection,
) -> None:
    for i in range(6):
        log(conn, f"2026-11-{10 + i:02d}", steps=1000 + i)
    old, recent = (NOW - dt.timedelta(days=31)).isoformat(), (NOW - dt.timedelta(days=29)).isoformat()
    marks = [("applied", old), ("conflict", old), ("discarded", old), ("rejected", old), ("applied", recent),
             ("pending", None)]
    for seq, (status, sent_at) in enumerate(marks, start=1):
        conn.execute("UPDATE outbox SET status = ?, sent_at = ? WHERE seq = ?", (status, sent_at, seq))
    assert outbox.prune(conn, now=NOW) == 3
    assert statuses(conn) == [(4, "rejected"), (5, "applied"), (6, "pending")]
    log(conn, "2026-11-30", steps=1)  # seqs are never reused after a prune
    assert statuses(conn)[-1] == (7, "pending")
    assert identity.highest_issued_seq(conn) == 7


def test_the_folded_shape_log_reads_the_same_from_every_position(conn: sqlite3.Connection) -> None:
    for i in range(3):
        log(conn, "2026-11-20", steps=100 + i)
        log(conn, "2026-11-21", note=f"note {i}")
    delete_entry(SqliteUnitOfWork(conn, lambda: NOW_MS), "", "2026-11-21", TODAY)
    log(conn, "2026-11-22", steps=5)

    def read_after(position: int) -> dict[str, tuple[int, str]]:
        """Each day with a change past `position`: its newest change (what the device app serves)."""
        found: dict[str, tuple[int, str]] = {}
        for seq, date, op in conn.execute("SELECT seq, date, op FROM shape_log WHERE seq > ? ORDER BY seq",
                                          (position,)):
            found[date] = (seq, op)
        return found

    head = int(conn.execute("SELECT max(seq) FROM shape_log").fetchone()[0])
    before = {p: read_after(p) for p in range(head + 1)}
    removed = compact_shape_log(conn)
    assert removed == head - 3  # three days, one change each left
    assert int(conn.execute("SELECT max(seq) FROM shape_log").fetchone()[0]) == head
    assert {p: read_after(p) for p in range(head + 1)} == before
    assert compact_shape_log(conn) == 0


def test_a_new_client_id_moves_the_pending_mutations_and_keeps_the_acknowledged_under_the_old(
    conn: sqlite3.Connection,
) -> None:
    log(conn, "2026-11-01", steps=1)
    log(conn, "2026-11-02", steps=2)
    log(conn, "2026-11-03", steps=3)
    conn.execute("UPDATE outbox SET status = 'applied', sent_at = ? WHERE seq = 1", (NOW.isoformat(),))
    old = identity.current_id(conn)
    stamps_before = [r[0] for r in conn.execute("SELECT hlc FROM outbox ORDER BY seq")]
    new = identity.take_new_id(conn, {old})
    assert new != old and identity.current_id(conn) == new
    rows = {r.seq: r for r in outbox.by_status(conn, "applied", "pending")}
    assert (rows[1].client_id, rows[1].wire_seq) == (old, 1)
    assert [(rows[s].client_id, rows[s].wire_seq) for s in (2, 3)] == [(None, 2), (None, 3)]
    assert [r[0] for r in conn.execute("SELECT hlc FROM outbox ORDER BY seq")] == stamps_before
    assert outbox.senders(conn, new) == [old]
    # A restored server holding the old id's seqs only up to 0 gets seq 1 again; up to 1, nothing.
    assert outbox.requeue_past(conn, old, new, 1) == 0
    assert outbox.requeue_past(conn, old, new, 0) == 1
    assert statuses(conn) == [(1, "pending"), (2, "pending"), (3, "pending")]


def test_a_browsers_replay_with_other_content_is_a_clash_on_the_device_too(conn: sqlite3.Connection) -> None:
    def relay(*mutations: dict[str, Any]) -> list[dict[str, Any]]:
        return relay_batch(SqliteUnitOfWork(conn, lambda: NOW_MS), "tab1", list(mutations), NOW_MS, TODAY)

    first = {"seq": 4, "date": "2026-11-25", "op": "set", "fields": {"steps": 10}, "base": {},
             "hlc": f"{NOW_MS - 10:016d}:00000:tab1"}
    assert relay(first)[0]["status"] == "applied"
    assert high_water(conn, "tab1") == 4 and high_water(conn, "tab2") is None
    assert relay(json.loads(json.dumps(first)))[0]["status"] == "duplicate"
    other = {**first, "fields": {"steps": 99}}
    result = relay(other)[0]
    assert result["status"] == "clash" and result["error"]["code"] == "client_id_reused"
    assert [r.fields for r in outbox.pending(conn, 10)] == [{"steps": 10}]


def test_a_browsers_relayed_results_go_after_their_window_and_a_replay_of_one_is_still_a_duplicate(
    conn: sqlite3.Connection,
) -> None:
    """`relayed` kept every result of every browser change for good. Now a result past the window goes, as the
    server prunes its own; kept: each browser's newest (its high-water mark) and those whose change is still
    pending or refused here (the browser learns of a refusal from them)."""
    def relay(*mutations: dict[str, Any]) -> list[dict[str, Any]]:
        return relay_batch(SqliteUnitOfWork(conn, lambda: NOW_MS), "tab1", list(mutations), NOW_MS, TODAY)

    made = NOW_MS - 31 * 86_400_000  # relayed then, as their results' age below says
    mutations = [{"seq": seq, "date": f"2026-11-{seq:02d}", "op": "set", "fields": {"steps": seq}, "base": {},
                  "hlc": f"{made - 100 + seq:016d}:00000:tab1"} for seq in (1, 2, 3, 4)]
    assert [r["status"] for r in relay(*mutations)] == ["applied"] * 4
    conn.execute("UPDATE outbox SET status = 'applied' WHERE client_seq IN (1, 4)")
    conn.execute("UPDATE outbox SET status = 'rejected' WHERE client_seq = 2")  # seq 3: still pending
    conn.execute("UPDATE relayed SET created_at = ?", ((NOW - dt.timedelta(days=31)).isoformat(),))

    assert prune_relayed(conn, now=NOW) == 1

    kept = [int(r[0]) for r in conn.execute("SELECT seq FROM relayed ORDER BY seq")]
    assert kept == [2, 3, 4]
    assert high_water(conn, "tab1") == 4
    again = relay(json.loads(json.dumps(mutations[0])))[0]
    assert (again["status"], again.get("pruned")) == ("duplicate", True)
    assert len(outbox.pending(conn, 10)) == 1  # nothing queued again: only seq 3, as before
    assert prune_relayed(conn, now=NOW) == 0


def test_a_refused_browser_change_is_listed_with_the_change_until_the_browser_takes_it(
    conn: sqlite3.Connection,
) -> None:
    mutation = {"seq": 7, "date": "2026-11-20", "op": "set", "fields": {"steps": 77}, "base": {"steps": None},
                "hlc": f"{NOW_MS - 5:016d}:00000:tab1"}
    [taken] = relay_batch(SqliteUnitOfWork(conn, lambda: NOW_MS), "tab1", [mutation], NOW_MS, TODAY)
    assert taken["status"] == "applied"
    assert refused_since(conn, "tab1", 10) == []  # taken here, not refused
    error = {"code": "invalid_value", "message": "note: the text cannot be stored"}
    conn.execute("UPDATE outbox SET status = 'rejected', result = ? WHERE client_seq = 7",
                 (json.dumps({"seq": 7, "status": "rejected", "error": error}),))

    [listed] = refused_since(conn, "tab1", 10)
    assert listed == {"seq": 7, "status": "rejected", "error": error, "date": "2026-11-20", "op": "set",
                      "fields": {"steps": 77}, "base": {"steps": None}, "hlc": mutation["hlc"]}
    assert refused_since(conn, "tab2", 10) == []  # another browser's: none

    assert hand_back(conn, "tab1", [7, 8]) == 1
    assert refused_since(conn, "tab1", 10) == [] and statuses(conn) == [(1, "discarded")]

