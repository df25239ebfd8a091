"""Postgres restarted under a running server while devices keep syncing.

The cluster is a private one (private_postgres.py): the shared one (PGHOST:PGPORT) is never touched.
While the database is down the server answers 503 with Retry-After, `pulse sync` exits 3 and keeps everything
queued; once it is back every edit lands exactly once and the shape stream carries on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
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
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


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


def ready(server: PulseServer) -> int:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_devices_ride_out_a_postgres_restart_and_every_edit_lands_once(
    cluster: PrivateCluster, start_server: Callable[..., PulseServer], make_device: Callable[..., Device],
) -> None:
    url = cluster.create_database("pulse")
    migrate(url)
    server = start_server(database_url=url, breaker_reset_s="1")
    user, token = user_and_token(url)
    a, b = make_device("A", server.url), make_device("B", server.url)
    for device in (a, b):
        assert device.login(user).returncode == 0
    try:
        a.log(day(-30), steps=1000)
        b.log(day(-29), steps=2000)
        a.synced()
        b.synced()

        # Devices keep logging and syncing while the cluster restarts under the server.
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
        time.sleep(1.0)
        cluster.restart()
        time.sleep(2.0)
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
        assert outcomes, "the devices synced during the restart"
        assert {rc for _, rc, _ in outcomes} <= {0, 3}, outcomes
        assert all("offline:" in err for _, rc, err in outcomes if rc == 3), outcomes

        # Down for a while: the server says 503 with Retry-After, devices exit 3 and keep their edits.
        cluster.stop()
        response = httpx.get(f"{server.url}/v1/entries", headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after")
        assert response.json()["error"]["code"] == "unavailable"
        assert ready(server) == 503
        a.log(day(-1), sleep_hours=6.5)
        b.log(day(-1), steps=777)
        for device in (a, b):
            device.end_breaker_cooldown()
            down = device.sync()
            assert down.returncode == 3, down.stderr
            pending = device.outbox_counts()["pending"]
            assert f"offline: {pending} change{'' if pending == 1 else 's'} queued" in down.stderr

        cluster.start()
        wait_for(lambda: ready(server) == 200, 30, "the server to find Postgres again", every_s=0.2)
        with psycopg.connect(url, autocommit=True) as pg:
            check_everything_landed_once(server, token, user, pg, a, b)
    finally:
        server.stop()  # before the cluster goes away with the fixture


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
    assert [(e["sleep_hours"], e["steps"]) for e in on_server if e["date"] == day(-1)] == [(6.5, 777)]
