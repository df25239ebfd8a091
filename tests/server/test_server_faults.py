"""Faults: Postgres connections killed mid-stream, and Postgres unreachable behind a proxy.

Either way, every mutation ends up applied exactly once: clients retry what was answered with 503
(honouring Retry-After), replays are duplicates, and the entries are what the pure merge computes.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from server_support import (
    Api,
    ServerProcess,
    User,
    delete_mutation,
    merged,
    now_ms,
    set_mutation,
    stamp,
    stored,
)
from tcp_proxy import TcpProxy
from throwaway_db import PG_HOST, PG_PORT, PG_USER

DAYS = [f"2026-11-{d:02d}" for d in range(10, 18)]


def _history(devices: list[str], per_device: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Each device's mutations in the order it made them: sets of a few fields, now and then a delete."""
    rng = random.Random(seed)
    start = now_ms() - 600_000
    made: dict[str, list[dict[str, Any]]] = {}
    for d, device in enumerate(devices):
        mutations = []
        for seq in range(1, per_device + 1):
            hlc = stamp(start + rng.randrange(0, 500_000), seq * 10 + d, device)
            day = rng.choice(DAYS)
            if rng.random() < 0.1:
                mutations.append(delete_mutation(seq, day, hlc))
                continue
            fields: dict[str, Any] = {}
            for name in rng.sample(["sleep_hours", "steps", "weight_kg", "note", "hrv_ms"], rng.randint(1, 3)):
                fields[name] = {"sleep_hours": rng.randrange(0, 2400) / 100, "steps": rng.randrange(0, 30_000),
                                "weight_kg": rng.randrange(5000, 9000) / 100, "note": f"{device} {seq}",
                                "hrv_ms": rng.randrange(2000, 9000) / 100}[name]
            mutations.append(set_mutation(seq, day, fields, hlc))
        made[device] = mutations
    return made


class Device:
    """A client with an outbox: pushes in batches, retries 503s and dropped connections."""

    def __init__(self, api: Api, client_id: str, mutations: list[dict[str, Any]], batch: int = 5) -> None:
        self.api = api
        self.client_id = client_id
        self.outbox = list(mutations)
        self.batch = batch
        self.unavailable = 0
        self.answers: dict[int, str] = {}
        self.bad: list[str] = []

    def push_once(self) -> bool:
        """One attempt at the head of the outbox; True if the server took it (then it leaves the outbox)."""
        head = self.outbox[: self.batch]
        try:
            response = self.api.push(self.client_id, head)
        except httpx.TransportError:
            return False
        if response.status_code == 503:
            self.unavailable += 1
            assert "retry-after" in response.headers
            time.sleep(min(float(response.headers["retry-after"]), 1.0) * random.uniform(0.2, 0.6))
            return False
        if response.status_code != 200:
            self.bad.append(f"{response.status_code} {response.text}")
            return False
        for result in response.json()["results"]:
            self.answers[result["seq"]] = result["status"]
        del self.outbox[: len(head)]
        return True

    def drain(self, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while self.outbox and not self.bad and time.monotonic() < deadline:
            self.push_once()


def _count(pg: psycopg.Connection[Any], user: User) -> int:
    row = pg.execute("SELECT count(*) FROM applied_mutations WHERE user_id = %s", (user.id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_pushes_survive_postgres_connections_killed_mid_stream_applying_each_mutation_once(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], pg: psycopg.Connection[Any]
) -> None:
    server = start_server(breaker_reset_s="1", pool_size="4")
    user = make_user()
    history = _history(["kiwi", "lime", "plum", "fig"], per_device=60, seed=7)
    devices = [Device(Api(server.url, user.token), name, mutations) for name, mutations in history.items()]
    stop = threading.Event()
    killed = 0

    def killer() -> None:
        nonlocal killed
        with psycopg.connect(pg.info.dsn, autocommit=True, application_name="pulse-tests-killer") as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'pulse-server' AND datname = current_database()"
                    " AND pid <> pg_backend_pid()").fetchone()
                killed += int(row[0]) if row else 0
                time.sleep(random.uniform(0.02, 0.08))

    threads = [threading.Thread(target=d.drain) for d in devices]
    chaos = threading.Thread(target=killer)
    try:
        chaos.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        stop.set()
        chaos.join(timeout=10)
    try:
        assert killed > 0
        assert [d.bad for d in devices] == [[]] * len(devices)  # 503s at worst: never a 500
        assert [d.outbox for d in devices] == [[]] * len(devices)
        for device in devices:  # a retry after a lost answer is a duplicate: either way, taken once
            assert set(device.answers) == {m["seq"] for m in history[device.client_id]}
            assert set(device.answers.values()) <= {"applied", "conflict", "duplicate"}

        assert _count(pg, user) == sum(len(m) for m in history.values())
        # Everything again, now that the database is left alone: all duplicates, nothing changes.
        before = stored(pg, user.id)
        for device in devices:
            device.outbox = list(history[device.client_id])
            device.answers.clear()
            device.drain()
            assert set(device.answers.values()) == {"duplicate"}
        assert _count(pg, user) == sum(len(m) for m in history.values())
        assert stored(pg, user.id) == before
        everything = [(name, m) for name, mutations in history.items() for m in mutations]
        assert before == merged(everything, dt.datetime.now(dt.UTC).date(), now_ms())
    finally:
        for device in devices:
            device.api.close()


def _metric_value(api: Api, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_with_postgres_unreachable_the_breaker_answers_503_at_once_and_queued_pushes_apply_after(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], database_url: str,
    pg: psycopg.Connection[Any]
) -> None:
    proxy = TcpProxy((PG_HOST, PG_PORT))
    parts = urlsplit(database_url)
    via_proxy = urlunsplit(parts._replace(netloc=f"{PG_USER}@127.0.0.1:{proxy.port}"))
    try:
        server = start_server(database_url=via_proxy, breaker_reset_s="3", breaker_failures="5")
        user = make_user()
        history = _history(["pear"], per_device=30, seed=11)["pear"]
        with Api(server.url, user.token, timeout=10) as api:
            device = Device(api, "pear", history[:10], batch=10)
            assert device.push_once()

            proxy.down()
            device.outbox.extend(history[10:20])  # edits made while the database is away
            statuses = [api.push("pear", device.outbox).status_code for _ in range(6)]
            assert set(statuses) == {503}
            assert _metric_value(api, "pulse_db_breaker_state") == 2
            tried = proxy.accepted
            for _ in range(5):
                response = api.push("pear", device.outbox)
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "unavailable"
                assert 1 <= int(response.headers["retry-after"]) <= 5
            assert proxy.accepted == tried, "while the breaker is open, no request even tries Postgres"
            ready = api.get("/readyz")
            assert ready.status_code == 503 and "retry-after" in ready.headers
            assert api.get("/healthz").status_code == 200  # the process itself is fine

            device.outbox.extend(history[20:])
            proxy.up()
            device.batch = 50
            device.drain(deadline_s=30)
            assert device.outbox == [] and device.bad == []
            assert _metric_value(api, "pulse_db_breaker_state") == 0
            assert api.get("/readyz").status_code == 200
            assert _count(pg, user) == len(history)
            assert {s for seq, s in device.answers.items() if seq > 10} <= {"applied", "conflict"}

            device.outbox = list(history)
            device.answers.clear()
            device.drain()
            assert set(device.answers.values()) == {"duplicate"}
            assert _count(pg, user) == len(history)
            today = dt.datetime.now(dt.UTC).date()
            assert stored(pg, user.id) == merged([("pear", m) for m in history], today, now_ms())
    finally:
        proxy.close()


def test_when_every_pooled_connection_is_busy_a_request_waits_pool_timeout_then_gets_503_not_a_hang(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], pg: psycopg.Connection[Any]
) -> None:
    server = start_server(pool_size="1", pool_timeout_s="0.5")
    user = make_user()
    mutation = set_mutation(1, DAYS[0], {"steps": 1}, stamp(now_ms(), 0, "slow"))
    outcome: list[int] = []
    with Api(server.url, user.token) as blocked, Api(server.url, user.token) as other:
        # Hold the lock a push from client "slow" takes first: it then holds the only connection.
        pg.execute("SELECT pg_advisory_lock(hashtextextended('slow', %s))", (user.id,))
        try:
            pusher = threading.Thread(target=lambda: outcome.append(blocked.push("slow", [mutation]).status_code))
            pusher.start()
            time.sleep(0.5)
            started = time.perf_counter()
            response = other.get("/v1/me")
            elapsed = time.perf_counter() - started
            assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
            assert response.headers["retry-after"] == "1"
            assert 0.4 < elapsed < 5, elapsed  # it waited pool_timeout_s (0.5 s), and did not hang
        finally:
            pg.execute("SELECT pg_advisory_unlock(hashtextextended('slow', %s))", (user.id,))
        pusher.join(timeout=20)
        assert outcome == [200]
        assert _metric_value(other, "pulse_db_breaker_state") == 0  # a busy pool is not a dead database
        assert other.get("/v1/me").status_code == 200
