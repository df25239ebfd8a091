"""A failover to a real streaming standby while devices keep pushing and pulling.

Two private clusters: a primary and a standby made with pg_basebackup, streaming and synchronous (a
commit is acknowledged once the standby has it, so nothing a device saw acknowledged can be lost).
The server is given both through one multi-host URL with `target_session_attrs=read-write`. The primary
is killed (immediate stop: a crashed host) and the standby promoted; the server finds it by itself (its
pool and its reader reconnect through the same URL), the reader sees the new timeline and a missing slot,
rebuilds the shape log, and every device refetches. At the end the devices, the server and Postgres
agree, and every mutation is recorded exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from private_postgres import PrivateCluster, available
from sync_support import (
    Device,
    PulseServer,
    User,
    applied_mutations,
    day,
    server_entries,
    server_stamps,
    wait_for,
    wait_replicated,
)

from pulse_server.accounts import add_user, find_user, issue_token
from pulse_server.db.database import Database
from pulse_server.db.migrate import migrate
from pulse_server.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not available(), reason="needs PostgreSQL 15's initdb")]

FIRST, LAST = day(-40), day(0)


@pytest.fixture
def clusters() -> Iterator[tuple[PrivateCluster, PrivateCluster]]:
    primary = PrivateCluster()
    standby: PrivateCluster | None = None
    try:
        primary.start()
        url = primary.create_database("pulse")
        migrate(url)
        standby = PrivateCluster(from_primary=primary)
        standby.start()
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name ="
                                          " 'standby1' AND state = 'streaming'").fetchone() == (1,), 30,
                     "the standby to stream")
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
            conn.execute("SELECT pg_reload_conf()")
            wait_for(lambda: conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone() == ("sync",), 30,
                     "synchronous replication")
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def user_and_token(url: str) -> tuple[User, str]:
    database = Database(Settings(database_url=url, pool_size=1))
    try:
        with database.session() as session:
            row = add_user(session, "ana", "correct horse battery", False)
            assert row.id is not None
            user = User(row.id, row.username)
        with database.session() as session:
            found = find_user(session, "ana")
            assert found is not None
            token, _ = issue_token(session, found, 1)
    finally:
        database.dispose()
    return user, token


def test_devices_keep_syncing_through_a_failover_to_a_promoted_standby_and_everything_lands_once(
    clusters: tuple[PrivateCluster, PrivateCluster], start_server: Callable[..., PulseServer],
    make_device: Callable[..., Device],
) -> None:
    primary, standby = clusters
    both = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/pulse"
            "?target_session_attrs=read-write&connect_timeout=3")
    user, token = user_and_token(primary.url("pulse"))
    server = start_server(database_url=both, breaker_reset_s="1")
    a, b = make_device("A", server.url), make_device("B", server.url)
    try:
        for device in (a, b):
            assert device.login(user).returncode == 0
        a.log(day(-30), steps=1000)
        b.log(day(-29), steps=2000)
        a.synced()
        b.synced()

        outcomes: list[tuple[str, int, str]] = []
        stop = threading.Event()

        def keep_syncing(device: Device, first_day: int) -> None:
            offset = first_day
            while not stop.is_set() and offset < -2:
                device.log(day(offset), note=f"{device.name} {offset}")
                done = device.sync()
                outcomes.append((device.name, done.returncode, done.stderr))
                offset += 2

        workers = [threading.Thread(target=keep_syncing, args=(d, n)) for d, n in ((a, -28), (b, -27))]
        for worker in workers:
            worker.start()
        time.sleep(2.0)
        primary.kill()
        failed_at = time.monotonic()
        standby.promote()
        # The server finds the new primary by itself, and a reader follows it again (after rebuilding).
        wait_for(lambda: _ready(server), 60, "the server to follow the promoted standby", every_s=0.2)
        back_in = time.monotonic() - failed_at
        time.sleep(2.0)  # devices keep pushing to the new primary
        stop.set()
        for worker in workers:
            worker.join(timeout=180)
        assert outcomes, "the devices synced during the failover"
        assert {rc for _, rc, _ in outcomes} <= {0, 3}, outcomes
        assert any(name == "A" and rc == 0 for name, rc, _ in outcomes)

        with psycopg.connect(standby.url("pulse"), autocommit=True) as pg:
            assert pg.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            check_everything_landed_once(server, token, user, pg, a, b)
            state = pg.execute("SELECT rebuild_reason FROM shape_state").fetchone()
            assert state is not None and "timeline" in str(state[0]), state
        print(f"ready again {back_in:.1f} s after the primary died; {len(outcomes)} syncs during the test")
    finally:
        server.stop()


def _ready(server: PulseServer) -> bool:
    import httpx

    try:
        return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def check_everything_landed_once(server: PulseServer, token: str, user: User, pg: psycopg.Connection[Any],
                                 a: Device, b: Device) -> None:
    for device in (a, b, a, b):
        device.end_breaker_cooldown()
        wait_replicated(pg, user.id)
        device.synced()
    wait_replicated(pg, user.id)
    made = sorted((d.client_id, row["seq"]) for d in (a, b) for row in d.outbox())
    assert [(cid, seq) for cid, seq, _ in applied_mutations(pg, user.id)] == made
    on_server = server_entries(server.url, token, FIRST, LAST)
    for device in (a, b):
        assert set(device.outbox_counts()) <= {"applied", "conflict"}, device.outbox_counts()
        assert device.history(FIRST, LAST) == on_server, device
        assert device.stamps() == server_stamps(pg, user.id), device
    notes = {e["note"] for e in on_server if e["note"]}
    logged = {row["fields"]["note"] for d in (a, b) for row in d.outbox() if "note" in row["fields"]}
    assert notes == logged
