"""`PULSE_REPLICATION_READER_PROCESS`: `serve` runs the replication reader in a process of its own
(pulse_server/replication/process.py): the shape log follows the writes, the server is ready, a reader
process that dies is started again, and stopping the server stops it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from replication_support import one, wait_for
from server_support import Api, ServerProcess, started_server
from throwaway_db import migrated_database

ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_REPLICATION_READER_PROCESS": "true", "PULSE_SHAPE_WATCHER": "true",
       "PULSE_LOG_LEVEL": "warning"}


def children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`, with their command lines."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append((int(entry), command))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def reader_pids(server: ServerProcess) -> list[int]:
    return [pid for pid, command in children(server.proc.pid) if "spawn_main" in command]


def reader_backends(conn: psycopg.Connection[tuple[int]]) -> int:
    return int(one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND application_name = 'pulse-replication'"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ServerProcess]]:
    with migrated_database("pulse_test_reader_process") as url:
        server = started_server(lambda attempt: tmp_path / f"server-{attempt}.log",
                                {"PULSE_DATABASE_URL": url, **ENV})
        try:
            yield url, server
        finally:
            server.stop()


def test_the_reader_runs_in_its_own_process_follows_writes_comes_back_and_stops_with_the_server(
    served: tuple[str, ServerProcess],
) -> None:
    url, server = served
    with psycopg.connect(url, autocommit=True) as conn:
        wait_for(lambda: len(reader_pids(server)) == 1, 30, "one reader process beside the server")
        first = reader_pids(server)[0]
        with Api(server.url) as api:
            wait_for(lambda: api.get("/readyz").status_code == 200, 30, "readiness (the slot followed)")
            metrics = api.get("/metrics").text
            # The serving process runs no reader: its own reader's state is "off". The reader process's
            # state is in the same answer, under its own pid (the processes share their metrics).
            assert f'pulse_replication_reader_state{{pid="{server.proc.pid}",state="off"}} 1.0' in metrics, metrics
            following = f'pulse_replication_reader_state{{pid="{first}",state="following"}} 1.0'
            wait_for(lambda: following in api.get("/metrics").text, 30, "the reader process's state in /metrics")
        user = one(conn, "INSERT INTO users (username, password_hash, is_coach) VALUES ('p', 'x', false) RETURNING id")
        conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 42)", (user,))
        wait_for(lambda: one(conn, "SELECT count(*) FROM shape_log WHERE user_id = %s", (user,)) == 1, 30,
                 "the write in the shape log")

        os.kill(first, signal.SIGKILL)  # a reader process that fails is started again
        wait_for(lambda: reader_pids(server) not in ([], [first]), 30, "a new reader process")
        conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-28', 43)", (user,))
        wait_for(lambda: one(conn, "SELECT count(*) FROM shape_log WHERE user_id = %s", (user,)) == 2, 30,
                 "the next write in the shape log, from the new reader")

        pids = reader_pids(server)
        server.stop()
        assert server.proc.returncode is not None
        wait_for(lambda: not any(alive(pid) for pid in pids), 15, "the reader process gone")
        wait_for(lambda: reader_backends(conn) == 0, 15, "the reader's connections closed")
