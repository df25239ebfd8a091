"""The scale-out drill: nginx (deploy/nginx/pulse.conf) in front of three `pulse-server` instances on one
database, devices pushing and live clients following their shapes through the proxy all along, while

1. one instance (not the replication leader) is SIGKILLed: nothing lost, nothing applied twice, its live
   clients carry on through the proxy;
2. the replication leader is SIGKILLed: another instance takes over and no live client misses a change;
3. all three are restarted one by one (SIGTERM, start, ready): no push fails as seen by a device.

Devices: three sync-engine clients (`sync.client.SyncClient`, the CLI's own transport with its retries),
one mutation per push, each a new value (steps = seq) on one of 20 days; a fourth pushing 200 at a time
(the first kill waits until an instance is writing one of these, so a push is cut for certain); and one
`pulse` CLI device logging and syncing in a loop (real processes: outbox, push, shape pull). Each
device's user has a live follower (long polls through nginx, as Electric's clients do). Run with `-s` to
see the figures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _nginx
import httpx
import psycopg
import pytest
from shape_follower import Follower, table_values
from sync_support import Device, PulseServer, User, wait_for
from throwaway_db import migrated_database

from pulse_server.accounts import add_user, find_user, issue_token
from pulse_server.db.database import Database
from pulse_server.settings import Settings
from sync.client import SyncClient
from sync.errors import SyncError

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not _nginx.available(), reason="needs nginx (.ci/test installs it)")]

PASSWORD = "correct horse battery"
ENGINE_DEVICES = 3
BULK = 200  # mutations in each push of the bulk device
DAYS = 20
PACE_S = 0.15  # between two pushes of one engine device
FIRST_DAY = dt.date.today() - dt.timedelta(days=60)
# The issue asks for 5 s; measured figures are printed (and the reasons for any margin in docs/deploy.md).
RECONNECT_BOUND_S = 5.0
TAKEOVER_BOUND_S = 5.0


# -- the parts ---------------------------------------------------------------------------------------
class CountingTransport(httpx.HTTPTransport):
    """Counts the requests a device's client had to retry (a 5xx answer or a broken connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.retried = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.retried += 1
            raise
        if response.status_code >= 500:
            self.retried += 1
        return response


@dataclass
class EngineDevice:
    """A device pushing new values through the proxy, `batch` mutations a push (each on a day of its own,
    so every one is a change of its own in the shape); a failed push (after the client's own retries) is
    recorded and pushed again, as an outbox would."""

    user: User
    client_id: str
    url: str
    token: str
    batch: int = 1
    days: int = DAYS
    pace_s: float = PACE_S
    acked: dict[int, str] = field(default_factory=dict)  # seq -> result status
    failed: list[str] = field(default_factory=list)
    pushes: int = 0
    last_day_seq: dict[str, int] = field(default_factory=dict)  # the last seq written to each day

    def run(self, stop: threading.Event) -> None:
        self.transport = CountingTransport()
        stamps: dict[str, str] = {}
        with SyncClient(self.url, self.token, transport=self.transport) as client:
            seq = 0
            while not stop.is_set():
                mutations = []
                for _ in range(self.batch):
                    seq += 1
                    day = (FIRST_DAY - dt.timedelta(days=seq % self.days)).isoformat()
                    hlc = f"{time.time_ns() // 1_000_000:016d}:{seq % 100_000:05d}:{self.client_id}"
                    mutations.append({"seq": seq, "date": day, "op": "set", "fields": {"steps": seq},
                                      "base": {"steps": stamps.get(day)}, "hlc": hlc})
                    stamps[day] = hlc
                while True:
                    try:
                        results = client.push(self.client_id, mutations)["results"]
                        break
                    except SyncError as exc:
                        self.failed.append(f"seqs {mutations[0]['seq']}..: {exc}")
                        time.sleep(0.5)
                self.pushes += 1
                for mutation, result in zip(mutations, results, strict=True):
                    self.acked[mutation["seq"]] = result["status"]
                    self.last_day_seq[mutation["date"]] = mutation["seq"]
                stop.wait(self.pace_s)


@dataclass
class LiveClient:
    """A live follower of one user's shape through the proxy; records when each answer came."""

    follower: Follower
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status or 0: cut)
    seen_steps: set[int] = field(default_factory=set)
    refetches: int = 0
    up_to_date: bool = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                response = self.follower.step(live=self.up_to_date)
            except httpx.TransportError:
                self.answers.append((time.monotonic(), 0))
                time.sleep(0.1)
                continue
            self.answers.append((time.monotonic(), response.status_code))
            if response.status_code == 409:
                self.refetches += 1
                self.up_to_date = False
            elif response.status_code == 200:
                for message in response.json():
                    steps = message.get("value", {}).get("steps")
                    if steps is not None:
                        self.seen_steps.add(int(steps))
                self.up_to_date = self.up_to_date or "electric-up-to-date" in response.headers
            else:  # 502/503/504 while an instance or the leader is gone: ask again, as clients do
                time.sleep(0.1)

    def first_answer_after(self, moment: float) -> float | None:
        later = [t for t, status in self.answers if t >= moment and status == 200]
        return min(later) - moment if later else None


def first_answers_after(moment: float, clients: list[LiveClient]) -> float:
    """The longest any of these live clients went from `moment` to its next answer with changes. Their
    users' devices write every PACE_S, so a live client that is connected has one within about that."""
    found = [c.first_answer_after(moment) for c in clients]
    return round(max(f if f is not None else float("inf") for f in found), 3)


def postgres_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets: matched with pg_stat_activity.client_port, they say
    which Postgres backends serve that process."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[9]) in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextlib.contextmanager
def holding_day(cluster: Cluster, user_id: int, day: dt.date) -> Iterator[None]:
    """Hold the day's lock, the one every writer of a day takes (docs/push-protocol.md, "Concurrent
    pushes"): a push of that day stops in Postgres, in the middle of its write, until it is let go."""
    key = f"entry:{user_id}:{day.isoformat()}"
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def held_push(cluster: Cluster) -> PulseServer | None:
    """The instance whose Postgres backend is in `pulse_push_write`, waiting for a day's lock."""
    busy = {r[0] for r in cluster.pg.execute(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '%%pulse_push_write%%'")}
    if not busy:
        return None
    return next((s for s in cluster.servers if busy & postgres_ports(s.proc.pid)), None)


def _metric(url: str, name: str) -> str:
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.MULTILINE)
    return found[1] if found else ""


def leads(server: PulseServer) -> bool:
    return _metric(server.url, 'pulse_replication_reader_state{state="following"}') == "1.0"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- the cluster -------------------------------------------------------------------------------------
@dataclass
class Cluster:
    database_url: str
    servers: list[PulseServer]
    nginx: _nginx.Nginx
    pg: psycopg.Connection[Any]

    def token(self, user: User) -> str:
        database = Database(Settings(database_url=self.database_url, pool_size=1))
        try:
            with database.session() as session:
                row = find_user(session, user.username)
                assert row is not None
                token, _ = issue_token(session, row, 1)
        finally:
            database.dispose()
        return token

    def leader(self) -> PulseServer:
        return wait_for(lambda: next((s for s in self.servers if s.proc.poll() is None and leads(s)), None), 15,
                        "an instance to lead the replication reader")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("drill")
    with migrated_database("pulse_drill") as url:
        env = {"PULSE_DATABASE_URL": url, "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true",
               "PULSE_FORWARDED_ALLOW_IPS": "127.0.0.1", "PULSE_LOG_LEVEL": "warning", "PULSE_POOL_SIZE": "4"}
        servers: list[PulseServer] = []
        nginx: _nginx.Nginx | None = None
        try:
            servers.extend(PulseServer(logs / f"server-{i}.log", env) for i in range(3))
            nginx = _nginx.Nginx([s.port for s in servers], root=logs / "nginx")
            for server in servers:
                server.wait_ready()
            nginx.start()
            nginx.wait_ready()
            with psycopg.connect(url, autocommit=True) as pg:
                yield Cluster(url, servers, nginx, pg)
        finally:
            if nginx is not None:
                nginx.stop()
            for server in servers:
                server.close()


def make_users(cluster: Cluster, count: int) -> list[User]:
    database = Database(Settings(database_url=cluster.database_url, pool_size=1))
    users = []
    try:
        for i in range(count):
            with database.session() as session:
                row = add_user(session, f"drill-{i}", PASSWORD, False)
            assert row.id is not None
            users.append(User(row.id, row.username))
    finally:
        database.dispose()
    return users


class CliDevice:
    """A `pulse` device logging a day and syncing through the proxy, over and over."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.syncs: list[float] = []
        self.failed: list[str] = []
        self.logged: dict[str, int] = {}

    def run(self, stop: threading.Event) -> None:
        step = 0
        while not stop.is_set():
            step += 1
            day = (FIRST_DAY + dt.timedelta(days=step % 10)).isoformat()
            self.device.log(day, steps=1000 + step)
            self.logged[day] = 1000 + step
            started = time.monotonic()
            done = self.device.sync()
            self.syncs.append(time.monotonic() - started)
            if done.returncode != 0:
                self.failed.append(f"pulse sync -> {done.returncode}: {done.stderr.strip()}")
            stop.wait(0.3)


# -- the drill ---------------------------------------------------------------------------------------
def test_kill_one_kill_the_leader_then_restart_all_without_losing_a_change(
    cluster: Cluster, tmp_path: Path
) -> None:
    drill_started = time.monotonic()
    users = make_users(cluster, ENGINE_DEVICES + 2)
    url = cluster.nginx.url
    devices = [EngineDevice(u, f"drill{i:02d}", url, cluster.token(u)) for i, u in enumerate(users[:ENGINE_DEVICES])]
    # and one pushing 200 mutations at a time: a push long enough to be cut by the kill while it writes
    bulk = users[ENGINE_DEVICES]
    devices.append(EngineDevice(bulk, "drillbulk", url, cluster.token(bulk), batch=BULK, days=BULK, pace_s=0.3))
    live = [LiveClient(Follower(url, cluster.token(u))) for u in users]
    cli = Device("cli", tmp_path / "cli", url)
    assert cli.login(users[-1]).returncode == 0
    cli_device = CliDevice(cli)

    stop_devices, stop_live = threading.Event(), threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop_devices,), daemon=True) for d in devices]
    threads.append(threading.Thread(target=cli_device.run, args=(stop_devices,), daemon=True))
    followers = [threading.Thread(target=f.run, args=(stop_live,), daemon=True) for f in live]
    for thread in threads + followers:
        thread.start()
    wait_for(lambda: all(f.up_to_date for f in live), 30, "every live client to be up to date")
    time.sleep(2)

    figures: dict[str, Any] = {}
    # 1. SIGKILL an instance that does not lead the reader, while it writes a push (the bulk device's). The
    # test holds the lock of one of the bulk device's days, so its push stops in Postgres mid-write and the
    # kill cannot land after it was answered (with pushes of a few ms it often did); the lock is let go once
    # the instance is dead. A push held on the leader is let go and another one waited for.
    leader = cluster.leader()
    retried_before, reconnects = sum(d.transport.retried for d in devices), []
    for _ in range(10):
        with holding_day(cluster, bulk.id, FIRST_DAY):
            victim = wait_for(lambda: held_push(cluster), 30, "the bulk device's push held mid-write",
                              every_s=0.01)
            if victim is leader:
                continue
            killed_at = time.monotonic()
            victim.kill()
        time.sleep(4)
        reconnects.append(first_answers_after(killed_at, live[:ENGINE_DEVICES]))
        victim.restart()
        wait_for(functools.partial(ready, victim.url), 15, "the restarted instance to be ready")
        time.sleep(2)
        if sum(d.transport.retried for d in devices) > retried_before or len(reconnects) == 3:
            break
    figures["reconnect_after_kill_s"] = max(reconnects)
    figures["kills_until_a_push_was_cut"] = len(reconnects)

    # 2. SIGKILL the replication leader.
    leader = cluster.leader()
    killed_at = time.monotonic()
    leader.kill()
    survivors = [s for s in cluster.servers if s is not leader]
    wait_for(lambda: any(leads(s) for s in survivors), 15, "another instance to take the reader over",
             every_s=0.02)
    figures["takeover_s"] = round(time.monotonic() - killed_at, 3)
    time.sleep(3)
    figures["live_answer_after_leader_kill_s"] = first_answers_after(killed_at, live[:ENGINE_DEVICES])
    leader.restart()
    wait_for(lambda: ready(leader.url), 15, "the old leader to be ready again")
    time.sleep(2)

    # 3. A rolling restart of all three: SIGTERM, start again, wait until ready, next.
    stops = []
    for server in cluster.servers:
        began = time.monotonic()
        server.stop()
        stops.append(time.monotonic() - began)
        server.restart()
        wait_for(lambda s=server: ready(s.url), 15, "a restarted instance to be ready")
        time.sleep(1)
    figures["sigterm_exit_s"] = round(max(stops), 3)
    time.sleep(2)

    stop_devices.set()
    for thread in threads:
        thread.join(120)
    # Every live client ends holding exactly what Postgres holds.
    for user, follower in zip(users, live, strict=True):
        wait_for(lambda u=user, f=follower: f.follower.values() == table_values(cluster.pg, u.id), 30,
                 f"{user.username}'s live client to hold what Postgres holds")
    stop_live.set()

    pushes = sum(d.pushes for d in devices)
    figures.update({
        "pushes": pushes, "mutations": sum(len(d.acked) for d in devices), "cli_syncs": len(cli_device.syncs),
        "failed_pushes": sum(len(d.failed) for d in devices), "failed_cli_syncs": len(cli_device.failed),
        "requests_retried_by_devices": sum(d.transport.retried for d in devices),
        "cli_sync_p50_s": round(statistics.median(cli_device.syncs), 2) if cli_device.syncs else None,
        "drill_s": round(time.monotonic() - drill_started, 1),
    })
    print("\ndrill figures (before the checks):", json.dumps(figures))
    lost: dict[str, list[int]] = {}
    for device, follower in zip(devices, live[:ENGINE_DEVICES + 1], strict=True):
        # Nothing applied twice: each seq recorded once, every result the first application's or its replay.
        rows = cluster.pg.execute("SELECT seq FROM applied_mutations WHERE user_id = %s AND client_id = %s"
                                  " ORDER BY seq", (device.user.id, device.client_id)).fetchall()
        assert [r[0] for r in rows] == sorted(device.acked), device.client_id
        assert set(device.acked.values()) <= {"applied", "duplicate"}, device.acked
        # Nothing lost: each day holds the last value written to it.
        stored = dict(cluster.pg.execute("SELECT date::text, steps FROM entries WHERE user_id = %s",
                                         (device.user.id,)).fetchall())
        assert stored == device.last_day_seq, device.client_id
        # No change missed by the live client: it saw every value ever acknowledged, without a refetch.
        missed = sorted(set(device.acked) - follower.seen_steps)
        if missed:
            lost[device.client_id] = missed
        assert follower.refetches == 0
    figures["changes_missed_by_live_clients"] = sum(len(m) for m in lost.values())
    cli_days = {e["date"]: e["steps"] for e in cli.history(FIRST_DAY.isoformat(), dt.date.today().isoformat())}
    assert cli_days == cli_device.logged
    figures["duplicates_answered"] = sum(list(d.acked.values()).count("duplicate") for d in devices)
    print("\ndrill figures:", json.dumps(figures))

    assert lost == {}, f"changes missed by live clients: {lost}"
    assert figures["failed_pushes"] == 0, [d.failed for d in devices]
    assert figures["failed_cli_syncs"] == 0, cli_device.failed
    assert figures["reconnect_after_kill_s"] < RECONNECT_BOUND_S, figures
    assert figures["takeover_s"] < TAKEOVER_BOUND_S, figures
    assert pushes > 100 and len(cli_device.syncs) > 5, figures
    # The push cut by the first kill was sent again by its device: answered once, applied once.
    assert figures["requests_retried_by_devices"] >= 1, figures


def test_a_slow_client_is_cut_off_by_the_proxy_not_held(cluster: Cluster) -> None:
    """Half the headers, then nothing: nginx drops the connection after its header timeout (10 s); an
    instance never sees it (uvicorn alone would hold it open as long as the client likes)."""
    import socket

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", cluster.nginx.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/sync/push HTTP/1.1\r\nHost: x\r\n")
        try:
            closed = sock.recv(4096)  # blocks until nginx answers or closes
        except ConnectionResetError:  # reset_timedout_connection: nginx frees the socket at once
            closed = b""
    held = time.monotonic() - started
    assert closed == b"" or closed.startswith(b"HTTP/1.1 408"), closed[:200]
    assert 9 <= held < 25, held
