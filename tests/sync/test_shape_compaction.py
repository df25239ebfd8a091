"""Shape log compaction keeps every client's view exact (docs/shapes.md, "Compaction").

A database of its own, a server with the reader, and a writer of inserts, updates and deletes over a
few rows of two users. Clients are placed at many offsets of the log as it was (their rows are the
state the uncompacted log gives at that offset), then compaction runs in small batches while the
writer keeps writing and the clients keep reading; before, during and after it, each client that follows
the log to up-to-date holds exactly what Postgres holds. Then a zero window trims the log: clients
below the new horizon get 409 and a handle they never held, the others carry on.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from shape_follower import Follower, table_values
from sync_support import PulseServer, wait_for
from throwaway_db import migrated_database

from pulse_server import maintenance
from pulse_server.accounts import add_user, issue_token
from pulse_server.db.database import Database
from pulse_server.settings import Settings
from pulse_server.shapes.protocol import key

Offset = tuple[int, int]
DAYS = 8


@dataclass
class Setup:
    url: str
    server: PulseServer
    users: dict[int, str]  # user id -> token
    pg: psycopg.Connection[Any]


@pytest.fixture
def setup(start_server: Callable[..., PulseServer]) -> Iterator[Setup]:
    with migrated_database("pulse_sync_compact") as url:
        database = Database(Settings(database_url=url, pool_size=1))
        users = {}
        try:
            with database.session() as session:
                for name in ("kim", "lee"):
                    user = add_user(session, name, "correct horse battery", False)
                    assert user.id is not None
                    users[user.id] = issue_token(session, user, 1)[0]
        finally:
            database.dispose()
        server = start_server(database_url=url, maintenance_interval_s="0")
        with psycopg.connect(url, autocommit=True) as pg:
            yield Setup(url, server, users, pg)
        server.stop()


class Writer:
    """Random inserts, updates (most) and deletes by hand over DAYS rows per user, a few per transaction."""

    def __init__(self, url: str, users: list[int], seed: int) -> None:
        self.url, self.users, self.rng = url, users, random.Random(seed)

    def write(self, transactions: int) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for _ in range(transactions):
                with conn.transaction():
                    keys = self.rng.sample([(u, d) for u in self.users for d in range(1, DAYS + 1)], 3)
                    for user, d in keys:
                        self._change(conn, user, f"2026-08-{d:02d}")

    def _change(self, conn: psycopg.Connection[Any], user: int, day: str) -> None:
        if self.rng.random() < 0.08:
            conn.execute("DELETE FROM entries WHERE user_id = %s AND date = %s", (user, day))
            return
        conn.execute("INSERT INTO entries (user_id, date, steps, note) VALUES (%s, %s, %s, %s)"
                     " ON CONFLICT (user_id, date) DO UPDATE SET steps = excluded.steps, note = excluded.note",
                     (user, day, self.rng.randint(0, 20_000), self.rng.choice([None, "a", "b, 'c'"])))


def logged(pg: psycopg.Connection[Any]) -> list[tuple[Offset, int, str, str, dict[str, Any]]]:
    """The whole log: (offset, user, date, operation, value)."""
    return [((int(lsn), int(op)), int(user), d.isoformat(), operation, value) for lsn, op, user, d, operation, value
            in pg.execute("SELECT lsn, op, user_id, date, operation, value FROM shape_log ORDER BY lsn, op")]


def state_at(log: list[tuple[Offset, int, str, str, dict[str, Any]]], user: int, at: Offset) -> dict[str, Any]:
    """A client's rows after every change up to `at` (the log was built from an empty table)."""
    rows: dict[str, Any] = {}
    for offset, owner, day, operation, value in log:
        if offset > at:
            break
        if owner != user:
            continue
        if operation == "delete":
            rows.pop(key(owner, day), None)
        else:
            rows[key(owner, day)] = dict(value)
    return rows


def wait_logged(setup: Setup) -> None:
    target = setup.pg.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
    assert target is not None
    wait_for(lambda: setup.pg.execute("SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots"
                                      " WHERE database = current_database()", (target[0],)).fetchone() == (True,),
             30, "the reader to log every change")


def clients_at(setup: Setup, offsets: list[Offset]) -> list[tuple[int, Follower]]:
    """A client of each user at each offset, holding the state the log gives there."""
    log = logged(setup.pg)
    placed = []
    for user, token in setup.users.items():
        handle = Follower(setup.server.url, token).follow().handle
        for at in offsets:
            client = Follower(setup.server.url, token, handle=handle, offset=f"{at[0]}_{at[1]}",
                              rows=state_at(log, user, at))
            client.handles.add(str(handle))
            placed.append((user, client))
    return placed


def follow_all(setup: Setup, clients: list[tuple[int, Follower]]) -> None:
    for user, client in clients:
        client.follow()
        assert client.values() == table_values(setup.pg, user), (client.offset, client.handle)


def run_maintenance(setup: Setup, **retention: Any) -> maintenance.Report:
    defaults: dict[str, Any] = {"result_days": 365, "conflict_days": 365, "shape_log_days": 365,
                                "tail_changes": 60, "batch": 5}
    return maintenance.run(setup.url, maintenance.Retention(**{**defaults, **retention}))


def test_a_client_at_any_offset_before_during_and_after_compaction_reads_exactly_what_postgres_holds(
    setup: Setup,
) -> None:
    seed = random.randrange(1 << 30)
    writer = Writer(setup.url, list(setup.users), seed)
    writer.write(250)
    wait_logged(setup)
    log = logged(setup.pg)
    offsets = [(0, 0)] + [entry[0] for entry in log[::23]] + [log[-1][0]]
    before = clients_at(setup, offsets)
    follow_all(setup, before[::2])  # before compaction, half of them

    during = clients_at(setup, offsets[1::2])
    was = {entry[0] for entry in logged(setup.pg)}
    compaction = threading.Thread(target=lambda: reports.append(run_maintenance(setup)))
    reports: list[maintenance.Report] = []
    compaction.start()
    while compaction.is_alive():  # the reader appends and clients read while the batches run
        writer.write(2)
        for _, client in during:
            client.step()
    compaction.join()
    (report,) = reports
    assert report.log_folded > 100 and report.log_trimmed == 0, report
    wait_logged(setup)
    follow_all(setup, before[1::2] + during)  # the rest: they started before, and read during

    # The live tail (the newest 60 changes when it started, and what came after) is whole; below it, no
    # update is followed by another update or delete of its row.
    remaining = {entry[0] for entry in logged(setup.pg)}
    tail = {o for o in was if o > report.compacted_through}
    assert tail <= remaining and len({o for o in remaining if o > report.compacted_through}) >= 60
    # (A change written while compaction ran may follow an update compaction had already passed: it could
    # not fold what came after it. Only a later change that was there when it started counts.)
    unfolded = [row for row in setup.pg.execute(
        "SELECT lsn, op, next_lsn, next_op FROM (SELECT lsn, op, operation,"
        " lead(operation) OVER w AS next, lead(lsn) OVER w AS next_lsn, lead(op) OVER w AS next_op"
        " FROM shape_log WINDOW w AS (PARTITION BY user_id, date ORDER BY lsn, op)) c"
        " WHERE operation = 'update' AND next IN ('update', 'delete') AND (lsn, op) <= (%s, %s)",
        report.compacted_through).fetchall() if (row[2], row[3]) in was]
    assert unfolded == []
    follow_all(setup, clients_at(setup, offsets))  # and clients placed after it, at the same offsets

    # A zero window: the log is trimmed up to its tail. Clients below the horizon refetch (a new
    # handle, never one they held); a client at or past it carries on.
    writer.write(30)
    wait_logged(setup)
    head = logged(setup.pg)[-1][0]
    ahead = clients_at(setup, [head])
    behind = clients_at(setup, offsets[1:3])
    trimmed = run_maintenance(setup, shape_log_days=0)
    assert trimmed.log_trimmed > 0 and trimmed.horizon > offsets[2], trimmed
    assert setup.pg.execute("SELECT count(*) FROM shape_log WHERE (lsn, op) <= (%s, %s)", trimmed.horizon
                            ).fetchone() == (0,)
    for _, client in behind:
        held = set(client.handles)
        assert client.step().status_code == 409
        assert client.handle not in held
    for _, client in ahead:
        response = client.step()
        assert response.status_code == 200
    writer.write(10)
    wait_logged(setup)
    follow_all(setup, behind + ahead)
    print(f"seed {seed}: {len(log)} changes, {report.log_folded} folded, then {trimmed.log_trimmed} trimmed")
