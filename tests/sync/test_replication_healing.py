"""The replication reader heals itself, and never lets a client be told up-to-date when it cannot know.

1. The slot invalidated (`wal_status = 'lost'`) while the server was stopped: a private cluster with
   `max_slot_wal_keep_size=32MB`, WAL burnt with pg_switch_wal() and a checkpoint. The restarted server
   rebuilds the log; the client's handle gets 409 (never up-to-date) and its refetch is the table.
2. The same with the server running (paused with SIGSTOP while the slot is lost, as a reader that fell
   behind): the time from the slot's loss to a polling client's first 409 is printed.
3. The slot dropped by hand under a running server.
4. The database restored from a dump taken earlier (the dump carries shape_state): the rebuilt log hands
   out a handle no client ever held.
5. While no reader follows the slot, /readyz and up-to-date answers are 503 with the reason.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from private_postgres import BINDIR, PrivateCluster, available
from shape_follower import Follower, table_values
from sync_support import PULSE_SERVER, PulseServer, clean_env, wait_for
from throwaway_db import ADMIN_URL, drop_database, migrated_database, url_of

from pulse_server.accounts import add_user, issue_token
from pulse_server.db.database import Database
from pulse_server.db.migrate import migrate
from pulse_server.replication.reader import slot_name
from pulse_server.settings import Settings

needs_cluster = pytest.mark.skipif(not available(), reason="needs PostgreSQL 15's initdb")
SMALL_SLOT_WAL = "-c max_slot_wal_keep_size=32MB"


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(SMALL_SLOT_WAL)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def athlete(url: str, name: str = "ana") -> tuple[int, str]:
    """A user and a bearer token."""
    database = Database(Settings(database_url=url, pool_size=1))
    try:
        with database.session() as session:
            user = add_user(session, name, "correct horse battery", False)
            assert user.id is not None
            token, _ = issue_token(session, user, 1)
            return user.id, token
    finally:
        database.dispose()


def write(conn: psycopg.Connection[Any], user_id: int, day: str, steps: int) -> None:
    conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, %s)"
                 " ON CONFLICT (user_id, date) DO UPDATE SET steps = excluded.steps", (user_id, day, steps))


def lose_the_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Move the WAL position past max_slot_wal_keep_size (each pg_switch_wal skips to the next 16 MB
    segment) and checkpoint until Postgres has invalidated the slot."""
    conn.execute("CREATE TABLE IF NOT EXISTS wal_burner (id serial PRIMARY KEY)")
    for _ in range(10):
        for _ in range(4):
            conn.execute("INSERT INTO wal_burner DEFAULT VALUES")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is not None and row[0] == "lost":
            return
    raise AssertionError(f"slot {slot} was not invalidated")


def doctor(url: str) -> dict[str, Any]:
    done = subprocess.run([str(PULSE_SERVER), "doctor", "--json"], env=clean_env(PULSE_DATABASE_URL=url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_doctor_warns_of_unbounded_slot_wal_and_fails_without_logical_wal(tmp_path: Path) -> None:
    with migrated_database("pulse_sync_doctor") as url:
        found = doctor(url)  # the shared cluster: max_slot_wal_keep_size is left unlimited
        assert found["max_slot_wal_keep_size"] == "-1"
        assert any("max_slot_wal_keep_size is unlimited" in w for w in found["warnings"])
        assert found["problems"] == []
        migrated = subprocess.run([str(PULSE_SERVER), "migrate"], env=clean_env(PULSE_DATABASE_URL=url),
                                  capture_output=True, text=True, timeout=60)
        assert migrated.returncode == 0 and "warning: max_slot_wal_keep_size is unlimited" in migrated.stderr
    if not available():
        return
    replica = PrivateCluster("-c wal_level=replica")
    try:
        replica.start()
        done = subprocess.run([str(PULSE_SERVER), "doctor"], env=clean_env(PULSE_DATABASE_URL=replica.url()),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "problem: wal_level is replica: the shape API needs logical" in done.stdout
    finally:
        replica.destroy()


def metric(server: PulseServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match is not None, f"{name} not in /metrics"
    return float(match[1])


def readyz(server: PulseServer) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=10)


def follow_to_409(follower: Follower, timeout_s: float = 60.0, unaware: bool = False) -> float:
    """Ask with the held handle until the answer is 409; when it came. Every answer on the way is a 503
    (not following yet). With `unaware`, 200s may come first: a running server learns that its slot was
    lost only when the stream breaks (or its next look at the slot); once it has said 503, no more."""
    deadline = time.monotonic() + timeout_s
    old = follower.handle
    while True:
        response = follower.request()
        if response.status_code == 409:
            assert response.headers["electric-handle"] != old
            return follower.answers[-1].at
        if unaware and response.status_code == 200:
            assert not [a for a in follower.answers[:-1] if a.status != 200], follower.answers
            assert time.monotonic() < deadline, "the server never noticed"
            time.sleep(0.05)
            continue
        assert response.status_code == 503, (response.status_code, response.headers, response.text)
        assert response.headers.get("retry-after")
        assert time.monotonic() < deadline, "no 409 in time"
        time.sleep(0.05)


# -- 1. and 2. the slot invalidated --------------------------------------------------------------------


@needs_cluster
def test_a_slot_lost_while_the_server_was_stopped_is_rebuilt_and_every_client_refetches_what_postgres_holds(
    cluster: PrivateCluster, start_server: Callable[..., PulseServer]
) -> None:
    url = cluster.create_database("pulse")
    migrate(url)
    user_id, token = athlete(url)
    server = start_server(database_url=url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for day in range(1, 6):
                write(conn, user_id, f"2026-01-0{day}", day)
            client = Follower(server.url, token).follow()
            wait_for(lambda: len(client.follow().rows) == 5, 20, "the first rows")
            held = client.handle
            server.stop()

            # Written while nobody reads the slot, then the slot is lost: no stream will bring these.
            write(conn, user_id, "2026-01-02", 200)
            write(conn, user_id, "2026-01-09", 9)
            conn.execute("DELETE FROM entries WHERE user_id = %s AND date = '2026-01-01'", (user_id,))
            # The operator is told first: the slot is inactive and retains WAL.
            found = doctor(url)
            assert found["max_slot_wal_keep_size"] == "32MB" and found["wal_level"] == "logical"
            (slot,) = found["slots"]
            assert (slot["name"], slot["active"], slot["wal_status"]) == (slot_name("pulse"), False, "reserved")
            assert slot["retained_bytes"] > 0
            assert any("inactive" in w and slot_name("pulse") in w for w in found["warnings"]), found
            lose_the_slot(conn, slot_name("pulse"))
            assert doctor(url)["slots"][0]["wal_status"] == "lost"

            server.restart()
            started = time.monotonic()
            at_409 = follow_to_409(client)
            assert not [a for a in client.answers if a.at >= started and a.status == 200 and a.up_to_date]
            client.follow()
            assert client.handle != held
            assert client.values() == table_values(conn, user_id)
            assert {d for _, d in client.values()} == {"2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05",
                                                      "2026-01-09"}
            assert readyz(server).status_code == 200
            assert metric(server, "pulse_replication_rebuilds_total") == 1
            assert "was invalidated" in server.log_text(200)
            # ... and the rebuilt log keeps following.
            write(conn, user_id, "2026-01-10", 10)
            wait_for(lambda: ("2026-01-10" in {d for _, d in client.follow().values()}), 20, "a change after")
            assert client.values() == table_values(conn, user_id)
            print(f"from the restarted server's start to the first 409: {at_409 - started:.2f} s")
    finally:
        server.stop()


@needs_cluster
def test_a_slot_lost_under_a_running_server_turns_every_answer_into_503_then_409_and_a_complete_refetch(
    cluster: PrivateCluster, start_server: Callable[..., PulseServer]
) -> None:
    url = cluster.create_database("pulse")
    migrate(url)
    user_id, token = athlete(url)
    server = start_server(database_url=url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            write(conn, user_id, "2026-02-01", 1)
            client = Follower(server.url, token)
            wait_for(lambda: len(client.follow().rows) == 1, 20, "the first row")
            # The server stops reading (as one that fell far behind would) while the slot is lost.
            server.proc.send_signal(signal.SIGSTOP)
            try:
                write(conn, user_id, "2026-02-02", 2)
                lose_the_slot(conn, slot_name("pulse"))
                lost_at = time.monotonic()
            finally:
                server.proc.send_signal(signal.SIGCONT)
            at_409 = follow_to_409(client, unaware=True)
            client.follow()
            assert client.values() == table_values(conn, user_id)
            assert len(client.values()) == 2
            assert metric(server, "pulse_replication_rebuilds_total") == 1
            print(f"from the slot's loss to a polling client's first 409: {at_409 - lost_at:.2f} s")
    finally:
        server.stop()


# -- 3. the slot dropped by hand -----------------------------------------------------------------------


@pytest.fixture
def fresh_url() -> Iterator[str]:
    with migrated_database("pulse_sync_heal") as url:
        yield url


def drop_slot_under_reader(admin: psycopg.Connection[Any], slot: str) -> None:
    """End the walsender streaming the slot and drop it before the reader reconnects."""
    deadline = time.monotonic() + 20
    while True:
        admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                      " WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
        try:
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        except psycopg.errors.ObjectInUse:
            assert time.monotonic() < deadline, "the slot stayed in use"
            time.sleep(0.01)


def test_a_slot_dropped_by_hand_is_recreated_and_the_log_rebuilt(
    fresh_url: str, start_server: Callable[..., PulseServer]
) -> None:
    user_id, token = athlete(fresh_url)
    server = start_server(database_url=fresh_url)
    database = fresh_url.rsplit("/", 1)[1]
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        write(conn, user_id, "2026-03-01", 1)
        client = Follower(server.url, token)
        wait_for(lambda: len(client.follow().rows) == 1, 20, "the first row")
        held = client.handle
        # A long poll held across the drop is answered 409 (or 503 while the reader heals), never 200.
        waiting = Follower(server.url, token, handle=held, offset=client.offset)
        poll = threading.Thread(target=waiting.request, kwargs={"live": True})
        poll.start()
        time.sleep(0.5)
        drop_slot_under_reader(conn, slot_name(database))
        dropped_at = time.monotonic()
        write(conn, user_id, "2026-03-02", 2)  # between the drop and the new slot: only the copy has it
        poll.join(timeout=30)
        assert [a.status for a in waiting.answers] in ([409], [503]), waiting.answers
        assert waiting.answers[0].at - dropped_at < 10  # woken, not ended by its 20 s hold
        follow_to_409(client, unaware=True)
        client.follow()
        assert client.handle != held
        assert client.values() == table_values(conn, user_id)
        assert len(client.values()) == 2
        wait_for(lambda: readyz(server).status_code == 200, 10, "ready again")
        assert metric(server, "pulse_replication_rebuilds_total") == 1
        assert "is missing" in server.log_text(200)


# -- 4. restored from a dump --------------------------------------------------------------------------


@needs_cluster  # pg_dump and pg_restore of PostgreSQL 15
def test_a_database_restored_from_an_earlier_dump_hands_out_a_handle_no_client_ever_held(
    tmp_path: Path, start_server: Callable[..., PulseServer]
) -> None:
    with migrated_database("pulse_sync_restore") as url:
        database = url.rsplit("/", 1)[1]
        user_id, token = athlete(url)
        server = start_server(database_url=url)
        client = Follower(server.url, token)
        with psycopg.connect(url, autocommit=True) as conn:
            write(conn, user_id, "2026-04-01", 1)
            wait_for(lambda: len(client.follow().rows) == 1, 20, "the first row")
        dump = tmp_path / "pulse.dump"
        subprocess.run([str(BINDIR / "pg_dump"), "-Fc", "-f", str(dump), url], check=True, timeout=120)
        with psycopg.connect(url, autocommit=True) as conn:
            # The log is rebuilt after the dump (a truncate makes the log start over, as a rebuild does),
            # so the dump's generation is counted again after the restore: handles must still differ.
            conn.execute("TRUNCATE entries")
            write(conn, user_id, "2026-04-02", 2)
            wait_for(lambda: {d for _, d in client.follow().values()} == {"2026-04-02"}, 20, "the new row")
        server.stop()
        drop_database(database)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        subprocess.run([str(BINDIR / "pg_restore"), "-d", url_of(database), str(dump)], check=True, timeout=120,
                       capture_output=True)
        server.restart()
        before = set(client.handles)
        follow_to_409(client)
        client.follow()
        assert client.handle not in before
        with psycopg.connect(url, autocommit=True) as conn:
            assert client.values() == table_values(conn, user_id)
            assert {d for _, d in client.values()} == {"2026-04-01"}
        server.stop()


# -- 5. readiness --------------------------------------------------------------------------------------


def test_while_no_reader_follows_the_slot_readyz_and_up_to_date_answers_are_503_with_the_reason(
    fresh_url: str, start_server: Callable[..., PulseServer]
) -> None:
    user_id, token = athlete(fresh_url)
    without = start_server(database_url=fresh_url, replication_reader="false")
    not_ready = readyz(without)
    assert not_ready.status_code == 503
    assert not_ready.headers["retry-after"] == "1"
    assert "replication slot" in not_ready.json()["error"]["message"]
    assert metric(without, "pulse_replication_ready") == 0
    client = Follower(without.url, token)
    snapshot = client.step()
    assert snapshot.status_code == 200  # a snapshot says nothing about being up to date
    caught_up = client.request()
    assert caught_up.status_code == 503 and caught_up.headers["retry-after"]
    assert "not following" in caught_up.json()["message"]
    now = httpx.get(f"{without.url}/v1/shape", params={"table": "entries", "offset": "now"},
                    headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert now.status_code == 503

    start_server(database_url=fresh_url)  # a reader, in another process
    wait_for(lambda: readyz(without).status_code == 200, 20, "the other server to see the reader follow")
    assert metric(without, "pulse_replication_ready") == 1
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        write(conn, user_id, "2026-05-01", 1)
        client.follow()
        wait_for(lambda: len(client.follow().rows) == 1, 20, "the row")
        assert client.values() == table_values(conn, user_id)
