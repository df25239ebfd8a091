"""What a push costs Postgres must follow the push, not the user's history: the unlocked path's write
(`pulse_push_write`, migration 0015) reaches each day it writes through the entries' key.

Counted, not timed: the entries rows Postgres fetched for one push, from the push's own transaction's
statistics (`pg_stat_xact_user_tables`), for a user with years of days."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import psycopg
from server_support import UnlockedOnly, must_be_found, set_mutation, stamp

from pulse_server.accounts import add_user, issue_token
from pulse_server.db.database import Database
from sync.hlc import SKEW_LIMIT_MS

NOW = 1_764_230_400_000  # 2025-11-27 08:00 UTC
TODAY = dt.date(2025, 11, 27)
CLIENT = "phone-1"
HISTORY_DAYS = 1500


def _fetched(conn: psycopg.Connection[Any]) -> int:
    """Entries rows fetched so far by this connection's open transaction (index and sequential reads)."""
    row = conn.execute("SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
                       " FROM pg_stat_xact_user_tables WHERE relname = 'entries'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_push_to_a_few_days_reads_those_days_not_the_users_history(db: Database, database_url: str) -> None:
    with db.session() as session:
        user = add_user(session, f"history-{secrets.token_hex(4)}", "correct horse battery", False)
        token, _ = issue_token(session, user, 1)
        user_id = user.id
    days = [(TODAY - dt.timedelta(days=n)).isoformat() for n in range(HISTORY_DAYS, 0, -1)]
    history = [set_mutation(seq, day, {"steps": 1000 + seq}, stamp(NOW - 10_000_000 + seq, 0, CLIENT))
               for seq, day in enumerate(days, start=1)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        _, outcome = UnlockedOnly(lambda: NOW, SKEW_LIMIT_MS).apply_batch_unlocked(conn, token, CLIENT, history,
                                                                                    must_be_found)
    assert {r["status"] for r in outcome.results} == {"applied"}

    # Five of those days again (each an update of a row read with its version), and one new day.
    written = days[-5:]
    push = [set_mutation(HISTORY_DAYS + i, day, {"sleep_hours": 7.5},
                         stamp(NOW - 1000 + i, 0, CLIENT), base={"sleep_hours": None})
            for i, day in enumerate(written, start=1)]
    push.append(set_mutation(HISTORY_DAYS + 6, TODAY.isoformat(), {"steps": 42}, stamp(NOW - 500, 0, CLIENT)))
    with psycopg.connect(database_url) as conn:  # not autocommit: the push's statements share one transaction
        before = _fetched(conn)
        _, outcome = UnlockedOnly(lambda: NOW, SKEW_LIMIT_MS).apply_batch_unlocked(conn, token, CLIENT, push,
                                                                                    must_be_found)
        fetched = _fetched(conn) - before
        stored = conn.execute("SELECT count(*) FILTER (WHERE sleep_hours = 7.5), count(*) FROM entries"
                              " WHERE user_id = %s", (user_id,)).fetchone()
        conn.commit()
    assert [r["status"] for r in outcome.results] == ["applied"] * 6
    assert stored == (5, HISTORY_DAYS + 1)
    # The read and the write each reach the five days (and look for the new one): a handful of rows. A
    # write that joined the batch to every entry of the user fetched all 1,500.
    assert fetched <= 30, f"one push of 6 days fetched {fetched} entries rows of a {HISTORY_DAYS}-day history"
