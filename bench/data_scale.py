"""Costs at scale: a coach with 200 athletes x 2 years (146,000 entries) against a real `pulse-server`.

Run from the repo root (PostgreSQL 15 with wal_level=logical at PGHOST:PGPORT, default
127.0.0.1:5432, user postgres):

    .venv/bin/python bench/data_scale.py            # 200 athletes x 730 days: ~10-15 minutes on 2 busy cores
    .venv/bin/python bench/data_scale.py --quick    # 20 athletes x 365 days, shorter waits: ~3 minutes
    .venv/bin/python bench/data_scale.py --server-memory-only   # step 7 alone (146,000 rows): ~2 minutes

What it does:
1. A throwaway database `pulse_bench_<random>` (migrated) and `pulse-server serve --workers 1` with the
   replication reader and the shape watcher on. A coach (`add_user`, one argon2 hash), the athletes
   (bench/_server.py's `create_athletes`: tokens made as `issue_token` makes them), every athlete granting the coach.
2. Seeding through the server's own write path: each athlete's days are pushed to `POST /v1/sync/push`
   in batches of 500 mutations (one per day: sleep, RMSSD HRV, steps, weight on about one day in four,
   a note on one in ten; seeded values), from 4 keep-alive connections at once; every result must be
   `applied`. Then until the replication reader has every row in the shape log.
3. The coach's device is the real CLI: `pulse login`, then the first `pulse sync` (wall time and peak
   RSS of the process, from wait4's rusage in a small launcher process). In the same run, an athlete
   with one entry logs it and syncs; then no-op `pulse sync`s of the coach and of that athlete, in
   turn, 5 of each: the coach's median is compared with the athlete's.
4. The idle `pulse agent --interval N` of the coach: the CPU seconds (utime + stime from
   /proc/<pid>/stat) of its start (its first round, and the comparison with the server's digests it
   makes at start and hourly), then, once it is quiet, over the next rounds' intervals (its live pull
   and outbox watch included) per round, and its RSS then and at the end.
5. The team PDF on the coach's device, for the last month and the last year: `pulse report --team
   --format pdf`, wall time, pages, time per page and peak RSS.
6. `pulse history` of 10 years (3,652 days, about 9 in 10 logged) as a table and as JSON, on a device
   store of its own (written directly, as a synced device holds it): wall time and peak RSS.
7. Last, the server's RSS (its process, VmRSS) around one transaction: a single `INSERT ... SELECT`
   with psycopg of as many entries as were seeded (the same athletes, the two years before), sampled
   every 0.2 s: before, the peak (from the commit to the last sample, a minute after the reader has
   put all of it in the shape log), when logged, and a minute later. `--server-memory-only` measures
   this alone, on a server with nothing seeded (~2 minutes).
8. A table of each target and whether it is met. The load average is printed before and after.

At the end the server is stopped, the database's replication slots dropped and the database dropped
WITH (FORCE), even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import orjson  # noqa: E402
from _server import (  # noqa: E402
    BIN,
    CLOCK_TICKS,
    Account,
    Server,
    create_athletes,
    replication_database,
    running_server,
    wait_for_slot,
)
from agent_idle import last_sync as agent_last_sync  # noqa: E402
from agent_idle import running_agent, sample, settle  # noqa: E402

READER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}
BATCH = 500  # the server's max_batch
CONNECTIONS = 4
PAGE = re.compile(rb"/Type\s*/Page[^s]")


@dataclass(frozen=True)
class Plan:
    athletes: int
    days: int
    noop_runs: int
    agent_interval: float
    agent_rounds: int
    settle_s: float  # how long after the big transaction the server's RSS is read again
    history_days: int


FULL = Plan(athletes=200, days=730, noop_runs=5, agent_interval=10.0, agent_rounds=5, settle_s=60.0,
            history_days=3652)
QUICK = Plan(athletes=20, days=365, noop_runs=5, agent_interval=5.0, agent_rounds=2, settle_s=15.0,
             history_days=3652)


# --- a child process, measured ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    peak_mb: float  # the child's peak RSS (ru_maxrss)
    stdout: str


# A small process that starts the command and reports wait4's rusage: a child forked from this bench (~150 MB,
# with psycopg and the server's modules loaded) would count the bench's own pages in its peak RSS.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
               "peak_kb": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, out)
"""


def measured(home: Path, *args: str, stdin: str | None = None) -> Run:
    """`pulse --home H ARGS` as a child of LAUNCHER: wall time, CPU and peak RSS from wait4's rusage."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}, "PULSE_HOME": str(home),
           "COLUMNS": "100"}
    with tempfile.TemporaryDirectory(prefix="pulse-run-") as tmp:
        result = Path(tmp) / "rusage.json"
        done = subprocess.run([sys.executable, "-c", LAUNCHER, str(result), str(BIN / "pulse"), "--home", str(home),
                               *args], env=env, input=stdin, capture_output=True, text=True, check=False)
        usage = orjson.loads(result.read_bytes())
    if usage["code"] != 0 or done.returncode != 0:
        raise RuntimeError(f"pulse {' '.join(args)} exited {usage['code']}:\n{done.stdout}{done.stderr}")
    return Run(usage["wall"], usage["cpu"], usage["peak_kb"] / 1024, done.stdout)


# --- the team, seeded through the push endpoint -------------------------------------------------------------------


def make_coach(url: str, password: str, athlete_ids: list[int]) -> None:
    import psycopg

    from pulse_server.accounts import add_user
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    try:
        with db.session() as session:
            coach = add_user(session, "coach-bench", password, True)
            coach_id = coach.id
    finally:
        db.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO grants (athlete_id, coach_id) SELECT unnest(%s::bigint[]), %s",
                     (athlete_ids, coach_id))


def add_athlete(url: str, username: str, password: str) -> None:
    from pulse_server.accounts import add_user
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    try:
        with db.session() as session:
            add_user(session, username, password, False)
    finally:
        db.dispose()


def mutations(account: Account, days: int, end: dt.date) -> list[dict[str, Any]]:
    """One `set` per day of the athlete's `days` days ending `end`, as a device pushes them."""
    rng = random.Random(account.user_id)
    client = f"seed-{account.user_id}"
    now_ms = time.time_ns() // 1_000_000
    sleep, steps, hrv, weight = rng.uniform(6, 8.5), rng.uniform(5000, 13000), rng.uniform(35, 90), rng.uniform(55, 95)
    out = []
    for i in range(days):
        day = end - dt.timedelta(days=days - 1 - i)
        fields: dict[str, Any] = {
            "sleep_hours": f"{min(14.0, max(3.0, rng.gauss(sleep, 1.0))):.2f}",
            "hrv_ms": f"{max(5.0, rng.gauss(hrv, 9)):.2f}", "hrv_method": "rmssd",
            "steps": max(0, int(rng.gauss(steps, 2500))),
        }
        if rng.random() < 0.25:
            weight += rng.gauss(0, 0.3)
            fields["weight_kg"] = f"{weight:.1f}"
        if rng.random() < 0.1:
            fields["note"] = rng.choice(("easy run", "long ride", "intervals 6x800", "rest day", "travel"))
        stamp = f"{now_ms:016d}:{i:05d}:{client}"
        out.append({"seq": i + 1, "date": day.isoformat(), "op": "set", "fields": fields,
                    "base": {name: None for name in fields if name != "hrv_method"}, "hlc": stamp})
    return out


class Pusher:
    """One keep-alive HTTP/1.1 connection per thread to the push endpoint."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def push(self, account: Account, batch: list[dict[str, Any]]) -> Counter[str]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        body = orjson.dumps({"protocol": 1, "client_id": f"seed-{account.user_id}", "mutations": batch})
        conn.request("POST", "/v1/sync/push", body, {"Authorization": f"Bearer {account.token}",
                                                     "Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"push answered {reply.status}: {data[:300]!r}")
        return Counter(str(r["status"]) for r in orjson.loads(data)["results"])


def seed(server: Server, accounts: list[Account], days: int, end: dt.date) -> tuple[float, Counter[str]]:
    pusher = Pusher(server.port)
    batches = [(account, mutations(account, days, end)) for account in accounts]
    # every athlete's first batch, then every second one: no two connections write one client's batches at once
    jobs = [(account, batch[i:i + BATCH]) for i in range(0, days, BATCH) for account, batch in batches]
    started = time.perf_counter()
    statuses: Counter[str] = Counter()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        for tally in pool.map(lambda job: pusher.push(*job), jobs):
            statuses.update(tally)
    return time.perf_counter() - started, statuses


def shape_rows(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM shape_rows").fetchone()
    return int(row[0]) if row else 0


def wait_for_shape_log(url: str, rows: int, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if shape_rows(url) >= rows:
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError(f"the replication reader did not log {rows:,} rows within {timeout_s:.0f} s")


# --- the server's memory around one big transaction -----------------------------------------------------------------

BIG_INSERT = """
INSERT INTO entries (user_id, date, sleep_hours, sleep_hours_hlc, sleep_hours_src, hrv_ms, hrv_method, hrv_ms_hlc,
                     hrv_ms_src, steps, steps_hlc, steps_src, weight_kg, weight_kg_hlc, weight_kg_src, note, note_hlc,
                     note_src, score, score_version, deleted, updated_at)
SELECT u, d::date, s.sleep, s.stamp, 'sync', s.hrv, 'rmssd', s.stamp, 'sync', s.steps, s.stamp, 'sync',
       s.weight, s.stamp, 'sync', NULL, NULL, NULL, (40 + random() * 60)::int, 1, false, now()
FROM unnest(%s::bigint[]) u
CROSS JOIN generate_series(%s::date, %s::date, '1 day') d
CROSS JOIN LATERAL (SELECT round((5 + random() * 4)::numeric, 2) AS sleep,
                           round((30 + random() * 70)::numeric, 2) AS hrv,
                           (random() * 20000)::int AS steps, round((55 + random() * 30)::numeric, 1) AS weight,
                           lpad(((extract(epoch FROM now()) * 1000)::bigint)::text, 16, '0')
                               || ':00000:bulk-' || u AS stamp) s
"""


def rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@contextlib.contextmanager
def rss_sampler(server: Server, every_s: float = 0.2) -> Iterator[list[float]]:
    samples: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            samples.append(rss_mb(server.pids()))
            stop.wait(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def big_transaction(url: str, server: Server, ids: list[int], days: int, end: dt.date, settle_s: float
                    ) -> dict[str, float]:
    import psycopg

    last = end - dt.timedelta(days=days)
    first = last - dt.timedelta(days=days - 1)
    logged_before = shape_rows(url)
    before = rss_mb(server.pids())
    with rss_sampler(server) as samples:  # until the end: the watchers read the new log after the reader
        started = time.perf_counter()
        with psycopg.connect(url) as conn, conn.transaction():
            inserted = conn.execute(BIG_INSERT, (ids, first, last)).rowcount
        committed = time.perf_counter() - started
        logged = wait_for_shape_log(url, logged_before + inserted, timeout_s=900)
        at_logged = rss_mb(server.pids())
        time.sleep(settle_s)
    return {"rows": inserted, "commit_s": committed, "logged_s": logged, "before": before, "peak": max(samples),
            "at_logged": at_logged, "after": rss_mb(server.pids())}


# --- the device ---------------------------------------------------------------------------------------------------


def login(home: Path, base: str, username: str, password: str) -> None:
    measured(home, "login", "--server", base, "--username", username, "--password-stdin", stdin=password + "\n")


def noop_syncs(homes: list[Path], runs: int) -> list[float]:
    """The median no-op `pulse sync` of each home, their runs taken in turn (the machine's load moves)."""
    walls: list[list[float]] = [[] for _ in homes]
    for _ in range(runs):
        for home, samples in zip(homes, walls, strict=True):
            samples.append(measured(home, "sync").wall_s)
    return [statistics.median(samples) for samples in walls]


def agent_rounds(home: Path, server: Server, plan: Plan, work: Path) -> dict[str, Any]:
    """The idle `pulse agent`: the CPU of its start (the first round, and the check against the server's
    digests it makes at start and then hourly), then the CPU per round over `agent_rounds` intervals.

    Quiet = 3 s in which it used under 0.1 s of CPU: the start's work is done. Rounds start every
    `agent_interval` seconds, so the window holds that many (and the idle time between them: the
    live pull, the outbox watch)."""
    log = work / "agent.log"
    before = agent_last_sync(home)
    time.sleep(1.1)  # last_sync has one-second resolution: the agent's first round must change it
    with running_agent(home, plan.agent_interval, log) as proc:
        settle(proc, home, server, before, log, timeout_s=300)
        samples = [sample(proc.pid)]
        while time.monotonic() - samples[0].at < 600:
            time.sleep(1.0)
            samples.append(sample(proc.pid))
            if len(samples) > 3 and samples[-1].cpu_ticks - samples[-4].cpu_ticks < 0.1 * CLOCK_TICKS:
                break
        first = samples[-1]
        time.sleep(plan.agent_interval * plan.agent_rounds + min(5.0, plan.agent_interval / 2))
        last = sample(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    cpu = (last.cpu_ticks - first.cpu_ticks) / CLOCK_TICKS
    return {"rounds": plan.agent_rounds, "cpu_per_round": cpu / plan.agent_rounds, "window_s": last.at - first.at,
            "start_cpu": first.cpu_ticks / CLOCK_TICKS, "rss_start": first.rss_kb / 1024, "rss_end": last.rss_kb / 1024}


def team_pdf(home: Path, start: dt.date, end: dt.date, out: Path) -> dict[str, float]:
    run = measured(home, "report", "--team", "--from", start.isoformat(), "--to", end.isoformat(), "--format", "pdf",
                   "-o", str(out))
    pages = len(PAGE.findall(out.read_bytes()))
    return {"wall": run.wall_s, "pages": pages, "per_page_ms": run.wall_s / pages * 1000, "peak": run.peak_mb,
            "mb": out.stat().st_size / 1e6}


def history_home(home: Path, days: int, end: dt.date) -> int:
    """An athlete's own device store with `days` days ending `end`, about 9 in 10 logged, as a sync leaves it."""
    from decimal import Decimal

    from pulse_cli.store.connection import open_store
    from pulse_cli.store.entries import SqliteEntryRepository
    from pulse_core.entry import Entry
    from pulse_core.score import rescore

    rng = random.Random(10)
    conn = open_store(home)
    written = 0
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        repo = SqliteEntryRepository(conn)
        for i in range(days):
            if rng.random() < 0.1:
                continue
            entry = Entry(user="", date=end - dt.timedelta(days=i))
            entry.sleep_hours = Decimal(f"{rng.uniform(4, 10):.2f}")
            entry.steps = rng.randrange(0, 20000)
            entry.hrv_ms, entry.hrv_method = Decimal(f"{rng.uniform(30, 90):.2f}"), "rmssd"
            if rng.random() < 0.3:
                entry.weight_kg = Decimal(f"{rng.uniform(60, 70):.1f}")
            if rng.random() < 0.2:
                entry.note = rng.choice(("easy run", "long ride with the club over the hills", "rest day"))
            for name in ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note"):
                if entry.value(name) is not None:
                    entry.stamps[name], entry.sources[name] = f"{1_750_000_000_000 + i:016d}:00000:dev", "manual"
            rescore(entry)
            repo.save(entry)
            written += 1
    conn.close()
    return written


# --- main -----------------------------------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


Results = list[tuple[str, str, str, bool | None]]


def device_figures(url: str, server: Server, plan: Plan, accounts: list[Account], end: dt.date, work: Path
                   ) -> Results:
    """Steps 1-5: the team seeded through the server, then the coach's and an athlete's devices."""
    rows = plan.athletes * plan.days
    results: Results = []
    base = f"http://127.0.0.1:{server.port}"
    password = secrets.token_urlsafe(12)
    make_coach(url, password, [a.user_id for a in accounts])
    add_athlete(url, "solo-bench", password)

    print("\n1. seeding through POST /v1/sync/push", flush=True)
    seconds, statuses = seed(server, accounts, plan.days, end)
    pushed = sum(statuses.values())
    print(f"  {pushed:,} mutations in {seconds:.1f} s ({pushed / seconds:,.0f}/s, batches of {BATCH},"
          f" {CONNECTIONS} connections): {dict(statuses)}")
    if statuses.get("applied", 0) != rows:
        raise RuntimeError(f"expected {rows:,} applied, got {dict(statuses)}")
    waited = wait_for_shape_log(url, rows, timeout_s=900)
    print(f"  in the shape log {waited:.1f} s after the last push; load average {load()}", flush=True)

    print("\n2. the coach's device: pulse login, the first pulse sync, a no-op pulse sync", flush=True)
    coach = work / "coach"
    login(coach, base, "coach-bench", password)
    first = measured(coach, "sync")
    print(f"  first sync: {first.wall_s:.2f} s, CPU {first.cpu_s:.2f} s, peak RSS {first.peak_mb:.0f} MB")
    solo = work / "solo"
    login(solo, base, "solo-bench", password)
    measured(solo, "log", "--steps", "9000", "--sleep", "7.5")
    measured(solo, "sync")
    coach_noop, solo_noop = noop_syncs([coach, solo], plan.noop_runs)
    ratio = coach_noop / solo_noop
    print(f"  no-op sync (median of {plan.noop_runs}, the two in turn): coach {coach_noop:.2f} s, an athlete"
          f" with one entry {solo_noop:.2f} s: {ratio:.2f}x; load average {load()}", flush=True)
    results += [("first sync peak RSS", "< 150 MB", f"{first.peak_mb:.0f} MB", first.peak_mb < 150),
                ("first sync time", "-", f"{first.wall_s:.1f} s", None),
                ("no-op sync: coach / one-entry athlete", "<= 1.5x", f"{ratio:.2f}x ({coach_noop:.2f} s /"
                 f" {solo_noop:.2f} s)", ratio <= 1.5)]

    print(f"\n3. the coach's idle pulse agent --interval {plan.agent_interval:g}", flush=True)
    agent = agent_rounds(coach, server, plan, work)
    print(f"  its start (the first round, and the check against the server's digests it makes at start and"
          f" hourly): CPU {agent['start_cpu']:.1f} s")
    print(f"  then {agent['rounds']} rounds ({agent['window_s']:.0f} s): CPU {agent['cpu_per_round']:.2f} s a"
          f" round; RSS {agent['rss_start']:.0f} -> {agent['rss_end']:.0f} MB; load average {load()}",
          flush=True)
    results += [("idle agent CPU a round", "-", f"{agent['cpu_per_round']:.2f} s (RSS"
                 f" {agent['rss_start']:.0f} -> {agent['rss_end']:.0f} MB)", None),
                ("agent start (first round, verify)", "-", f"CPU {agent['start_cpu']:.1f} s", None)]

    print("\n4. the team PDF on the coach's device", flush=True)
    month = team_pdf(coach, end - dt.timedelta(days=29), end, work / "month.pdf")
    year = team_pdf(coach, end - dt.timedelta(days=364), end, work / "year.pdf")
    for label, figures in (("30 days", month), ("365 days", year)):
        print(f"  {label}: {figures['wall']:.2f} s, {figures['pages']:.0f} pages, {figures['per_page_ms']:.1f}"
              f" ms a page, peak RSS {figures['peak']:.0f} MB, {figures['mb']:.1f} MB")
    per_page = year["per_page_ms"] / month["per_page_ms"]
    results += [("team PDF a page: year / month", "<= 3x", f"{per_page:.2f}x ({year['per_page_ms']:.0f} /"
                 f" {month['per_page_ms']:.0f} ms)", per_page <= 3),
                ("team PDF of the year", "-", f"{year['wall']:.1f} s, {year['pages']:.0f} pages, peak"
                 f" {year['peak']:.0f} MB", None)]
    print(f"  load average {load()}", flush=True)

    print(f"\n5. pulse history of {plan.history_days:,} days on a device of its own", flush=True)
    own = work / "history"
    logged = history_home(own, plan.history_days, end)
    span = ("--from", (end - dt.timedelta(days=plan.history_days - 1)).isoformat(), "--to", end.isoformat())
    table, as_json = measured(own, "history", *span), measured(own, "history", *span, "--json")
    print(f"  {logged:,} days logged: table {table.wall_s:.2f} s (peak RSS {table.peak_mb:.0f} MB),"
          f" JSON {as_json.wall_s:.2f} s (peak RSS {as_json.peak_mb:.0f} MB)", flush=True)
    results.append(("history of 10 years: table / JSON", "-", f"{table.wall_s:.2f} s / {as_json.wall_s:.2f} s",
                    None))
    return results


def server_memory(url: str, server: Server, plan: Plan, accounts: list[Account], end: dt.date) -> Results:
    """Step 6: the server's RSS around one transaction of as many rows as the seeding pushed."""
    rows = plan.athletes * plan.days
    results: Results = []
    print(f"\n6. the server's RSS around one INSERT ... SELECT of {rows:,} entries", flush=True)
    big = big_transaction(url, server, [a.user_id for a in accounts], plan.days, end, plan.settle_s)
    growth, left = big["peak"] - big["before"], big["after"] - big["before"]
    print(f"  {big['rows']:,} rows committed in {big['commit_s']:.1f} s, in the shape log"
          f" {big['logged_s']:.1f} s later; server RSS {big['before']:.0f} MB before, peak"
          f" {big['peak']:.0f} MB, {big['at_logged']:.0f} MB when logged, {big['after']:.0f} MB"
          f" {plan.settle_s:.0f} s later; load average {load()}")
    results += [("server RSS growth in the transaction", "< 150 MB", f"{growth:.0f} MB", growth < 150),
                (f"server RSS {plan.settle_s:.0f} s after", "within 50 MB of before", f"{left:+.0f} MB",
                 left <= 50)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 athletes x 365 days, shorter waits (~3 minutes)")
    parser.add_argument("--server-memory-only", action="store_true",
                        help="only the server's RSS around the big transaction (no seeding, no device)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    end = dt.date.today() - dt.timedelta(days=1)
    rows = plan.athletes * plan.days
    print(f"data at scale: {plan.athletes} athletes x {plan.days} days = {rows:,} entries; {os.cpu_count()} CPUs;"
          f" load average {load()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="pulse-scale-bench-"))
    results: Results = []
    try:
        with replication_database() as url, running_server(url, 1, READER_ENV) as server:
            wait_for_slot(url)
            accounts = create_athletes(url, plan.athletes)
            if not args.server_memory_only:
                results += device_figures(url, server, plan, accounts, end, work)
            results += server_memory(url, server, plan, accounts, end)
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, database dropped", file=sys.stderr)
        sys.exit(130)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'figure':<40} {'target':<24} {'measured':<36} verdict")
    for name, target, value, ok in results:
        print(f"{name:<40} {target:<24} {value:<36} {'' if ok is None else verdict(ok)}")
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
