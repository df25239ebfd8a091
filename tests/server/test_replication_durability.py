"""Durability of the replication reader (WAL -> shape log) under crashes, and its leadership.

Every test here runs against its own throwaway database (`pulse_repl_<random>`, dropped at the end
with its replication slots): the checks count every change in the shape log, and a reader started
by another module's server on the shared test database would compete for leadership.

1. A writer streams 10,000 changes into `entries` (small transactions of inserts, updates and
   deletes over several users and dates, never the same row twice in one transaction) while the
   server running the reader is SIGKILLed at 20+ random points and restarted. Afterwards the shape
   log is compared with two independent records, the writer's own and a second logical slot
   decoded with `test_decoding`: every committed change is there exactly once, at one offset, in
   transaction order; `shape_rows` equals `entries`; and a client following the log over HTTP
   sees every change of its user once, at strictly increasing offsets.
   The window the random kills rarely hit (the shape log committed, the slot not yet told) is
   also made to happen deterministically, with the reader in this process: the replay lands at the
   same offsets and changes nothing.
2. Two servers with the reader on: exactly one holds the advisory lock; SIGKILL it and the other
   takes over within seconds, and changes keep flowing (including those written in the gap).
3. `/metrics` exposes `pulse_replication_lag_bytes`, and it counts WAL the reader has not consumed;
   an idle reader confirms WAL that holds no synced change; each commit reaches the reader at once.
4. `shape_rows` (what snapshots are served from) equals `entries` value for value (Postgres text
   form) after an update leaving a TOASTed column unchanged, for rows that existed before the first
   reader ran, and after the reader's slot had to be created again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import random
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from replication_support import (
    Change,
    decoded_transactions,
    entries_as_text,
    one,
    shape_rows_values,
    wait_for,
)
from server_support import ServerProcess
from throwaway_db import ADMIN_URL, drop_database, url_of

from pulse_server.accounts import add_user, issue_token
from pulse_server.db.database import Database
from pulse_server.db.migrate import migrate
from pulse_server.replication.reader import LEADER_LOCK, ReplicationReader, lsn_int, slot_name
from pulse_server.settings import Settings

READER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning",
              "PULSE_LOGIN_FREE_FAILURES": "100000", "PULSE_LOGIN_ADDRESS_FREE_FAILURES": "100000"}
MIN_KILLS = 20
# The writer is paced at 10,000 changes in 30 s and stopped after the last kill, so that every kill happens
# while it writes, however long the servers take to restart (on a busy machine 20 restarts took longer
# than 30 s, and a writer that had finished left the later kills nothing to interrupt). 60,000 is a cap.
WRITER_CHANGES, WRITER_SECONDS = 60_000, 180.0
USERS = 6
DAYS = 120
FIRST_DAY = dt.date(2025, 1, 1)
# Whether the shape log holds a transaction the slot has not confirmed (a reader starting now replays it).
REPLAY_PENDING = ("SELECT coalesce((SELECT max(lsn) FROM shape_log) >= (SELECT confirmed_flush_lsn - '0/0'::pg_lsn"
                  " FROM pg_replication_slots WHERE slot_name = %s), false)")


# -- the database and the servers ---------------------------------------------------------------------


@dataclass
class ReplDb:
    url: str
    name: str
    user_ids: list[int]
    tokens: dict[int, str]


@pytest.fixture(scope="module")
def repl_db() -> Iterator[ReplDb]:
    name = f"pulse_repl_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = url_of(name)
    try:
        migrate(url)
        database = Database(Settings(database_url=url, pool_size=1))
        user_ids, tokens = [], {}
        try:
            with database.session() as session:
                for i in range(USERS):
                    user = add_user(session, f"durable-{i}", "correct horse battery", False)
                    assert user.id is not None
                    user_ids.append(user.id)
                    tokens[user.id] = issue_token(session, user, 1)[0]
        finally:
            database.dispose()
        yield ReplDb(url, name, user_ids, tokens)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                          " WHERE database = %s AND active_pid IS NOT NULL", (name,))
            for _ in range(50):  # a terminated backend releases its slot as it exits
                busy = admin.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s"
                                     " AND active_pid IS NOT NULL", (name,)).fetchone()
                if busy is None or busy[0] == 0:
                    break
                time.sleep(0.1)
            admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                          " WHERE database = %s", (name,))
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pgc(repl_db: ReplDb) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(repl_db.url, autocommit=True, application_name="pulse-tests") as conn:
        yield conn


@pytest.fixture
def start(repl_db: ReplDb, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`start(**PULSE_settings)`: a `pulse-server serve` on this module's database, reader on by default.

    With the reader on, it returns once the reader's slot exists (the first reader creates it, and
    only changes after that reach the log). Every server is stopped at the end of the test (killed
    ones are only reaped); the last lines of each log are printed then, so that pytest shows them
    when the test fails."""
    servers: list[ServerProcess] = []

    def run(**settings: str) -> ServerProcess:
        env = {**READER_ENV, "PULSE_DATABASE_URL": repl_db.url}
        env.update({f"PULSE_{k.upper()}": v for k, v in settings.items()})
        server = ServerProcess(tmp_path / f"server-{len(servers) + 1}.log", env)
        servers.append(server)
        server.wait_ready()
        if env["PULSE_REPLICATION_READER"] == "true":
            with psycopg.connect(repl_db.url, autocommit=True) as conn:
                wait_for(lambda: reader_slot_exists(conn, repl_db.name), 60, "the reader to create its slot")
        return server

    yield run
    for server in servers:
        server.stop()
    for server in servers[-3:]:
        tail = "\n".join(server.log_path.read_text(errors="replace").splitlines()[-20:])
        if tail:
            print(f"--- {server.log_path.name} (pid {server.proc.pid}):\n{tail}")


def sigkill(server: ServerProcess) -> None:
    server.proc.kill()
    server.proc.wait(timeout=10)


def just_after_a_commit(writer: Writer, limit_s: float = 2.0) -> None:
    """Returns as soon as the writer has committed its next transaction (within `limit_s`)."""
    committed, deadline = writer.changes, time.monotonic() + limit_s
    while writer.changes == committed and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)


def reader_slot_exists(conn: psycopg.Connection[tuple[Any, ...]], database: str) -> bool:
    """The reader's slot exists and is consistent (its creation has returned: later commits are decoded)."""
    return bool(one(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s"
                          " AND confirmed_flush_lsn IS NOT NULL", (slot_name(database),)))


# -- the writer ---------------------------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes `total` changes to `entries` in transactions of 1-20 changes, paced over `seconds`.

    Records, per transaction id (`pg_current_xact_id()`, the form shape_log.txid holds), the changes
    it made in order. Never touches one row twice in a transaction, so within a transaction every
    (user, date) has exactly one change."""

    def __init__(self, url: str, user_ids: list[int], total: int, seconds: float, seed: int) -> None:
        super().__init__(name="entries-writer", daemon=True)
        self.url, self.user_ids, self.total, self.seconds, self.seed = url, user_ids, total, seconds, seed
        self.transactions: dict[int, list[Change]] = {}
        self.changes = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported by the test, not by the thread machinery
            self.error = exc

    def _write(self) -> None:
        rng = random.Random(self.seed)
        keys = [(u, FIRST_DAY + dt.timedelta(days=d)) for u in self.user_ids for d in range(DAYS)]
        present: set[tuple[int, dt.date]] = set()
        started = time.monotonic()
        with psycopg.connect(self.url, application_name="pulse-tests-writer") as conn:
            while self.changes < self.total and not self.stop.is_set():
                size = min(rng.randint(1, 20), self.total - self.changes)
                done: list[Change] = []
                with conn.transaction():
                    txid = int(one(conn, "SELECT pg_current_xact_id()::text::bigint"))
                    for user_id, day in rng.sample(keys, size):
                        done.append(self._change(conn, rng, user_id, day, (user_id, day) in present))
                        if done[-1][0] == "delete":
                            present.discard((user_id, day))
                        else:
                            present.add((user_id, day))
                self.transactions[txid] = done
                self.changes += len(done)
                ahead = started + self.seconds * self.changes / self.total - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    @staticmethod
    def _change(conn: psycopg.Connection[Any], rng: random.Random, user_id: int, day: dt.date, exists: bool) -> Change:
        sleep = f"{rng.randint(300, 1000) / 100:.2f}"
        if not exists:
            conn.execute(
                "INSERT INTO entries (user_id, date, sleep_hours, steps, note, sleep_hours_hlc)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (user_id, day, sleep, rng.randint(0, 30_000), rng.choice([None, "", "ok", "tired, 'quoted'"]),
                 f"{time.time_ns():x}:0:writer"))
            return ("insert", user_id, day.isoformat())
        if rng.random() < 0.7:
            conn.execute(
                "UPDATE entries SET steps = %s, hrv_ms = %s, hrv_method = %s, note = %s, updated_at = now()"
                " WHERE user_id = %s AND date = %s",
                (rng.randint(0, 30_000), rng.choice([None, "42.50"]), rng.choice([None, "rmssd"]),
                 rng.choice([None, "edited", "ünïcode ✓"]), user_id, day))
            return ("update", user_id, day.isoformat())
        conn.execute("DELETE FROM entries WHERE user_id = %s AND date = %s", (user_id, day))
        return ("delete", user_id, day.isoformat())


# -- what the log, the check slot and the table hold --------------------------------------------------


def shape_log_transactions(conn: psycopg.Connection[Any]) -> tuple[dict[int, list[Change]], dict[int, set[int]],
                                                                     dict[int, list[int]]]:
    """Per txid: the changes in op order, the commit LSNs they sit at, and their op indexes."""
    changes: dict[int, list[Change]] = defaultdict(list)
    lsns: dict[int, set[int]] = defaultdict(set)
    ops: dict[int, list[int]] = defaultdict(list)
    for lsn, op, txid, user_id, date, operation in conn.execute(
            "SELECT lsn, op, txid, user_id, date, operation FROM shape_log ORDER BY lsn, op"):
        changes[txid].append((operation, user_id, date.isoformat()))
        lsns[txid].add(lsn)
        ops[txid].append(op)
    return dict(changes), dict(lsns), dict(ops)


def follow_over_http(base_url: str, token: str) -> list[tuple[tuple[int, int], Change]]:
    """Every change of this user's shape log, from the beginning, as a client following offsets gets them."""
    headers = {"Authorization": f"Bearer {token}"}
    got: list[tuple[tuple[int, int], Change]] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        first = http.get("/v1/shape", params={"table": "entries", "offset": "-1"})
        assert first.status_code == 200, first.text
        handle, offset = first.headers["electric-handle"], "0_0"  # the whole log, not just the snapshot
        while True:
            reply = http.get("/v1/shape", params={"table": "entries", "offset": offset, "handle": handle})
            assert reply.status_code == 200, reply.text
            for message in reply.json():
                h = message["headers"]
                if "operation" in h:
                    value = message.get("value", {})
                    got.append(((int(h["lsn"]), int(h["op_position"])),
                                (h["operation"], int(value["user_id"]), value["date"])))
            offset = reply.headers["electric-offset"]
            if "electric-up-to-date" in reply.headers:
                return got


# -- 1. crashes --------------------------------------------------------------------------------------


def test_sigkilling_the_reader_at_random_points_loses_no_change_and_serves_none_twice(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # Not `pulse_check_*`: .ci/postgres drops inactive slots of that name (and this one is inactive
    # until it is read at the end).
    check_slot = f"{repl_db.name}_check"
    server = start()
    one(pgc, "SELECT lsn FROM pg_create_logical_replication_slot(%s, 'test_decoding')", (check_slot,))
    try:
        writer = Writer(repl_db.url, repl_db.user_ids, WRITER_CHANGES, WRITER_SECONDS, seed)
        writer.start()
        kills: list[tuple[float, int]] = []  # (seconds after ready, changes not yet in the log)
        replays = 0  # kills that left the log committed beyond the slot (the next reader replays it)
        writing = []  # whether the writer was still writing at each kill
        try:
            while len(kills) < MIN_KILLS:
                # Half the kills come soon after start (while it catches up on what was written
                # during the restart), half later, when it mostly follows the writer live; every
                # other kill comes just after a commit, before the reader could log it.
                after = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else rng.uniform(0.3, 1.5)
                time.sleep(after)
                if len(kills) % 2:
                    just_after_a_commit(writer)
                sigkill(server)
                writing.append(writer.is_alive())
                behind = writer.changes - int(one(pgc, "SELECT count(*) FROM shape_log"))
                kills.append((after, behind))
                replays += bool(one(pgc, REPLAY_PENDING, (slot_name(repl_db.name),)))
                server = start()
        finally:
            writer.stop.set()
            writer.join(timeout=60)
        assert writer.error is None, f"the writer failed: {writer.error!r}"
        assert all(writing) and writer.changes >= 1_000, (writing, writer.changes)
        assert len(kills) >= MIN_KILLS
        assert sum(1 for _, behind in kills if behind > 0) >= MIN_KILLS // 4, kills  # killed with work pending

        wait_for(lambda: one(pgc, "SELECT count(DISTINCT txid) FROM shape_log") >= len(writer.transactions),
                 60, "the reader to catch up")
        time.sleep(0.5)  # anything the reader would (wrongly) still add

        logged, lsns, ops = shape_log_transactions(pgc)
        decoded = decoded_transactions(pgc, check_slot)

        # (a) nothing missing, nothing extra, in transaction order: against the writer's own record ...
        assert set(logged) == set(writer.transactions), (
            f"missing transactions: {sorted(set(writer.transactions) - set(logged))[:10]},"
            f" unexpected: {sorted(set(logged) - set(writer.transactions))[:10]} (seed {seed})")
        for txid, changes in writer.transactions.items():
            assert logged[txid] == changes, f"transaction {txid} (seed {seed})"
        # ... and against what Postgres decoded for an independent slot.
        assert {xid & 0xFFFFFFFF: c for xid, c in logged.items()} == decoded
        # (b) one offset per change: each transaction at one commit LSN with ops 0..n-1, as many log
        # rows as changes, and no (user, date) at two ops of one transaction.
        assert all(len(at) == 1 for at in lsns.values()), {t: at for t, at in lsns.items() if len(at) != 1}
        assert all(o == list(range(len(o))) for o in ops.values())
        assert one(pgc, "SELECT count(*) FROM shape_log") == writer.changes
        assert pgc.execute("SELECT user_id, date, lsn FROM shape_log GROUP BY 1, 2, 3 HAVING count(*) > 1"
                           ).fetchall() == []
        head = pgc.execute("SELECT head_lsn, head_op FROM shape_state").fetchone()
        assert head == pgc.execute("SELECT lsn, op FROM shape_log ORDER BY lsn DESC, op DESC LIMIT 1").fetchone()
        # (c) the rows snapshots are served from are exactly the table.
        table, rows = entries_as_text(pgc), shape_rows_values(pgc)
        assert set(rows) == set(table)
        mismatched = [k for k in table if rows[k] != table[k]]
        assert mismatched == [], f"{len(mismatched)} rows differ, e.g. {rows[mismatched[0]]} vs {table[mismatched[0]]}"

        # And a client following one user's log over HTTP gets each of its changes once, in order.
        user = repl_db.user_ids[0]
        served = follow_over_http(server.url, repl_db.tokens[user])
        offsets = [o for o, _ in served]
        assert offsets == sorted(set(offsets))
        expected = [c for t in sorted(logged, key=lambda t: min(lsns[t])) for c in logged[t] if c[1] == user]
        assert [c for _, c in served] == expected
        # The last reader still follows new commits (not only the backlog it found at start).
        probe = dt.date(2039, 1, 1)
        write_days(pgc, user, probe, 1)
        wait_for(lambda: logged_days(pgc, user, probe, 1) == 1, 10, "a new commit after the catch-up")
        print(f"seed {seed}: {len(kills)} kills, {len(writer.transactions)} transactions,"
              f" kills with changes pending: {sum(1 for _, b in kills if b > 0)},"
              f" kills between the log's commit and its acknowledgement: {replays}")
    finally:
        pgc.execute("SELECT pg_drop_replication_slot(%s)", (check_slot,))


class Crash(Exception):
    pass


def test_a_crash_between_the_shape_log_commit_and_the_acknowledgement_replays_the_batch_to_the_same_offsets(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window the random kills may or may not hit, made to happen: the reader in this process."""
    url, user = repl_db.url, repl_db.user_ids[5]
    # No server runs now, but the walsender of an earlier one may still hold the slot for a moment.
    wait_for(lambda: not one(pgc, "SELECT count(*) FROM pg_replication_slots WHERE database = %s"
                                  " AND active_pid IS NOT NULL", (repl_db.name,)), 30, "the slot to be released")
    with psycopg.connect(url, autocommit=True, application_name="pulse-replication") as conn:
        reader = ReplicationReader(url)
        reader.ensure_slot(conn)
        reader.catch_up(conn)  # whatever earlier tests left pending
        day = dt.date(2043, 1, 1)
        write_days(pgc, user, day, 20)
        write_days(pgc, user, day + dt.timedelta(days=20), 20)
        with pgc.transaction():
            pgc.execute("UPDATE entries SET steps = -steps WHERE user_id = %s AND date BETWEEN %s AND %s",
                        (user, day, day + dt.timedelta(days=9)))
            pgc.execute("DELETE FROM entries WHERE user_id = %s AND date BETWEEN %s AND %s",
                        (user, day + dt.timedelta(days=30), day + dt.timedelta(days=39)))
        assert reader.stream is not None
        target = lsn_int(one(pgc, "SELECT pg_current_wal_flush_lsn()::text"))

        def crash_before_acknowledging(lsn: int, reply_requested: bool = False) -> None:
            """Status updates are lost until one would cover all three: then the process dies. Whatever
            the stream's rounds, the shape log has committed them all and the slot confirms none."""
            if lsn >= target:
                raise Crash

        monkeypatch.setattr(reader.stream, "acknowledge", crash_before_acknowledging)
        with pytest.raises(Crash):
            reader.catch_up(conn)
        monkeypatch.undo()
        reader.close()  # as the process's death would
    assert one(pgc, REPLAY_PENDING, (slot_name(repl_db.name),))
    log_before = pgc.execute("SELECT * FROM shape_log ORDER BY lsn, op").fetchall()
    rows_before = shape_rows_values(pgc)
    head_before = pgc.execute("SELECT head_lsn, head_op FROM shape_state").fetchone()

    with psycopg.connect(url, autocommit=True, application_name="pulse-replication") as conn:
        again = ReplicationReader(url)  # a new process: a new decoder
        again.ensure_slot(conn)
        replayed = again.catch_up(conn)
        assert replayed.transactions == 3 and replayed.changes == 20 + 20 + 10 + 10
        again.close()
        again.ensure_slot(conn)
        assert not again.catch_up(conn).transactions  # and this time the slot moved on
        again.close()
    assert not one(pgc, REPLAY_PENDING, (slot_name(repl_db.name),))
    assert pgc.execute("SELECT * FROM shape_log ORDER BY lsn, op").fetchall() == log_before
    assert shape_rows_values(pgc) == rows_before
    assert pgc.execute("SELECT head_lsn, head_op FROM shape_state").fetchone() == head_before
    assert logged_days(pgc, user, day, 40) == 20 + 20 + 10 + 10


def test_a_round_that_fails_to_log_its_transactions_leaves_them_to_the_next_stream(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transactions a failed round took off the stream are not skipped by the caller's next try:
    the stream is closed and the next one starts again from the slot's confirmed position."""
    url, user = repl_db.url, repl_db.user_ids[-1]
    wait_for(lambda: not one(pgc, "SELECT count(*) FROM pg_replication_slots WHERE database = %s"
                                  " AND active_pid IS NOT NULL", (repl_db.name,)), 30, "the slot to be released")
    with psycopg.connect(url, autocommit=True, application_name="pulse-replication") as conn:
        reader = ReplicationReader(url)
        reader.ensure_slot(conn)
        reader.catch_up(conn)
        day = dt.date(2045, 1, 1)
        write_days(pgc, user, day, 5)
        real_record = reader.record

        def record_fails(*args: Any) -> Any:
            raise psycopg.OperationalError("the shape log's connection went away")

        monkeypatch.setattr(reader, "record", record_fails)
        with pytest.raises(psycopg.OperationalError):
            reader.catch_up(conn)
        assert reader.stream is None
        monkeypatch.setattr(reader, "record", real_record)
        assert reader.catch_up(conn).changes == 5
        reader.close()
    assert logged_days(pgc, user, day, 5) == 5


# -- 2. leadership -----------------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
    return inodes


def _inodes_of_local_port(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    return inodes


def lock_holders(conn: psycopg.Connection[Any]) -> list[tuple[int, int, str]]:
    """(backend pid, client port, application name) of every holder of the reader's advisory lock."""
    return [(int(p), int(port), str(app)) for p, port, app in conn.execute(
        "SELECT l.pid, a.client_port, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFFFFFF))]


def leader_of(conn: psycopg.Connection[Any], servers: list[ServerProcess]) -> ServerProcess | None:
    holders = lock_holders(conn)
    if len(holders) != 1:
        return None
    inodes = _inodes_of_local_port(holders[0][1])
    owners = [s for s in servers if s.proc.poll() is None and inodes & _socket_inodes(s.proc.pid)]
    return owners[0] if len(owners) == 1 else None


def write_days(conn: psycopg.Connection[Any], user_id: int, first: dt.date, count: int) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO entries (user_id, date, steps) SELECT %s, %s::date + i, i"
                     " FROM generate_series(0, %s - 1) i", (user_id, first, count))


def logged_days(conn: psycopg.Connection[Any], user_id: int, first: dt.date, count: int) -> int:
    return int(one(conn, "SELECT count(*) FROM shape_log WHERE user_id = %s AND date BETWEEN %s AND %s",
                   (user_id, first, first + dt.timedelta(days=count - 1))))


def test_one_of_two_readers_leads_and_the_other_takes_over_within_seconds_when_it_is_killed(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    servers = [start(), start()]
    user = repl_db.user_ids[1]
    wait_for(lambda: leader_of(pgc, servers) is not None, 10, "a leader")
    wait_for(lambda: one(pgc, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND application_name = 'pulse-replication'") == 2, 10, "both readers to connect")
    for _ in range(10):  # exactly one holder, and it stays the same one
        assert len(lock_holders(pgc)) == 1
        time.sleep(0.1)
    leader = leader_of(pgc, servers)
    assert leader is not None
    follower = servers[1] if leader is servers[0] else servers[0]

    before = dt.date(2030, 1, 1)
    write_days(pgc, user, before, 50)
    wait_for(lambda: logged_days(pgc, user, before, 50) == 50, 10, "changes through the first leader")

    sigkill(leader)
    killed_at = time.monotonic()
    gap = dt.date(2031, 1, 1)
    write_days(pgc, user, gap, 50)  # written while nobody leads
    wait_for(lambda: leader_of(pgc, [follower]) is follower, 10, "the other server to take the lock")
    takeover_s = time.monotonic() - killed_at
    wait_for(lambda: logged_days(pgc, user, gap, 50) == 50, 10, "the changes written in the gap")
    after = dt.date(2032, 1, 1)
    write_days(pgc, user, after, 50)
    flow_s = wait_for(lambda: logged_days(pgc, user, after, 50) == 50, 10, "changes through the new leader")
    assert takeover_s < 5.0
    assert len(lock_holders(pgc)) == 1
    assert pgc.execute("SELECT lsn, op FROM shape_log GROUP BY 1, 2 HAVING count(*) > 1").fetchall() == []
    print(f"takeover {takeover_s:.2f} s after SIGKILL; a change reached the log {flow_s * 1000:.0f} ms after commit")


# -- 3. lag in /metrics ------------------------------------------------------------------------------


def lag_metric(server: ServerProcess) -> float:
    reply = httpx.get(f"{server.url}/metrics", timeout=10)
    assert reply.status_code == 200
    for line in reply.text.splitlines():
        if line.startswith("pulse_replication_lag_bytes "):
            return float(line.split()[1])
    raise AssertionError("no pulse_replication_lag_bytes gauge in /metrics")


def slot_lag(conn: psycopg.Connection[Any], database: str) -> int:
    return int(one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                         " FROM pg_replication_slots WHERE slot_name = %s", (slot_name(database),)))


def test_replication_lag_in_bytes_is_a_gauge_in_metrics_and_grows_while_no_reader_runs(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    reader = start()
    assert lag_metric(reader) >= 0
    sigkill(reader)
    plain = start(replication_reader="false")
    wal_before = one(pgc, "SELECT pg_current_wal_lsn()")
    write_days(pgc, repl_db.user_ids[2], dt.date(2040, 1, 1), 2000)
    written = int(one(pgc, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (wal_before,)))
    behind = lag_metric(plain)
    assert behind >= written, (behind, written)
    start()  # a reader again consumes the backlog
    wait_for(lambda: logged_days(pgc, repl_db.user_ids[2], dt.date(2040, 1, 1), 2000) == 2000, 20, "catch-up")
    print(f"lag gauge: {behind:.0f} bytes behind (written {written}), {lag_metric(plain):.0f} after catch-up")


def test_an_idle_caught_up_reader_confirms_wal_that_holds_no_entries_changes(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    """Else Postgres keeps that WAL for the slot, every idle round decodes it again, and the lag
    gauge never falls back when the reader has caught up."""
    reader = start()
    day = dt.date(2041, 1, 1)
    write_days(pgc, repl_db.user_ids[3], day, 10)
    wait_for(lambda: logged_days(pgc, repl_db.user_ids[3], day, 10) == 10, 10, "the reader to catch up")
    # 4 MB of WAL that no shape cares about (a table outside the publication): the walsender's keepalive
    # after it, with no transaction half read, is acknowledged.
    pgc.execute("CREATE TABLE IF NOT EXISTS not_synced (id serial PRIMARY KEY, payload text)")
    pgc.execute("INSERT INTO not_synced (payload) SELECT md5(i::text) FROM generate_series(1, 40000) i")
    written = one(pgc, "SELECT pg_current_wal_flush_lsn()")
    confirmed = "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots WHERE slot_name = %s"
    wait_for(lambda: bool(one(pgc, confirmed, (written, slot_name(repl_db.name)))), 12,
             "the slot to confirm the unrelated WAL")
    gauge = lag_metric(reader)
    assert gauge <= one(pgc, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (written,)), gauge


def test_an_idle_reader_is_woken_by_each_commit_not_by_its_idle_round(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    """Commits one at a time with pauses between them: each reaches the log well within the reader's
    idle round (set to 5 s here: how long a read of the stream waits before it looks at `stop` again),
    so the walsender's message woke the reader; a reader that only polled on its idle round fails here
    (half its waits would be over 2.5 s), while a woken one takes tens of milliseconds."""
    start(replication_idle_wait_s="5")
    user, day = repl_db.user_ids[4], dt.date(2044, 1, 1)
    took = []
    for i in range(6):
        pgc.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, %s)",
                    (user, day + dt.timedelta(days=i), i))
        took.append(wait_for(functools.partial(lambda n: logged_days(pgc, user, day, n) == n, i + 1), 10,
                             f"commit {i} in the log", every_s=0.01))
        time.sleep(0.6)
    assert max(took) < 2.5, took


# -- 4. what snapshots are served from -----------------------------------------------------------


def test_an_update_that_leaves_a_large_note_unchanged_keeps_it_in_shape_rows(
    repl_db: ReplDb, pgc: psycopg.Connection[Any], start: Callable[..., ServerProcess]
) -> None:
    """pgoutput sends an unchanged TOASTed column as 'u' (no value): the stored row must keep it."""
    start()
    user, day = repl_db.user_ids[4], dt.date(2042, 1, 1)
    note = secrets.token_urlsafe(6000)  # incompressible enough to be stored out of line (TOAST)
    pgc.execute("INSERT INTO entries (user_id, date, note) VALUES (%s, %s, %s)", (user, day, note))
    pgc.execute("UPDATE entries SET steps = 1234 WHERE user_id = %s AND date = %s", (user, day))
    wait_for(lambda: logged_days(pgc, user, day, 1) == 2, 10, "both changes in the log")
    stored = one(pgc, "SELECT value FROM shape_rows WHERE user_id = %s AND date = %s", (user, day))
    assert stored.get("steps") == "1234"
    assert stored.get("note") == note
    assert stored == entries_as_text(pgc)[(user, day.isoformat())]


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """(url, name) of a new migrated database with one user and no slot; dropped with its slots."""
    name = f"pulse_repl_{secrets.token_hex(5)}"
    url = url_of(name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO users (username, password_hash) VALUES ('early', 'x')")
        yield url, name
    finally:
        drop_database(name)


def start_on(url: str, name: str, log: Path) -> ServerProcess:
    server = ServerProcess(log, {**READER_ENV, "PULSE_DATABASE_URL": url})
    server.wait_ready()
    with psycopg.connect(url, autocommit=True) as conn:
        wait_for(lambda: reader_slot_exists(conn, name), 60, "the reader's slot")
    return server


def assert_shape_rows_are_the_table(conn: psycopg.Connection[Any], user: int, probe: dt.date) -> None:
    """After one more change has gone through the reader, shape_rows equals entries, value for value."""
    conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 9)", (user, probe))
    wait_for(lambda: logged_days(conn, user, probe, 1) == 1, 10, "a change through the reader")
    table, rows = entries_as_text(conn), shape_rows_values(conn)
    assert sorted(rows) == sorted(table)
    assert {k: v for k, v in rows.items() if v != table[k]} == {}


def test_entries_written_before_the_first_reader_ran_are_in_the_snapshot_rows_in_text_form(tmp_path: Path) -> None:
    with fresh_database() as (url, name), psycopg.connect(url, autocommit=True) as conn:
        user = int(one(conn, "SELECT id FROM users"))
        conn.execute("INSERT INTO entries (user_id, date, steps, sleep_hours, note) VALUES"
                     " (%s, '2026-01-01', 1, 7.5, 'before'), (%s, '2026-01-02', 2, NULL, NULL)", (user, user))
        server = start_on(url, name, tmp_path / "server.log")
        try:
            assert_shape_rows_are_the_table(conn, user, dt.date(2026, 1, 3))
        finally:
            server.stop()


def test_a_recreated_slot_brings_the_snapshot_rows_back_to_the_table(tmp_path: Path) -> None:
    with fresh_database() as (url, name), psycopg.connect(url, autocommit=True) as conn:
        user = int(one(conn, "SELECT id FROM users"))
        server = start_on(url, name, tmp_path / "server-1.log")
        try:
            conn.execute("INSERT INTO entries (user_id, date, steps) SELECT %s, '2026-01-01'::date + i, i"
                         " FROM generate_series(0, 2) i", (user,))
            wait_for(lambda: logged_days(conn, user, dt.date(2026, 1, 1), 3) == 3, 10, "the first rows")
        finally:
            server.stop()
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_name(name),))
        conn.execute("UPDATE entries SET steps = 100 WHERE user_id = %s AND date = '2026-01-01'", (user,))
        conn.execute("DELETE FROM entries WHERE user_id = %s AND date = '2026-01-02'", (user,))
        server = start_on(url, name, tmp_path / "server-2.log")
        try:
            assert_shape_rows_are_the_table(conn, user, dt.date(2026, 2, 1))
        finally:
            server.stop()
