"""Big transactions through the replication reader: whole, exact, once, in commit order, in bounded memory.

The reader runs in this process, on a database of this module's own, its walsender told to keep only
64 kB of decoded changes (`logical_decoding_work_mem` is a per-session setting, which the replication
connection takes from its `options`): any transaction past a few hundred rows is streamed to the reader
while it runs (pgoutput protocol version 2), in blocks, as a transaction past the default 64 MB is on a
real server. A second slot decoded with `test_decoding` is the independent record of what each
transaction changed, in order; `entries` itself is the record of what the rows must end up as.

1. 21,010 changes in one streamed transaction reach the log whole, at one LSN, with ops 0..n-1 in
   Postgres's order, and the reader's Python allocations stay under 10 MB at their peak (measured:
   ~2 MB in rounds of 1,000 changes; 91 MB when the same transaction is held whole).
2. A streamed transaction that rolls back, and a savepoint rolled back inside a committed one, leave
   nothing in the log, and the survivors are numbered with no gap; nothing stays staged.
3. Two transactions streamed in interleaved blocks, and a small one sent whole between their commits,
   reach the log in commit order, and a row both big ones wrote holds the later commit's value.
4. A reader that dies with a transaction half staged (after acknowledging a later commit) leaves it to
   the next reader, which logs it whole and once.
5. A streamed transaction logged but not acknowledged when the reader crashes is replayed, sent whole
   this time, onto the same offsets: the log, the rows and the head are unchanged.
6. Updates that leave a large (TOASTed) note unchanged, in a streamed or spilled transaction, keep it.
7. An erasure made in a big (streamed or spilled) transaction purges the log of the erased days' earlier
   changes and tells the watchers; one rolled back with its savepoint purges nothing, also when its
   record was staged before its subtransaction's Stream Abort.
8. A real `pulse-server` SIGKILLed at random points while a writer commits big transactions (with
   rolled-back savepoints) and restarted: every transaction is in the log whole and once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import random
import secrets
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from replication_support import Change, decoded_transactions, entries_as_text, one, shape_rows_values, wait_for
from server_support import ServerProcess
from throwaway_db import migrated_database

from pulse_server.erasure import erase
from pulse_server.replication import pgoutput
from pulse_server.replication.batch import ERASED_CHANNEL
from pulse_server.replication.reader import ReplicationReader, lsn_int, slot_name
from pulse_server.replication.staging import TABLE as STAGING

LOW_WORK_MEM = "options=-c%20logical_decoding_work_mem%3D64kB"
XID_MASK = 0xFFFFFFFF  # test_decoding shows 32-bit xids; shape_log.txid carries the epoch too
# Whether the shape log holds a transaction the slot has not confirmed (a reader starting now replays it).
REPLAY_PENDING = ("SELECT coalesce((SELECT max(lsn) FROM shape_log) >= (SELECT confirmed_flush_lsn - '0/0'::pg_lsn"
                  " FROM pg_replication_slots WHERE slot_name = %s), false)")

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class BigDb:
    url: str
    users: list[int]


@pytest.fixture(scope="module")
def big_db() -> Iterator[BigDb]:
    with migrated_database("pulse_big") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            users = [int(r[0]) for r in conn.execute(
                "INSERT INTO users (username, password_hash, is_coach, created_at)"
                " SELECT 'big-' || i, '!', false, now() FROM generate_series(1, 100) i RETURNING id")]
        yield BigDb(url, sorted(users))


@pytest.fixture
def pgc(big_db: BigDb) -> Iterator[Conn]:
    with psycopg.connect(big_db.url, autocommit=True, application_name="pulse-tests") as conn:
        yield conn


@pytest.fixture
def check_slot(pgc: Conn) -> Iterator[str]:
    """A `test_decoding` slot that sees every transaction of the test (created before its writes)."""
    name = f"pulse_check_{secrets.token_hex(4)}"
    pgc.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (name,))
    yield name
    pgc.execute("SELECT pg_drop_replication_slot(%s)", (name,))


@contextlib.contextmanager
def reader_on(db: BigDb, **options: Any) -> Iterator[tuple[ReplicationReader, Conn]]:
    """A reader whose walsender keeps 64 kB of decoded changes, on a connection of its own (as the server's
    leader has), caught up with what came before. Leaving the block is the reader's death: its stream and
    its connection (with its staging table) go."""
    reader = ReplicationReader(f"{db.url}?{LOW_WORK_MEM}", **options)
    with psycopg.connect(db.url, autocommit=True, application_name="pulse-replication") as conn:
        try:
            reader.ensure_slot(conn)
            reader.catch_up(conn, timeout_s=120)
            yield reader, conn
        finally:
            reader.close()


def streamed(conn: Conn, slot: str) -> int:
    """Transactions Postgres has streamed on this slot so far."""
    return int(one(conn, "SELECT coalesce((SELECT stream_txns FROM pg_stat_replication_slots"
                         " WHERE slot_name = %s), 0)", (slot,)))


@dataclass(frozen=True)
class Logged:
    lsn: int
    op: int
    change: Change


def logged(conn: Conn, txid: int) -> list[Logged]:
    return [Logged(int(lsn), int(op), (operation, int(user), day.isoformat())) for lsn, op, operation, user, day
            in conn.execute("SELECT lsn, op, operation, user_id, date FROM shape_log WHERE txid = %s"
                            " ORDER BY lsn, op", (txid,))]


def assert_logged_whole(conn: Conn, txid: int, expected: list[Change]) -> int:
    """The transaction's changes are in the log as Postgres decoded them, in order, at one LSN with ops
    0..n-1; its LSN."""
    rows = logged(conn, txid)
    assert [r.change for r in rows] == expected
    assert [r.op for r in rows] == list(range(len(expected)))
    assert len({r.lsn for r in rows}) == 1
    return rows[0].lsn


def assert_rows_are_the_table(conn: Conn, users: list[int]) -> None:
    table = {k: v for k, v in entries_as_text(conn).items() if k[0] in users}
    assert {k: v for k, v in shape_rows_values(conn).items() if k[0] in users} == table


def txid_of(conn: Conn) -> int:
    return int(one(conn, "SELECT pg_current_xact_id()::text::bigint"))


def insert_days(conn: Conn, users: list[int], first: dt.date, days: range) -> None:
    """One row per user and day, in (user, day) order."""
    conn.execute("INSERT INTO entries (user_id, date, steps) SELECT u, %s::date + d, d"
                 " FROM unnest(%s::bigint[]) u CROSS JOIN generate_series(%s::int, %s::int) d ORDER BY u, d",
                 (first, users, days.start, days.stop - 1))


class Seen:
    """The stream-control messages the reader decoded, recorded as it decodes them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messages: list[pgoutput.Message] = []
        self.unchanged = 0
        decode = pgoutput.Decoder.decode

        def recording(decoder: pgoutput.Decoder, data: bytes) -> pgoutput.Message:
            message = decode(decoder, data)
            if isinstance(message, (pgoutput.StreamStart, pgoutput.StreamAbort, pgoutput.StreamCommit)):
                self.messages.append(message)
            if isinstance(message, pgoutput.Change) and message.unchanged:
                self.unchanged += 1
            return message

        monkeypatch.setattr(pgoutput.Decoder, "decode", recording)

    def blocks(self) -> list[int]:
        return [m.xid for m in self.messages if isinstance(m, pgoutput.StreamStart)]


# -- 1. whole, exact, bounded ---------------------------------------------------------------------------


def test_a_streamed_transaction_reaches_the_log_whole_exactly_once_in_bounded_memory(
    big_db: BigDb, pgc: Conn, check_slot: str
) -> None:
    users, first = big_db.users, dt.date(2030, 1, 1)
    with reader_on(big_db, batch_changes=1_000, spill_changes=1_000) as (reader, conn):
        before = streamed(pgc, reader.slot)
        with pgc.transaction():
            txid = txid_of(pgc)
            insert_days(pgc, users, first, range(200))  # 20,000
            pgc.execute("UPDATE entries SET steps = steps + 1 WHERE user_id = ANY(%s) AND date < %s::date + 10",
                        (users, first))  # 1,000
            pgc.execute("DELETE FROM entries WHERE user_id = %s AND date >= %s::date + 190", (users[0], first))
        tracemalloc.start()
        try:
            stats = reader.catch_up(conn, timeout_s=300)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert streamed(pgc, reader.slot) > before
    expected = decoded_transactions(pgc, check_slot)[txid & XID_MASK]
    assert len(expected) == 20_000 + 1_000 + 10
    assert_logged_whole(pgc, txid, expected)
    assert stats.transactions == 1 and stats.changes == len(expected)
    assert_rows_are_the_table(pgc, users)
    assert peak < 10 << 20, f"the reader's allocations peaked at {peak / 2**20:.0f} MB"


# -- 2. aborts ------------------------------------------------------------------------------------------


def test_an_aborted_streamed_transaction_and_a_rolled_back_savepoint_leave_nothing(
    big_db: BigDb, pgc: Conn, check_slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users, first = big_db.users[:50], dt.date(2031, 1, 1)
    kept, dropped = users[:25], users[25:]
    seen = Seen(monkeypatch)
    with reader_on(big_db) as (reader, conn):
        before = streamed(pgc, reader.slot)
        with pgc.transaction(force_rollback=True):
            aborted = txid_of(pgc)
            insert_days(pgc, users, first, range(200))  # 10,000, rolled back
        with pgc.transaction():
            txid = txid_of(pgc)
            insert_days(pgc, kept, first, range(200))  # 5,000
            with pgc.transaction(force_rollback=True):  # a savepoint rolled back...
                insert_days(pgc, dropped, first, range(200))  # 5,000
                with pgc.transaction():  # ... with one released inside it
                    insert_days(pgc, dropped, first, range(300, 310))
            with pgc.transaction():
                insert_days(pgc, dropped, first, range(200, 220))  # 500
        reader.catch_up(conn, timeout_s=300)
        assert streamed(pgc, reader.slot) >= before + 2
        left = one(conn, f"SELECT count(*) FROM {STAGING}")
    subtransaction_aborts = [m for m in seen.messages if isinstance(m, pgoutput.StreamAbort) and m.xid != m.subxid]
    assert subtransaction_aborts, "the savepoint's changes were not streamed before it rolled back"
    assert any(isinstance(m, pgoutput.StreamAbort) and m.xid == m.subxid == aborted & XID_MASK for m in seen.messages)
    expected = decoded_transactions(pgc, check_slot)[txid & XID_MASK]
    assert len(expected) == 5_000 + 500
    assert_logged_whole(pgc, txid, expected)
    assert not logged(pgc, aborted)
    assert one(pgc, "SELECT count(*) FROM shape_log WHERE user_id = ANY(%s) AND date >= %s", (users, first)) == 5_500
    assert_rows_are_the_table(pgc, users)
    assert left == 0


# -- 3. commit order ------------------------------------------------------------------------------------


def test_interleaved_streamed_transactions_reach_the_log_in_commit_order(
    big_db: BigDb, pgc: Conn, check_slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_users, b_users, first = big_db.users[50:75], big_db.users[75:100], dt.date(2032, 1, 1)
    shared, other = (big_db.users[0], dt.date(2032, 6, 1)), (big_db.users[1], dt.date(2032, 6, 1))
    pgc.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 0), (%s, %s, 0)", (*shared, *other))
    seen = Seen(monkeypatch)
    with reader_on(big_db) as (reader, conn), psycopg.connect(big_db.url) as a, psycopg.connect(big_db.url) as b:
        a_txid, b_txid = txid_of(a), txid_of(b)
        for chunk in range(4):  # 4 x 500 rows each, alternating: their blocks interleave in the stream
            insert_days(a, a_users, first, range(chunk * 20, chunk * 20 + 20))
            insert_days(b, b_users, first, range(chunk * 20, chunk * 20 + 20))
        b.execute("UPDATE entries SET steps = 1 WHERE user_id = %s AND date = %s", shared)
        b.commit()
        with pgc.transaction():  # small, sent whole, between the two commits
            c_txid = txid_of(pgc)
            pgc.execute("UPDATE entries SET steps = 2 WHERE user_id = %s AND date = %s", other)
        a.execute("UPDATE entries SET steps = 3 WHERE user_id = %s AND date = %s", shared)
        a.commit()
        reader.catch_up(conn, timeout_s=300)
    blocks = [x for x in seen.blocks() if x in (a_txid & XID_MASK, b_txid & XID_MASK)]
    switches = sum(1 for x, y in itertools.pairwise(blocks) if x != y)
    assert switches >= 2, f"the two transactions' blocks did not interleave: {blocks}"
    decoded = decoded_transactions(pgc, check_slot)
    lsn_b = assert_logged_whole(pgc, b_txid, decoded[b_txid & XID_MASK])
    lsn_c = assert_logged_whole(pgc, c_txid, decoded[c_txid & XID_MASK])
    lsn_a = assert_logged_whole(pgc, a_txid, decoded[a_txid & XID_MASK])
    assert lsn_b < lsn_c < lsn_a
    assert len(decoded[a_txid & XID_MASK]) == len(decoded[b_txid & XID_MASK]) == 2_001
    assert one(pgc, "SELECT value->>'steps' FROM shape_rows WHERE user_id = %s AND date = %s", shared) == "3"
    assert one(pgc, "SELECT value->>'steps' FROM shape_rows WHERE user_id = %s AND date = %s", other) == "2"
    assert_rows_are_the_table(pgc, big_db.users)


# -- 4, 5. a reader's death ------------------------------------------------------------------------------


def test_a_reader_that_dies_with_a_transaction_half_staged_leaves_it_whole_to_the_next(
    big_db: BigDb, pgc: Conn, check_slot: str
) -> None:
    users, first = big_db.users[:40], dt.date(2033, 1, 1)
    with reader_on(big_db):  # the slot exists (creating one would wait for the open transaction)
        pass
    with psycopg.connect(big_db.url) as writer:
        txid = txid_of(writer)
        insert_days(writer, users, first, range(100))  # 4,000, the transaction still open
        begun_by = lsn_int(one(writer, "SELECT pg_current_wal_lsn()::text"))
        with reader_on(big_db, batch_changes=500, spill_changes=500) as (reader, conn):
            with pgc.transaction():  # committed while the big one runs: logged and acknowledged
                small = txid_of(pgc)
                pgc.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 1)",
                            (users[0], first + dt.timedelta(days=500)))

            def half_staged() -> bool:
                reader.read_once(conn, 0.1)
                return bool(logged(pgc, small)) and one(conn, f"SELECT count(*) FROM {STAGING}") > 0

            wait_for(half_staged, 60, "part of the open transaction staged and the small one logged")
            reader.catch_up(conn, timeout_s=60)  # the slot confirms past the big transaction's first changes
            confirmed = lsn_int(one(pgc, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                                         " WHERE slot_name = %s", (reader.slot,)))
            assert confirmed > begun_by
            assert not logged(pgc, txid)
        insert_days(writer, users, first, range(100, 200))  # the rest, after the reader died
        writer.commit()
    with reader_on(big_db) as _:
        pass
    expected = decoded_transactions(pgc, check_slot)
    assert len(expected[txid & XID_MASK]) == 8_000
    assert_logged_whole(pgc, txid, expected[txid & XID_MASK])
    assert_logged_whole(pgc, small, expected[small & XID_MASK])
    assert one(pgc, "SELECT count(*) FROM shape_log WHERE user_id = ANY(%s) AND date >= %s", (users, first)) == 8_001
    assert_rows_are_the_table(pgc, users)


class Crash(Exception):
    pass


def test_a_streamed_transaction_replayed_whole_after_a_crash_lands_on_the_same_offsets(
    big_db: BigDb, pgc: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    users, first = big_db.users[:30], dt.date(2035, 1, 1)
    with reader_on(big_db, batch_changes=500, spill_changes=500) as (reader, conn):
        before = streamed(pgc, reader.slot)
        with pgc.transaction():
            txid = txid_of(pgc)
            insert_days(pgc, users, first, range(100))  # 3,000
            with pgc.transaction(force_rollback=True):  # gaps in the streamed ops, closed at the commit
                insert_days(pgc, users, first, range(100, 130))
            insert_days(pgc, users, first, range(200, 230))
            pgc.execute("UPDATE entries SET steps = -steps WHERE user_id = ANY(%s)"
                        " AND date BETWEEN %s AND %s::date + 19", (users, first, first))
        target = lsn_int(one(pgc, "SELECT pg_current_wal_flush_lsn()::text"))

        def crash_before_acknowledging(lsn: int, reply_requested: bool = False) -> None:
            if lsn >= target:
                raise Crash

        assert reader.stream is not None
        monkeypatch.setattr(reader.stream, "acknowledge", crash_before_acknowledging)
        with pytest.raises(Crash):
            reader.catch_up(conn, timeout_s=120)
        monkeypatch.undo()
        assert streamed(pgc, reader.slot) > before
    assert one(pgc, REPLAY_PENDING, (reader.slot,))
    log_before = pgc.execute("SELECT * FROM shape_log ORDER BY lsn, op").fetchall()
    rows_before = shape_rows_values(pgc)
    head_before = pgc.execute("SELECT head_lsn, head_op FROM shape_state").fetchone()
    assert len(logged(pgc, txid)) == 3_000 + 900 + 600
    # Sent whole this time (Postgres spills it to its disk instead of streaming), held in memory whole.
    with reader_on(big_db, streaming=False, batch_changes=100_000, spill_changes=100_000):
        pass
    # The reader sent its acknowledgement before it closed; the walsender records it as it reads it (it
    # lagged behind the close once on a loaded machine).
    wait_for(lambda: not one(pgc, REPLAY_PENDING, (reader.slot,)), 10, "the slot to confirm the replay")
    assert pgc.execute("SELECT * FROM shape_log ORDER BY lsn, op").fetchall() == log_before
    assert shape_rows_values(pgc) == rows_before
    assert pgc.execute("SELECT head_lsn, head_op FROM shape_state").fetchone() == head_before


# -- 6. unchanged TOASTed columns ---------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "spilled"])
def test_updates_leaving_a_large_note_unchanged_in_a_big_transaction_keep_the_note(
    big_db: BigDb, pgc: Conn, check_slot: str, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    first = dt.date(2036 if streaming else 2037, 1, 1)
    noted, filler = big_db.users[:4], big_db.users[10:40]
    notes = {u: secrets.token_urlsafe(6000) for u in noted}  # incompressible enough to be stored out of line
    seen = Seen(monkeypatch)
    with reader_on(big_db, streaming=streaming, batch_changes=500, spill_changes=500) as (reader, conn):
        for u in noted[:3]:  # committed before, logged: their notes are in shape_rows
            pgc.execute("INSERT INTO entries (user_id, date, note) VALUES (%s, %s, %s)", (u, first, notes[u]))
        reader.catch_up(conn, timeout_s=60)
        with pgc.transaction():
            txid = txid_of(pgc)
            insert_days(pgc, filler, first, range(100))  # 3,000: big enough to stream or spill
            pgc.execute("INSERT INTO entries (user_id, date, note) VALUES (%s, %s, %s)",
                        (noted[3], first, notes[noted[3]]))  # its note comes whole, then unchanged
            pgc.execute("UPDATE entries SET steps = 1 WHERE user_id = ANY(%s) AND date = %s", (noted, first))
            insert_days(pgc, filler, first, range(100, 110))
            pgc.execute("UPDATE entries SET steps = 2 WHERE user_id = ANY(%s) AND date = %s", (noted[:2], first))
            pgc.execute("DELETE FROM entries WHERE user_id = %s AND date = %s", (noted[1], first))
            pgc.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 7)", (noted[1], first))
        reader.catch_up(conn, timeout_s=120)
    assert seen.unchanged >= 6, "the updates did not leave the notes out"
    expected = decoded_transactions(pgc, check_slot)[txid & XID_MASK]
    assert_logged_whole(pgc, txid, expected)
    assert_rows_are_the_table(pgc, noted + filler)
    kept = pgc.execute("SELECT user_id, value->>'note' FROM shape_log WHERE txid = %s AND user_id = ANY(%s)"
                       " AND operation = 'update'", (txid, noted)).fetchall()
    assert sorted(kept) == sorted([(u, notes[u]) for u in noted] + [(u, notes[u]) for u in noted[:2]])


# -- 7. erasures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "spilled"])
def test_an_erasure_in_a_big_transaction_purges_the_earlier_changes_of_its_days_and_a_rolled_back_one_nothing(
    big_db: BigDb, pgc: Conn, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    erased_user, kept_user = big_db.users[90], big_db.users[91]
    first = dt.date(2038 if streaming else 2039, 1, 1)
    filler = big_db.users[40:70]
    seen = Seen(monkeypatch)
    with reader_on(big_db, streaming=streaming, batch_changes=500, spill_changes=500) as (reader, conn):
        insert_days(pgc, [erased_user, kept_user], first, range(10))  # logged first
        pgc.execute("UPDATE entries SET steps = 99 WHERE user_id = ANY(%s) AND date >= %s",
                    ([erased_user, kept_user], first))
        reader.catch_up(conn, timeout_s=60)
        with psycopg.connect(big_db.url, autocommit=True) as listener:
            listener.execute(f"LISTEN {ERASED_CHANNEL}")
            with pgc.transaction():
                insert_days(pgc, filler, first, range(100))  # 3,000: big enough to stream or spill
                with pgc.transaction(force_rollback=True):  # an erasure of the other user, rolled back
                    insert_days(pgc, filler, first, range(200, 230))  # streamed (or spilled) before the rollback
                    erase(pgc, kept_user, "kept", first, None, 1)
                erase(pgc, erased_user, "erased", first, first + dt.timedelta(days=4), 2)
                erasure_txid = txid_of(pgc)
            reader.catch_up(conn, timeout_s=120)
            notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    if streaming:
        assert any(isinstance(m, pgoutput.StreamAbort) and m.xid != m.subxid for m in seen.messages)
    # (Postgres 15 streamed the savepoint's rows but not its erasure: once a savepoint wrote to other
    # tables, nothing more of it was streamed before the rollback. The next test stages one directly.)
    erasure_lsn = logged(pgc, erasure_txid)[0].lsn
    left = pgc.execute("SELECT user_id, date, operation, lsn = %s FROM shape_log WHERE user_id = ANY(%s)"
                       " AND date >= %s ORDER BY user_id, date, lsn, op",
                       (erasure_lsn, [erased_user, kept_user], first)).fetchall()
    erased_days = {first + dt.timedelta(days=d) for d in range(5)}
    assert [(d, op, own) for u, d, op, own in left if u == erased_user and d in erased_days] == [
        (d, "delete", True) for d in sorted(erased_days)]
    assert [(d, op) for u, d, op, _ in left if u == erased_user and d not in erased_days] == [
        (first + dt.timedelta(days=d), op) for d in range(5, 10) for op in ("insert", "update")]
    assert [(d, op) for u, d, op, _ in left if u == kept_user] == [
        (first + dt.timedelta(days=d), op) for d in range(10) for op in ("insert", "update")]
    assert notes == [{"user_id": erased_user, "from": first.isoformat(),
                      "to": (first + dt.timedelta(days=4)).isoformat(), "lsn": erasure_lsn}]
    assert_rows_are_the_table(pgc, [erased_user, kept_user, *filler])


def test_an_erasure_record_staged_in_a_subtransaction_that_aborts_purges_nothing(big_db: BigDb, pgc: Conn) -> None:
    """What Postgres may send: an erasure record streamed, then its subtransaction's Stream Abort."""
    gone_user, kept_user, day = big_db.users[95], big_db.users[96], dt.date(2045, 1, 1)
    insert_days(pgc, [gone_user, kept_user], day, range(3))
    with reader_on(big_db) as (reader, conn):  # logged, and the staging table made
        erasures = pgoutput.Relation(1, "public", "erasures", tuple(
            pgoutput.Column(name, 25, name == "id") for name in ("id", "user_id", "date_from", "date_to")))

        def record(user: int, subxid: int) -> pgoutput.Change:
            row: dict[str, str | None] = {"id": "1", "user_id": str(user), "date_from": None, "date_to": None}
            return pgoutput.Change(erasures, "insert", row, None, frozenset(), subxid)

        reader.staging.add(conn, 900, [record(kept_user, 901), record(gone_user, 900)], lambda _: {})
        reader.staging.abort(conn, 900, 901)
        head = one(pgc, "SELECT max(lsn) FROM shape_log") + 1
        with conn.transaction():
            assert reader.staging.promote(conn, 900, head, 900) == 0
    left = pgc.execute("SELECT user_id, count(*) FROM shape_log WHERE user_id = ANY(%s) AND date >= %s"
                       " GROUP BY user_id ORDER BY user_id", ([gone_user, kept_user], day)).fetchall()
    assert left == [(kept_user, 3)]


# -- 8. a real server killed --------------------------------------------------------------------------


class BigWriter(threading.Thread):
    """Commits `count` transactions of 800 to 1,000 changes (3 blocks of 400 inserts, one of them in a
    savepoint rolled back; updates of what it inserted), one after another; records their txids."""

    def __init__(self, url: str, users: list[int], first: dt.date, count: int, seed: int) -> None:
        super().__init__(name="big-writer", daemon=True)
        self.url, self.users, self.first, self.count, self.seed = url, users, first, count, seed
        self.txids: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            rng = random.Random(self.seed)
            with psycopg.connect(self.url, autocommit=True) as conn:
                for i in range(self.count):
                    base, dropped = i * 40, rng.randrange(3)
                    with conn.transaction():
                        self.txids.append(txid_of(conn))
                        for block in range(3):
                            days = range(base + block * 10, base + block * 10 + 10)
                            if block == dropped:
                                with conn.transaction(force_rollback=True):
                                    insert_days(conn, self.users, self.first, days)
                            else:
                                insert_days(conn, self.users, self.first, days)
                        conn.execute("UPDATE entries SET steps = steps + 1 WHERE user_id = ANY(%s)"
                                     " AND date BETWEEN %s::date + %s AND %s::date + %s",
                                     (self.users, self.first, base, self.first, base + 4))
                    time.sleep(rng.uniform(0.2, 1.0))
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_sigkilling_the_server_while_big_transactions_stream_loses_and_repeats_nothing(
    big_db: BigDb, pgc: Conn, check_slot: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    users, first = big_db.users[40:80], dt.date(2040, 1, 1)
    name = big_db.url.rsplit("/", 1)[1]
    env = {"PULSE_DATABASE_URL": f"{big_db.url}?{LOW_WORK_MEM}", "PULSE_REPLICATION_READER": "true",
           "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}
    servers: list[ServerProcess] = []

    def start() -> None:
        servers.append(ServerProcess(tmp_path / f"server-{len(servers) + 1}.log", env))
        servers[-1].wait_ready()
        wait_for(lambda: bool(one(pgc, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s"
                                       " AND active", (slot_name(name),))), 60, "the reader to stream its slot")

    writer = BigWriter(big_db.url, users, first, 12, seed)
    try:
        start()
        writer.start()
        kills = 0
        while writer.is_alive() or kills < 3:
            time.sleep(rng.uniform(0.5, 2.5))
            servers[-1].proc.kill()
            servers[-1].proc.wait(timeout=10)
            kills += 1
            start()
        writer.join()
        assert writer.error is None, writer.error
        target = lsn_int(one(pgc, "SELECT pg_current_wal_flush_lsn()::text"))
        wait_for(lambda: lsn_int(one(pgc, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                                          " WHERE slot_name = %s", (slot_name(name),))) >= target,
                 120, "the reader to confirm every transaction")
    finally:
        for server in servers:
            server.stop()
    assert streamed(pgc, slot_name(name)) > 0
    decoded = decoded_transactions(pgc, check_slot)
    lsns = [assert_logged_whole(pgc, txid, decoded[txid & XID_MASK]) for txid in writer.txids]
    assert lsns == sorted(lsns)
    assert sum(len(decoded[t & XID_MASK]) for t in writer.txids) == one(
        pgc, "SELECT count(*) FROM shape_log WHERE user_id = ANY(%s) AND date >= %s", (users, first))
    assert_rows_are_the_table(pgc, users)
    print(f"seed {seed}: {kills} kills, {len(writer.txids)} transactions")
