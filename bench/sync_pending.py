"""`pulse sync` of a device with 10,000 pending mutations, against a real `pulse-server` on a throwaway database.

Run from the repo root (PostgreSQL 15 with wal_level=logical at PGHOST:PGPORT, default
127.0.0.1:5432, user postgres):

    .venv/bin/python bench/sync_pending.py            # 10,000 pending mutations (2,000 days x 5 fields)
    .venv/bin/python bench/sync_pending.py --quick    # 1,000 (200 days x 5 fields): a smoke check

What it does:
1. A device home in a temp dir gets N pending mutations the way `pulse log` makes them: one
   `pulse_core.usecases.log_entry` per (date, field) through `pulse_cli.bootstrap.bootstrap(home)`,
   N / 5 consecutive days ending yesterday, one field per call (sleep, HRV, steps, weight, note), each
   its own local transaction. Timed on its own (mutations/s).
2. A throwaway database `pulse_bench_<random>` (migrated), an athlete made by
   `pulse_server.accounts.add_user`, and `pulse-server serve --workers 1` with the replication reader
   and the shape watcher on (PULSE_LOG_LEVEL=warning).
3. `pulse --home H login ... --password-stdin`, then the timed run: `pulse --home H sync --json` as a
   subprocess, the real CLI. Printed: wall time, mutations/s for the whole sync, CPU of the CLI, the
   server and Postgres during it, the CLI's report; `pulse status` wall time as the start-up baseline.
4. The phases: a second device (another athlete, its own home, the same N mutations) synced in this
   process through `SyncEngine.sync()` with timers around the engine's steps (push, with the HTTP
   round-trips apart; pull, with the local apply apart; the view's rows refreshed, within both).
5. Checks: on the server, `applied_mutations` rows by status and `entries` rows for each athlete, and
   that the server's values equal the device's local view; on the device, the outbox by status. After
   each sync, how long the replication reader takes to put the athlete's rows in the shape log (what
   a pull serves); a reader that has not caught up within 30 s fails the run. Last, a second
   `pulse sync` with nothing pending (the no-op round, which pulls what the reader added since).

At the end the server is stopped, the database's replication slot(s) dropped and the database dropped
WITH (FORCE), even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _server import (  # noqa: E402
    BIN,
    PG_BASE,
    CpuSnapshot,
    Server,
    cpu_seconds,
    machine_seconds,
    no_interrupts,
    postgres_pids,
    running_server,
    throwaway_database,
)

SERVER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}
FIELDS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note")
NOTES = ("easy run", "long ride", "rest day", "slept badly", "travel", "intervals 6x800", "felt great", "sore legs")


# --- the throwaway server ----------------------------------------------------------------------------------


def drop_slots(url: str, timeout_s: float = 10.0) -> list[str]:
    """Drop every replication slot of the database (a slot still in use has its backend terminated first)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    dropped: list[str] = []
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
        while True:
            rows = admin.execute("SELECT slot_name, active, active_pid FROM pg_replication_slots WHERE database = %s",
                                 (name,)).fetchall()
            if not rows:
                return dropped
            for slot, active, pid in rows:
                if active and pid is not None:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    continue
                with contextlib.suppress(psycopg.Error):
                    admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    dropped.append(slot)
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication slots of {name} still there after {timeout_s:.0f} s: {rows}")
            time.sleep(0.2)


@contextlib.contextmanager
def bench_server() -> Iterator[tuple[str, Server]]:
    """Throwaway database + `pulse-server` (reader and watcher on); slots and database dropped on the way out."""
    with throwaway_database() as url:
        try:
            with running_server(url, 1, SERVER_ENV) as server:
                yield url, server
        finally:  # the server is stopped by now: its slot is free to drop
            with no_interrupts():
                try:
                    slots = drop_slots(url)
                    print(f"dropped replication slot(s) {', '.join(slots) or '(none)'}", file=sys.stderr)
                except Exception as exc:  # the database drop below must still run
                    print(f"could not drop the replication slots: {exc}", file=sys.stderr)


def add_athlete(url: str, username: str, password: str) -> int:
    from pulse_server.accounts import add_user
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    try:
        with db.session() as session:
            user = add_user(session, username, password, False)
            assert user.id is not None
            return int(user.id)
    finally:
        db.dispose()


def server_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def backends(url: str) -> dict[int, str]:
    """The Postgres backends connected to the bench database, by pid, with their application_name."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity"
                             " WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return {int(pid): str(app) for pid, app in rows}


class CpuWindow:
    """Who used the machine's CPU between start() and stop(): `client` is this process plus the children it
    waited for meanwhile (a `pulse` subprocess), the server, the bench database's backends by application,
    the rest of Postgres, everything else on the machine (other people's work), idle."""

    def __init__(self, url: str, server: Server, client_pids: tuple[int, ...] = ()) -> None:
        self.url, self.server, self.client_pids = url, server, client_pids

    def start(self) -> CpuWindow:
        self.apps = backends(self.url)
        self.before = CpuSnapshot.take()
        return self

    def stop(self) -> dict[str, float]:
        after = CpuSnapshot.take()
        self.apps.update(backends(self.url))
        before = self.before
        cpu: dict[str, float] = {"client": cpu_seconds(before, after, [os.getpid(), *self.client_pids]),
                                 "server": cpu_seconds(before, after, self.server.pids())}
        for app in sorted(set(self.apps.values())):
            cpu[f"pg:{app}"] = cpu_seconds(before, after, [p for p, a in self.apps.items() if a == app])
        postgres = postgres_pids(before) | postgres_pids(after)
        cpu["pg other dbs"] = cpu_seconds(before, after, postgres - set(self.apps))
        busy, total = machine_seconds(before, after)
        cpu["rest of machine"] = max(0.0, busy - sum(cpu.values()))
        cpu["idle"] = max(0.0, total - busy)
        cpu["wall"] = after.at - before.at
        cpu["total"] = total
        return cpu


def show_cpu(cpu: dict[str, float], indent: str = "    ") -> None:
    total = cpu["total"] or 1.0
    parts = [k for k in cpu if k not in ("wall", "total")]
    print(f"{indent}cpu s of {total:.1f} available ({cpu['wall']:.1f} s x {total / max(cpu['wall'], 1e-9):.0f} CPUs): "
          + ", ".join(f"{k} {cpu[k]:.2f} ({cpu[k] / total:.0%})" for k in parts))
    if cpu["rest of machine"] + cpu["pg other dbs"] > 0.15 * total:
        print(f"{indent}NOTE: other work on this machine took "
              f"{(cpu['rest of machine'] + cpu['pg other dbs']) / total:.0%} of the CPU in this window:"
              " the figures are slower than on a quiet machine")


# --- the device ----------------------------------------------------------------------------------------------


def pulse(home: Path, *args: str, stdin: str | None = None,
          check: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    """The real CLI as a subprocess; returns it and its wall time."""
    env = {**os.environ, "PULSE_HOME": str(home)}
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "pulse"), "--home", str(home), *args], input=stdin, capture_output=True,
                          text=True, env=env)
    elapsed = time.perf_counter() - start
    if check and done.returncode != 0:
        raise RuntimeError(f"pulse {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done, elapsed


def value(name: str, rng: random.Random) -> Any:
    if name == "sleep_hours":
        return f"{min(11.5, max(3.0, rng.gauss(7.2, 0.9))):.2f}"
    if name == "hrv_ms":
        return f"{min(180.0, max(15.0, rng.gauss(62, 14))):.1f}"
    if name == "steps":
        return max(0, int(rng.gauss(9_000, 3_500)))
    if name == "weight_kg":
        return f"{rng.gauss(72.0, 0.6):.1f}"
    return rng.choice(NOTES)


def make_pending(home: Path, count: int, seed: int = 7) -> tuple[float, int]:
    """`count` pending mutations as `pulse log` makes them: one log_entry per (date, field). Returns (seconds, days)."""
    from pulse_cli.bootstrap import bootstrap
    from pulse_core.usecases import log_entry

    rng = random.Random(seed)
    days = -(-count // len(FIELDS))
    device = bootstrap(str(home))
    try:
        first = device.today - dt.timedelta(days=days)
        made = 0
        start = time.perf_counter()
        for offset in range(days):
            day = first + dt.timedelta(days=offset)
            for name in FIELDS:
                if made == count:
                    break
                log_entry(device.uow(), device.user, day, {name: value(name, rng)}, device.today)
                made += 1
        elapsed = time.perf_counter() - start
    finally:
        device.close()
    return elapsed, days


def outbox_counts(home: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{home / 'pulse.db'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    finally:
        conn.close()


def local_rows(home: Path, table: str = "entries") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{home / 'pulse.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT date, sleep_hours, hrv_ms, steps, weight_kg, note FROM {table}"
                            " WHERE deleted = 0 ORDER BY date").fetchall()
    finally:
        conn.close()
    return [_norm(r) for r in rows]


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    date, sleep, hrv, steps, weight, note = row
    dec = (lambda v: None if v is None else Decimal(str(v)).normalize())  # noqa: E731
    return (str(date), dec(sleep), dec(hrv), steps, dec(weight), note)


# --- server-side checks -------------------------------------------------------------------------------------


def server_check(url: str, user_id: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT result->>'status', count(*) FROM applied_mutations WHERE user_id = %s"
                                     " GROUP BY 1", (user_id,)).fetchall())
        rows = conn.execute("SELECT date, sleep_hours, hrv_ms, steps, weight_kg, note FROM entries"
                            " WHERE user_id = %s AND NOT deleted ORDER BY date", (user_id,)).fetchall()
    return {"statuses": statuses, "rows": [_norm(r) for r in rows]}


def wait_for_shape_log(url: str, user_id: int, days: int, timeout_s: float) -> bool:
    """After a push: how long until the replication reader has the user's rows in the shape log (what a pull serves)."""
    import psycopg

    start = time.perf_counter()
    rows = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - start < timeout_s:
            row = conn.execute("SELECT count(*) FROM shape_rows WHERE user_id = %s", (user_id,)).fetchone()
            rows = int(row[0]) if row else 0
            if rows >= days:
                print(f"  replication reader: the shape log held all {days} rows {time.perf_counter() - start:.1f} s"
                      " after the sync returned")
                return True
            time.sleep(0.2)
    print(f"  replication reader: STALLED? the shape log holds {rows} of {days} rows {timeout_s:.0f} s after the sync"
          " returned (pulls serve only what it holds; the device view is right anyway, from re-applied mutations)")
    return False


def report_check(label: str, url: str, user_id: int, home: Path, count: int, days: int) -> bool:
    server = server_check(url, user_id)
    local = local_rows(home)
    copy = local_rows(home, "server_entries")
    applied = server["statuses"].get("applied", 0)
    ok = applied == count and len(server["rows"]) == days and server["rows"] == local
    print(f"  check [{label}]: server applied_mutations {dict(sorted(server['statuses'].items()))} (expected "
          f"{count} applied); server entries {len(server['rows'])} rows (expected {days}); device outbox "
          f"{dict(sorted(outbox_counts(home).items()))}; device view {len(local)} rows, server copy {len(copy)} rows;"
          f" server values == device view: {server['rows'] == local}; server values == device server copy: "
          f"{server['rows'] == copy} -> {'OK' if ok else 'MISMATCH'}")
    return ok


# --- the timed CLI run ---------------------------------------------------------------------------------------


def cli_sync(url: str, home: Path, server: Server, count: int) -> dict[str, Any]:
    window = CpuWindow(url, server).start()
    done, elapsed = pulse(home, "sync", "--json")
    cpu = window.stop()
    report = json.loads(done.stdout)
    pushed = sum(report["pushed"].values())
    print(f"  pulse sync --json: {elapsed:.2f} s wall, exit {done.returncode}; {pushed / elapsed:,.0f} mutations/s "
          f"over the whole command ({count} pending)")
    print(f"    report: {json.dumps(report)}")
    show_cpu(cpu)
    return {"elapsed": elapsed, "report": report}


# --- the phases, in process ----------------------------------------------------------------------------------


class Timers:
    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.notes: dict[str, Any] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        return timed


def phases(url: str, server: Server, home: Path) -> dict[str, Any]:
    """`SyncEngine.sync()` in this process, with timers around its steps (the same calls run_sync makes)."""
    from pulse_cli.agent import pull as pull_module
    from pulse_cli.agent import replica
    from pulse_cli.agent.account import load_account
    from pulse_cli.agent.engine import SyncEngine
    from pulse_cli.bootstrap import bootstrap
    from sync.client import SyncClient

    timers = Timers()
    device = bootstrap(str(home))
    account = load_account(device.home)
    assert account is not None
    original_apply, original_refresh = pull_module.apply_batch, replica.refresh_view

    def refresh_view(conn: sqlite3.Connection, keys: Any) -> int:
        keys = list(keys)
        timers.notes["view_rows_refreshed"] = timers.notes.get("view_rows_refreshed", 0) + len(keys)
        changed: int = original_refresh(conn, keys)
        return changed

    pull_module.apply_batch = timers.wrap("pull: apply batches locally", original_apply)  # type: ignore[assignment]
    replica.refresh_view = timers.wrap("view: replica.refresh_view", refresh_view)  # type: ignore[assignment]
    try:
        with SyncClient(account.server, account.token) as client:
            client.push = timers.wrap("push: HTTP round-trips", client.push)  # type: ignore[method-assign]
            engine = SyncEngine(device, account, client, pull=pull_module.pull_shape)
            engine.push = timers.wrap("push", engine.push)  # type: ignore[method-assign]
            assert engine.pull_step is not None
            engine.pull_step = timers.wrap("pull", engine.pull_step)
            window = CpuWindow(url, server).start()
            start = time.perf_counter()
            report = engine.sync()
            timers.seconds["total"] = time.perf_counter() - start
            timers.notes["cpu"] = window.stop()
    finally:
        pull_module.apply_batch = original_apply
        replica.refresh_view = original_refresh
        device.close()
    return {"timers": timers, "report": report}


def show_phases(result: dict[str, Any], count: int) -> None:
    from pulse_cli.agent.engine import PUSH_BATCH

    t: Timers = result["timers"]
    s = t.seconds
    report = result["report"]
    pushed = sum(report.pushed.values())
    other = s["total"] - s["push"] - s["pull"]
    print(f"  SyncEngine.sync() in process: {s['total']:.2f} s; pushed {dict(report.pushed)}, pulled {report.pulled}"
          f", pending {report.pending}, rejected {report.rejected}, conflicts {report.conflicts}")
    print(f"    push     {s['push']:7.2f} s  {pushed / max(s['push'], 1e-9):8,.0f} mutations/s  "
          f"({t.calls['push: HTTP round-trips']} requests of up to PUSH_BATCH={PUSH_BATCH})")
    http = s["push: HTTP round-trips"]
    print(f"      HTTP round-trips (server + wire + JSON) {http:7.2f} s  "
          f"({http / max(t.calls['push: HTTP round-trips'], 1) * 1000:.0f} ms per batch)")
    print(f"      local (read the outbox, record results) {s['push'] - http:7.2f} s")
    apply = s["pull: apply batches locally"]
    print(f"    pull     {s['pull']:7.2f} s  ({report.pulled} changes in {t.calls['pull: apply batches locally']} "
          f"batches; local apply {apply:.2f} s, HTTP + parse {s['pull'] - apply:.2f} s)")
    view = s.get("view: replica.refresh_view", 0.0)
    print(f"    view     {view:7.2f} s  ({t.notes.get('view_rows_refreshed', 0)} rows refreshed, within push and pull)")
    print(f"    other    {other:7.2f} s  (breaker, summary)")
    show_cpu(t.notes["cpu"])
    assert count == pushed or report.pending, "not every mutation was pushed"


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mutations", type=int, default=10_000, help="pending mutations (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 mutations: a smoke check")
    parser.add_argument("--keep-home", action="store_true", help="leave the device homes in the temp dir")
    args = parser.parse_args()
    count = min(args.mutations, 1_000) if args.quick else args.mutations

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    from pulse_cli.agent.engine import PUSH_BATCH

    work = Path(tempfile.mkdtemp(prefix="pulse-sync-bench-"))
    ok = reader_ok = True
    try:
        print(f"sync of {count:,} pending mutations; PUSH_BATCH = {PUSH_BATCH}; {os.cpu_count()} CPUs", flush=True)
        home = work / "device-cli"
        made_s, days = make_pending(home, count)
        print(f"\n1. making the pending mutations (log_entry x {count:,}, {days} days x {len(FIELDS)} fields): "
              f"{made_s:.2f} s, {count / made_s:,.0f} mutations/s; outbox {outbox_counts(home)}", flush=True)
        with bench_server() as (url, server):
            base = server_url(server)
            print(f"\n2. pulse-server --workers 1 on {base}, database {url.rsplit('/', 1)[1]}", flush=True)
            password = secrets.token_urlsafe(12)
            user_cli = add_athlete(url, "bench-cli", password)
            done, login_s = pulse(home, "login", "--server", base, "--username", "bench-cli", "--password-stdin",
                                  stdin=password + "\n")
            print(f"  login: {login_s:.2f} s: {done.stdout.strip()}")
            _, status_s = pulse(home, "status", "--json")
            print(f"  start-up baseline: pulse status --json {status_s:.2f} s wall")

            print("\n3. the real CLI", flush=True)
            cli_sync(url, home, server, count)
            ok &= report_check("cli", url, user_cli, home, count, days)
            reader_ok = wait_for_shape_log(url, user_cli, days, timeout_s=30.0)

            print("\n4. the phases: a second device and athlete, the same workload, SyncEngine.sync() in process",
                  flush=True)
            home2 = work / "device-phases"
            made2_s, _ = make_pending(home2, count)
            user_phases = add_athlete(url, "bench-phases", password)
            pulse(home2, "login", "--server", base, "--username", "bench-phases", "--password-stdin",
                  stdin=password + "\n")
            print(f"  (made its {count:,} mutations in {made2_s:.2f} s)")
            show_phases(phases(url, server, home2), count)
            ok &= report_check("phases", url, user_phases, home2, count, days)
            reader_ok &= wait_for_shape_log(url, user_phases, days, timeout_s=30.0)

            print("\n5. a second pulse sync with nothing pending (the no-op round)", flush=True)
            done, noop_s = pulse(home, "sync", "--json")
            print(f"  pulse sync --json: {noop_s:.2f} s wall: {json.dumps(json.loads(done.stdout))}")
            ok &= report_check("cli, after the no-op round", url, user_cli, home, count, days)
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, database dropped", file=sys.stderr)
        sys.exit(130)
    finally:
        if args.keep_home:
            print(f"device homes kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not reader_ok:
        print("\nthe server's replication reader did not catch up: the pull figures mean nothing", file=sys.stderr)
    if not ok or not reader_ok:
        print("\nCHECK FAILED: see above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
