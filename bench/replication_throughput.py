"""Throughput of the replication reader (WAL -> shape log), in changes per second. Target: >= 5,000/s.

Run from the repo root (PostgreSQL with wal_level=logical at PGHOST:PGPORT, default 127.0.0.1:5432,
user postgres):

    .venv/bin/python bench/replication_throughput.py                     # 50,000 changes, 500 per transaction
    .venv/bin/python bench/replication_throughput.py --changes 100000 --batch 100
    .venv/bin/python bench/replication_throughput.py --no-watcher   # the reader alone in its process

It creates `pulse_bench_<random>`, migrates it, adds 100 users, starts `pulse-server serve` with the
replication reader and the shape watcher on (PULSE_LOG_LEVEL=warning) and measures two scenarios:

  live     a writer (this process, plain SQL) writes N changes to `entries` in transactions of
           --batch rows while the reader runs: 40% inserts, 40% updates, 20% deletes, one kind per
           transaction (multi-row statements). The figure is N divided by the time from the first
           write to the moment `shape_state.head_lsn` reaches the last transaction's commit (its
           last row is a marker the writer looks for in the shape log).
  backlog  the server is stopped, the writer writes N more changes with no reader running, and a
           new server starts: N divided by the time from the reader taking the leader lock
           (pg_locks, polled every 10 ms) to the head reaching the last commit: the reader alone.

Printed per scenario: changes, the writer's time, the reader's catch-up after the last commit, and
changes/s. At the end the server is stopped, the database's replication slots are dropped and the
database is dropped WITH (FORCE), even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from _server import Server, replication_database, running_server, wait_for_slot

TARGET = 5000
USERS = 100
READER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}
LEADER_LOCK = 7041978  # pulse_server.replication.reader.LEADER_LOCK


# -- the database ------------------------------------------------------------------------------------




# -- the writer ---------------------------------------------------------------------------------------


@dataclass
class Written:
    changes: int
    seconds: float
    started: float  # time.monotonic() of the first write
    marker: tuple[int, dt.date]  # the last row of the last transaction


class Writer:
    """Writes changes to `entries` with plain SQL, one kind of change per transaction."""

    def __init__(self, conn: Any, user_ids: list[int], seed: int) -> None:
        self.conn = conn
        self.user_ids = user_ids
        self.rng = random.Random(seed)
        self.present: list[tuple[int, dt.date]] = []
        self.inserted = 0  # every insert takes a new (user, day): user by turn, a new day each round

    def write(self, total: int, batch: int) -> Written:
        done = 0
        kinds = ["insert", "insert", "update", "update", "delete"]
        started = time.monotonic()
        marker: tuple[int, dt.date] | None = None
        while done < total:
            size = min(batch, total - done)
            kind = kinds[(done // batch) % len(kinds)]
            if kind != "insert" and len(self.present) < size:
                kind = "insert"
            last = done + size >= total
            with self.conn.transaction():
                if kind == "insert":
                    done += self._insert(size)
                elif kind == "update":
                    done += self._update(size - 1 if last else size)
                else:
                    done += self._delete(size - 1 if last else size)
                if last:  # the marker: the last change of the last transaction
                    if kind != "insert":
                        done += self._insert(1)
                    marker = self.present[-1]
        assert marker is not None
        return Written(done, time.monotonic() - started, started, marker)

    def _insert(self, size: int) -> int:
        keys = []
        for _ in range(size):
            turn, user = divmod(self.inserted, len(self.user_ids))
            key = (self.user_ids[user], dt.date(2000, 1, 1) + dt.timedelta(days=turn))
            keys.append(key)
            self.present.append(key)
            self.inserted += 1
        cur = self.conn.execute(
            "INSERT INTO entries (user_id, date, sleep_hours, sleep_hours_hlc, sleep_hours_src, steps, steps_hlc,"
            " steps_src, note) SELECT u, d, round((5 + random() * 4)::numeric, 2), '0001790000000000:00000:bench',"
            " 'bench', (random() * 20000)::int, '0001790000000000:00000:bench', 'bench', 'a short note'"
            " FROM unnest(%s::bigint[], %s::date[]) AS k(u, d)",
            ([k[0] for k in keys], [k[1] for k in keys]))
        return int(cur.rowcount)

    def _pick(self, size: int) -> list[tuple[int, dt.date]]:
        picked = set(self.rng.sample(range(len(self.present)), size))
        chosen = [self.present[i] for i in sorted(picked)]
        return chosen

    def _update(self, size: int) -> int:
        keys = self._pick(size)
        cur = self.conn.execute(
            "UPDATE entries e SET steps = e.steps + 1, steps_hlc = '0001790000000001:00000:bench', updated_at = now()"
            " FROM unnest(%s::bigint[], %s::date[]) AS k(u, d) WHERE e.user_id = k.u AND e.date = k.d",
            ([k[0] for k in keys], [k[1] for k in keys]))
        return int(cur.rowcount)

    def _delete(self, size: int) -> int:
        keys = self._pick(size)
        gone = set(keys)
        self.present = [k for k in self.present if k not in gone]
        cur = self.conn.execute(
            "DELETE FROM entries e USING unnest(%s::bigint[], %s::date[]) AS k(u, d)"
            " WHERE e.user_id = k.u AND e.date = k.d",
            ([k[0] for k in keys], [k[1] for k in keys]))
        return int(cur.rowcount)


def wait_for_marker(conn: Any, marker: tuple[int, dt.date], timeout_s: float = 600.0) -> float:
    """Poll (every 10 ms) until the marker row is in the shape log and the head has reached it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT 1 FROM shape_log l, shape_state s WHERE l.user_id = %s AND l.date = %s"
            " AND (s.head_lsn, s.head_op) >= (l.lsn, l.op)", marker).fetchone()
        if row is not None:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"the reader did not reach the last commit within {timeout_s} s")


def wait_for_leader(conn: Any, timeout_s: float = 60.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LEADER_LOCK,)).fetchone()
        if row is not None:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError("no reader took the leader lock")


def report(name: str, changes: int, seconds: float, detail: str) -> float:
    rate = changes / seconds
    print(f"{name:8s} {changes:,} changes in {seconds:.2f} s ({detail}): {rate:,.0f} changes/s;"
          f" target >= {TARGET:,}/s: {'met' if rate >= TARGET else 'NOT met'}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=50_000, help="changes per scenario (default 50,000)")
    parser.add_argument("--batch", type=int, default=500, help="changes per writer transaction (default 500)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-watcher", action="store_true",
                        help="PULSE_SHAPE_WATCHER=false: the reader without the shape watcher in its process")
    args = parser.parse_args()

    import psycopg

    env = {**READER_ENV, **({"PULSE_SHAPE_WATCHER": "false"} if args.no_watcher else {})}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs);"
          f" shape watcher {'off' if args.no_watcher else 'on'}")
    with replication_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO users (username, password_hash) SELECT 'bench-' || i, 'x'"
                         " FROM generate_series(1, %s) i", (USERS,))
            user_ids = [int(r[0]) for r in conn.execute("SELECT id FROM users ORDER BY id")]
        server: Server
        with psycopg.connect(url) as wconn, psycopg.connect(url, autocommit=True) as poll:
            writer = Writer(wconn, user_ids, args.seed)
            with running_server(url, 1, env) as server:
                wait_for_slot(url)
                live = writer.write(args.changes, args.batch)
                reached = wait_for_marker(poll, live.marker)
                report("live", live.changes, reached - live.started,
                       f"writer {live.seconds:.2f} s, {live.changes / live.seconds:,.0f}/s; the head reached"
                       f" its last commit {reached - live.started - live.seconds:.2f} s after it")
                server.stop()
            backlog = writer.write(args.changes, args.batch)
            with running_server(url, 1, env):
                led = wait_for_leader(poll)
                reached = wait_for_marker(poll, backlog.marker)
                report("backlog", backlog.changes, reached - led,
                       f"written beforehand in {backlog.seconds:.2f} s; timed from the reader taking the lock")
                row = poll.execute("SELECT count(*) FROM shape_log").fetchone()
                assert row is not None and row[0] == live.changes + backlog.changes, (row, live, backlog)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
