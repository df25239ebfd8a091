"""One store, one client id; and a server restored from a backup refilled by the devices.

- A store restored from a copy, or a home copied whole, pushes under an id whose seqs the server already
  holds for other changes. The server answers `clash`; the device takes a new id, pushes its pending
  changes again under it, and nothing is lost or applied twice.
- The server's database restored from a dump taken before the devices' last pushes: each device finds
  its acknowledged changes past the server's high-water mark and pushes them again.

Real `pulse` processes against a real `pulse-server` and Postgres.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sync_support import (
    PULSE_SERVER,
    Device,
    PulseServer,
    User,
    applied_mutations,
    clean_env,
    day,
    server_entries,
    wait_for,
    wait_replicated,
)
from throwaway_db import ADMIN_URL, drop_database, migrated_database

from pulse_server.accounts import add_user

pytestmark = pytest.mark.e2e

FIRST, LAST = day(-30), day(0)


def copy_store(source: Path, target: Path) -> None:
    """The store as a backup tool copies it: the database file and its WAL, taken between commands."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("pulse.db", "pulse.db-wal", "pulse.db-shm"):
        (target / name).unlink(missing_ok=True)
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def days_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["date"]: (e["steps"], e["note"]) for e in entries}


def test_a_store_restored_from_a_copy_loses_nothing_and_applies_nothing_twice(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    a, other = make_device("A"), make_device("other")
    for device in (a, other):
        assert device.login(user).returncode == 0
    a.log(day(-3), steps=3000)
    a.synced()
    copy_store(a.home, tmp_path / "backup")
    old_id = a.client_id
    a.log(day(-2), steps=2000)
    a.synced()

    copy_store(tmp_path / "backup", a.home)  # the backup comes back: it never saw day -2's push
    a.log(day(-1), steps=1000, note="after the restore")
    done = a.synced()
    assert "it now syncs as" in done.stdout, done.stdout
    assert a.client_id != old_id
    assert a.outbox_counts() == {"applied": 2}  # the restored store never held day -2's change

    wait_replicated(pg, user.id)
    expected = {day(-3): (3000, None), day(-2): (2000, None), day(-1): (1000, "after the restore")}
    assert days_of(server_entries(server.url, token_for(user), FIRST, LAST)) == expected
    other.synced()
    a.synced()
    for device in (a, other):
        assert days_of(device.history(FIRST, LAST)) == expected, device
    # Exactly once: three edits, three records; the restored one under the new id.
    recorded = applied_mutations(pg, user.id)
    assert sorted(cid == old_id for cid, _, _ in recorded) == [False, True, True]
    assert {status for _, _, status in recorded} == {"applied"}


def test_two_copies_of_one_home_both_keep_every_edit(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    b, reader = make_device("B"), make_device("reader")
    for device in (b, reader):
        assert device.login(user).returncode == 0
    b.log(day(-6), steps=600)
    b.synced()
    b2 = make_device("B2")
    shutil.copytree(b.home, b2.home)  # `cp -r devB devB2`: credentials, store, client id and all

    b.log(day(-5), note="from B")
    b.synced()
    b2.log(day(-4), note="from B2")
    done = b2.synced()
    assert "it now syncs as" in done.stdout, done.stdout
    assert b2.client_id != b.client_id
    # Both go on editing; each copy keeps its own id from now on.
    b.log(day(-3), note="B again")
    b2.log(day(-2), note="B2 again")
    b2.synced()
    b.synced()
    wait_replicated(pg, user.id)
    expected = {day(-6): (600, None), day(-5): (None, "from B"), day(-4): (None, "from B2"),
                day(-3): (None, "B again"), day(-2): (None, "B2 again")}
    assert days_of(server_entries(server.url, token_for(user), FIRST, LAST)) == expected
    for device in (b, b2, reader):
        device.synced()
        assert days_of(device.history(FIRST, LAST)) == expected, device
        assert set(device.outbox_counts()) <= {"applied"}, device.outbox_counts()
    made = {(r["client_id"] or device.client_id, r["client_seq"] or r["seq"]) for device in (b, b2)
            for r in device.outbox()}
    recorded = applied_mutations(pg, user.id)
    assert len(recorded) == 5 == len({(cid, seq) for cid, seq, _ in recorded})
    assert {(cid, seq) for cid, seq, _ in recorded} <= made


def test_a_copy_that_pushes_after_the_originals_results_were_pruned_keeps_every_edit(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any], database_url: str,
) -> None:
    # The copy's seqs were pushed by the original long ago and their results pruned since: with nothing
    # left to compare, the server answered the copy's new edits `duplicate`, and it took them for applied.
    user = make_user()
    c = make_device("C")
    assert c.login(user).returncode == 0
    c.log(day(-9), steps=900)
    c.synced()
    c2 = make_device("C2")
    shutil.copytree(c.home, c2.home)
    c.log(day(-8), note="from C")
    c.log(day(-7), note="C again")
    c.synced()
    # Forty days on, the server's maintenance prunes those results (their seqs kept as a mark).
    pg.execute("UPDATE applied_mutations SET applied_at = now() - interval '40 days' WHERE user_id = %s", (user.id,))
    pruned = subprocess.run([str(PULSE_SERVER), "maintain", "--json"], capture_output=True, text=True, timeout=120,
                            env=clean_env(PULSE_DATABASE_URL=database_url))
    assert pruned.returncode == 0, pruned.stderr
    assert pg.execute("SELECT seq FROM client_high_water WHERE user_id = %s", (user.id,)).fetchall() == [(3,)]

    c2.log(day(-6), note="from C2")  # seq 2 on the copy
    c2.log(day(-5), note="C2 again")  # seq 3
    done = c2.synced()
    assert "it now syncs as" in done.stdout, done.stdout
    assert c2.client_id != c.client_id and set(c2.outbox_counts()) <= {"applied"}
    wait_replicated(pg, user.id)
    expected = {day(-9): (900, None), day(-8): (None, "from C"), day(-7): (None, "C again"),
                day(-6): (None, "from C2"), day(-5): (None, "C2 again")}
    assert days_of(server_entries(server.url, token_for(user), FIRST, LAST)) == expected


# -- a server restored from a dump --------------------------------------------------------------------
@pytest.fixture
def own_database() -> Iterator[str]:
    with migrated_database("pulse_repl") as url:
        yield url


def _pg(tool: str, *args: str) -> None:
    done = subprocess.run([tool, "-h", "127.0.0.1", "-U", "postgres", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_server_restored_from_an_earlier_dump_gets_back_every_change_the_devices_had(
    own_database: str, start_server: Callable[..., PulseServer], tmp_path: Path,
) -> None:
    name = own_database.rsplit("/", 1)[1]
    with psycopg.connect(own_database, autocommit=True) as conn:
        from pulse_server.db.database import Database
        from pulse_server.settings import Settings

        database = Database(Settings(database_url=own_database, pool_size=1))
        with database.session() as session:
            row = add_user(session, "ana", "correct horse battery", False)
        database.dispose()
        assert row.id is not None
        user = User(row.id, "ana")
        server = start_server(database_url=own_database)
        a, b = Device("A", tmp_path / "A", server.url), Device("B", tmp_path / "B", server.url)
        for device in (a, b):
            assert device.login(user).returncode == 0
        a.log(day(-9), steps=900)
        b.log(day(-8), steps=800)
        a.synced()
        b.synced()
        dump = tmp_path / "backup.dump"
        _pg("pg_dump", "-Fc", "-f", str(dump), name)

        # After the backup: both devices push more, and the server acknowledges it all.
        a.log(day(-7), steps=700)
        a.log(day(-6), note="A after the backup")
        b.log(day(-5), steps=500)
        b.log(day(-9), note="B on A's day")
        a.synced()
        b.synced()
        acknowledged = len(applied_mutations(conn, user.id))
        assert acknowledged == 6

    # The database is lost and restored from the dump: an hour of writes gone.
    server.stop()
    drop_database(name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    _pg("pg_restore", "-d", name, str(dump))
    server.restart()
    # The reader finds its slot gone and rebuilds the shape log (docs/shapes.md): until it follows the
    # new slot the shape answers 503, which a sync would report as offline.
    wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200, 60, "the server to be ready")

    with psycopg.connect(own_database, autocommit=True) as conn:
        assert len(applied_mutations(conn, user.id)) == 2
        for device in (a, b):
            done = device.synced()
            assert "pushed again" in done.stdout, done.stdout
        wait_replicated(conn, user.id)
        for device in (a, b):
            device.synced()
        token = server_token(server, user)
        expected = {day(-9): (900, "B on A's day"), day(-8): (800, None), day(-7): (700, None),
                    day(-6): (None, "A after the backup"), day(-5): (500, None)}
        assert days_of(server_entries(server.url, token, FIRST, LAST)) == expected
        for device in (a, b):
            assert days_of(device.history(FIRST, LAST)) == expected, device
            assert set(device.outbox_counts()) == {"applied"}, device.outbox_counts()
        # Each change once: the two the dump kept, and the four pushed again.
        recorded = applied_mutations(conn, user.id)
        assert len(recorded) == 6 == len({(cid, seq) for cid, seq, _ in recorded})


def server_token(server: PulseServer, user: User) -> str:
    response = httpx.post(f"{server.url}/v1/auth/token", json={"username": user.username, "password": user.password},
                          timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
