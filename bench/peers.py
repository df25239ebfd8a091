"""pulse beside a peer (Kinto) and beside the raw Postgres limit: batched writes and an initial sync, in one run.

Run from the repo root (PostgreSQL with wal_level=logical at 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/peers.py                  # 15 s of writes a turn, 3 syncs a turn, 2 rounds
    .venv/bin/python bench/peers.py --quick          # 5 s of writes, 1 sync a turn: a smoke check
    .venv/bin/python bench/peers.py --workers 2 --duration 30 --runs 5

The four are measured in turns, interleaved (pulse, Kinto, limit, floor; then again), so that a machine
whose load changes during the run shifts all four alike; only the one being measured runs (each server is
started for its turn and stopped after it), and before each measurement the bench waits until that
server and its database's backends are idle (the replication reader has caught up).

What each turn measures:

  writes  16 clients (one user each) x 100 upserts a request, closed loop, for --duration s after a
          warm-up, from `--procs` load processes: `bench/push_load.py`'s load generator (raw HTTP/1.1 on
          asyncio) with a device of each kind below. The 100 upserts of a request are on 100 distinct
          days of a year (a fresh year a turn), each setting 1-3 of a day's fields, so that all four
          write the same rows:
            pulse  `POST /v1/sync/push`, 100 `set` mutations (pulse merges each field by its stamp).
            Kinto  `POST /v1/batch` of 100 `PUT /buckets/<user>/collections/entries/records/<day>`, each
                   the whole record as the client holds it (a PUT replaces a record, and a PATCH of a
                   record that does not exist yet is a 404, so a client upserts with PUT).
            limit  psycopg, one `INSERT INTO entries ... SELECT FROM unnest(<one array a column>)
                   ON CONFLICT (user_id, date) DO UPDATE` a request (autocommit: one transaction), the
                   whole rows as the client holds them, on 16 connections; into a pulse schema of its
                   own (no replication slot, no server).
            floor  the limit's statement with, in the same statement, one `applied_mutations` row a
                   mutation (what a retried push is answered from), into pulse's own database while
                   pulse-server runs, its replication reader and watcher following these writes into the
                   shape log as they follow pushes: no HTTP, no merge, no check. A correct push cannot do
                   less, so the floor's records/s is an upper bound of pulse's on this machine, now.
          The load processes share the two cores with the servers: making a row costs them 15-20 us of
          CPU whatever the system (the limit's arrays go as array literals, see `array_literal`), which
          bounds the limit most; the `cpu us/row` column leaves them out.
  sync    the initial sync of 100 athletes x 365 days (36,500 rows, seeded with SQL as
          `bench/shape_catchup.py` seeds them), --runs times, each from a fresh process, timed inside
          it from the first request to the last row applied to its copy:
            pulse  a coach's shape to up-to-date, exactly as `bench/shape_catchup.py` follows it.
            Kinto  a paginated GET of one collection holding the same 36,500 rows (the entries' columns
                   as JSON, written into Kinto's `objects` table with SQL; Kinto's own page size),
                   following `Next-Page`, bodies parsed with the same JSON parser (orjson).
            limit  `COPY (the shape's rows and columns) TO STDOUT` on pulse's database.

Printed: the push_load report of each write turn, a line per sync turn, then one table: records/s (the
writes' upserts answered OK in the window / its seconds; the sync's 36,500 rows / its median seconds),
p50/p95 a request (a write: one request of 100 upserts; a sync: one response of a catch-up, over all
runs), bytes a row (writes: request and response bodies over the upserts they carried, HTTP headers not
counted; sync: the response bytes as they came over the wire, the clients asking for gzip; the limit's
sync: COPY's text), the CPU that the server and its database's backends spent a row (from /proc, as
push_load counts it; steadier than records/s on a shared machine; the load processes and the sync
clients not counted, nor the limit's COPY, whose backend lives only for its run), pulse's records/s over
each other's in the same round, and the 1-minute load average after each turn; with the load average
before and after the run.

Kinto is installed with pip (`kinto[postgresql]` and gunicorn, the newest the package index has) into
a venv of its own, `<--work>/kinto-venv` (default bench/out/peers, ignored by git), reused when present.
It runs under gunicorn with as many worker processes as pulse-server (--workers), gunicorn's default
sync workers (--kinto-threads 4, its threaded workers, wrote no faster: 58-67 records/s either way, Kinto
spending 0.6-0.8 s of CPU on a request of 100 upserts), on a throwaway database of its own, with this
configuration, written to `<--work>/kinto.ini`:

    kinto.storage_backend / permission_backend / cache_backend: the postgresql ones, all on that database
    multiauth.policies = basicauth   (Kinto's built-in Basic auth: the user id is an HMAC of the user and
                                      password; no account to create, no password hash per request)
    kinto.batch_max_requests = 100   (its default is 25; a request here carries 100 upserts)
    logging: WARNING and above only  (pulse-server runs with PULSE_LOG_LEVEL=warning too)

Each user's records live in a bucket of their own (`writer-NN`, collection `entries`; the coach's
`coach`), made through Kinto's API before the first measurement. pulse-server runs with the replication
reader and the shape watcher on, as it does in production, on a throwaway database of its own; the
limit on a third. All three databases are dropped at the end, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _server import (
    Account,
    CpuSnapshot,
    Server,
    cpu_seconds,
    create_athletes,
    replication_database,
    started,
    throwaway_database,
    wait_for_slot,
)
from push_load import Bench, Device, Outcome, RawConnection, Scenario, _monitor, backend_pids, percentile
from shape_catchup import ATHLETES, DAYS, READER_ENV, copy_size, create_coach, run_client, seed_entries, wait_for_log

WRITERS = 16
BATCH = 100
ROWS = ATHLETES * DAYS
KINTO_PACKAGES = ("kinto[postgresql]", "gunicorn")
COACH_RECORDS = "/buckets/coach/collections/entries/records"
DEFAULT_WORK = Path(__file__).resolve().parent / "out" / "peers"
SYSTEMS = ("pulse", "Kinto", "limit", "floor")


# -- Kinto: its venv, its configuration, its server ----------------------------------------------------------


def kinto_venv(work: Path) -> Path:
    """`<work>/kinto-venv` with Kinto and gunicorn, installed by pip unless already there."""
    venv = work / "kinto-venv"
    if not all((venv / "bin" / name).exists() for name in ("kinto", "gunicorn")):
        print(f"installing {' '.join(KINTO_PACKAGES)} into {venv} ...", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *KINTO_PACKAGES], check=True)
    return venv


def installed(venv: Path) -> str:
    code = "import importlib.metadata as m; print(*(n + ' ' + m.version(n) for n in ('kinto', 'gunicorn')), sep=', ')"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


KINTO_INI = """\
# Written by bench/peers.py for one run (its docstring says why each setting).
[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.postgresql
kinto.storage_url = {url}
kinto.permission_backend = kinto.core.permission.postgresql
kinto.permission_url = {url}
kinto.cache_backend = kinto.core.cache.postgresql
kinto.cache_url = {url}
kinto.userid_hmac_secret = {secret}
multiauth.policies = basicauth
kinto.batch_max_requests = {batch}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain

[formatter_plain]
format = %(asctime)s %(levelname)s %(name)s %(message)s
"""


def kinto_config(work: Path, venv: Path, url: str) -> Path:
    """Kinto's ini for this run's database, and its schema (`kinto migrate`)."""
    ini = work / "kinto.ini"
    ini.write_text(KINTO_INI.format(url=url, secret=secrets.token_hex(16), batch=BATCH))
    subprocess.run([str(venv / "bin" / "kinto"), "migrate", "--ini", str(ini)], check=True, capture_output=True)
    return ini


class KintoServer(Server):
    """Kinto under gunicorn, N worker processes, in its own session like pulse-server."""

    name = "kinto"
    ready_path = "/v1/__heartbeat__"  # answers 200 once the storage, permission and cache backends answer

    def __init__(self, url: str, workers: int, venv: Path, ini: Path, threads: int = 1) -> None:
        super().__init__(url, workers)
        self.venv, self.ini, self.threads = venv, ini, threads

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "gunicorn"), "--paste", str(self.ini), "--workers", str(self.workers),
                "--threads", str(self.threads), "--bind", f"127.0.0.1:{self.port}"]


def basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def kinto_put(port: int, credentials: str, path: str) -> None:
    """Create a bucket or collection unless it exists (`If-None-Match: *`: a second round keeps the first's)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1{path}", method="PUT", data=b"{}", headers={
        "Authorization": f"Basic {credentials}", "Content-Type": "application/json", "If-None-Match": "*"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 412:  # 412: it exists already
            raise


def seed_kinto(pulse_url: str, kinto_url: str, athlete_ids: list[int]) -> None:
    """The coach's 36,500 rows from pulse's `entries` as Kinto records of one collection: every column of the
    shape as JSON (numbers as numbers), id `<user>-<day>`; Kinto's trigger stamps `last_modified`."""
    import psycopg

    query = ("SELECT e.user_id || '-' || e.date, (to_jsonb(e) - 'updated_at') || jsonb_build_object("
             "'username', u.username) FROM entries e JOIN users u ON u.id = e.user_id WHERE e.user_id = ANY(%s)"
             " ORDER BY e.user_id, e.date")
    with psycopg.connect(pulse_url) as source:
        rows = source.execute(query, (athlete_ids,)).fetchall()
    parent = COACH_RECORDS.rsplit("/", 1)[0]
    with psycopg.connect(kinto_url) as target, target.cursor() as cursor, \
            cursor.copy("COPY objects (id, parent_id, resource_name, data, deleted) FROM STDIN") as copy:
        for record_id, data in rows:
            copy.write_row((record_id, parent, "record", json.dumps(data), False))
    if len(rows) != ROWS:
        raise RuntimeError(f"seeded {len(rows)} Kinto records, expected {ROWS}")


# -- the devices: push_load's load processes run them (one per simulated client) -----------------------------


class PulseDevice(Device):
    """push_load's device, its 100 mutations a request on 100 distinct days (Kinto's batch and the limit's
    single statement write each row once a request; so does this)."""

    def mutations(self) -> list[dict[str, Any]]:
        return [self.mutation(day) for day in self.rng.sample(self.days, self.batch)]


class KintoDevice(PulseDevice):
    """The same mutations as a Kinto batch of PUTs, each the day's whole record as this client holds it."""

    def __init__(self, token: str, client_id: str, batch: int, days: list[str], seed: int) -> None:
        super().__init__(token, client_id, batch, days, seed)
        self.bucket = base64.b64decode(token).decode().split(":", 1)[0]
        self.records: dict[str, dict[str, Any]] = {}

    def body(self) -> bytes:
        requests = []
        for mutation in self.mutations():
            day = mutation["date"]
            record = self.records.setdefault(day, {"date": day})
            record.update(mutation["fields"])
            requests.append({"path": f"/buckets/{self.bucket}/collections/entries/records/{day}",
                             "body": {"data": record}})
        return json.dumps({"defaults": {"method": "PUT"}, "requests": requests}, separators=(",", ":")).encode()

    def accepted(self, reply: bytes) -> int:
        return sum(1 for answer in json.loads(reply)["responses"] if answer["status"] < 300)


class KintoConnection(RawConnection):
    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        self.head = (f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()


STAMPED = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note")
LIMIT_TYPES = {"sleep_hours": "numeric", "hrv_ms": "numeric", "hrv_method": "text", "steps": "int4",
               "weight_kg": "numeric", "note": "text", **{f"{f}_{k}": "text" for f in STAMPED for k in ("hlc", "src")}}
LIMIT_COLUMNS = tuple(LIMIT_TYPES)
LIMIT_UPSERT = (
    f"INSERT INTO entries (user_id, date, {', '.join(LIMIT_COLUMNS)}, deleted, updated_at)"
    f" SELECT *, false, now() FROM unnest(%s::int8[], %s::date[],"
    f" {', '.join(f'%s::{LIMIT_TYPES[c]}[]' for c in LIMIT_COLUMNS)})"
    f" ON CONFLICT (user_id, date) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in LIMIT_COLUMNS)},"
    " updated_at = excluded.updated_at"
)  # constant text: the values travel as parameters


# The floor: the limit's upsert and, in the same statement (one transaction), the one row a mutation that
# exactly-once delivery needs (docs/sync.md: a retried push is answered from `applied_mutations`).
FLOOR_WRITE = (
    f"WITH upserted AS ({LIMIT_UPSERT} RETURNING 1)"
    " INSERT INTO applied_mutations (user_id, client_id, seq, result, date, applied_at)"
    " SELECT %s::int8, %s::text, m.seq, jsonb_build_object('seq', m.seq, 'status', 'applied'), m.date, now()"
    " FROM unnest(%s::int8[], %s::date[]) AS m(seq, date)"
)  # constant text: the values travel as parameters


def array_literal(values: list[Any]) -> str:
    """A Postgres array literal, every element quoted: psycopg's own list dumping cost the load processes
    29-32 us a row (17 lists of 100 values), as much as Postgres spent on the upsert; this costs 5.6 us."""
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' if v is not None else "NULL" for v in values)
    return "{" + ",".join(quoted) + "}"


class LimitDevice(PulseDevice):
    """The same mutations as whole rows (values, stamps, sources) in column arrays for LIMIT_UPSERT."""

    def __init__(self, token: str, client_id: str, batch: int, days: list[str], seed: int) -> None:
        super().__init__(token, client_id, batch, days, seed)
        self.user_id = int(token)
        self.rows: dict[str, dict[str, Any]] = {}

    def body(self) -> list[str]:  # type: ignore[override]
        days = []
        self.sent: list[int] = []  # the request's seqs, in the order of its days
        for mutation in self.mutations():
            row = self.rows.setdefault(mutation["date"], dict.fromkeys(LIMIT_COLUMNS))
            for name, value in mutation["fields"].items():
                row[name] = value
                if name in STAMPED:
                    row[f"{name}_hlc"], row[f"{name}_src"] = mutation["hlc"], self.client_id
            days.append(mutation["date"])
            self.sent.append(mutation["seq"])
        columns = [[self.user_id] * len(days), days, *([self.rows[d][c] for d in days] for c in LIMIT_COLUMNS)]
        return [array_literal(column) for column in columns]

    def accepted(self, reply: bytes) -> int:
        return self.batch

    def count_wire(self, body: Any, reply: bytes) -> None:
        self.wire_records += self.batch  # no HTTP bodies: its bytes a row are not shown


class FloorDevice(LimitDevice):
    """The limit's rows, with each mutation's record for FLOOR_WRITE (its seq and day)."""

    def body(self) -> list[str]:  # type: ignore[override]
        columns = super().body()
        return [*columns, str(self.user_id), self.client_id, array_literal(self.sent), columns[1]]


class LimitConnection:
    """One psycopg connection (autocommit: each statement its own transaction), in push_load's shape."""

    statement = LIMIT_UPSERT

    def __init__(self, url: str, port: int, token: str) -> None:
        self.url = url
        self.conn: Any = None

    async def connect(self) -> None:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    def reset(self) -> None:
        if self.conn is not None:
            self.conn.pgconn.finish()  # synchronous close: push_load resets from plain functions
        self.conn = None

    async def post(self, body: list[str]) -> tuple[int, bytes]:
        if self.conn is None:
            await self.connect()
        await self.conn.execute(self.statement, body)
        return 200, b""


class FloorConnection(LimitConnection):
    statement = FLOOR_WRITE


class NoServer:
    """The limit's turn has no server: nothing to charge CPU to, no log."""

    port = 0

    def pids(self) -> set[int]:
        return set()

    def log_tail(self, lines: int = 30) -> str:
        return ""


# -- the initial sync from Kinto (a separate process, like shape_catchup's client) ---------------------------


def follow_kinto(base_url: str, credentials: str) -> dict[str, object]:
    """Every record of the coach's collection, page by page (`Next-Page`), into an in-memory copy by id."""
    import httpx

    from sync.shape_client import decode_json  # the same parser as the pulse client's

    size = 0
    copy: dict[str, dict[str, Any]] = {}
    requests: list[tuple[str, float, float, float, float, int]] = []
    headers = {"Authorization": f"Basic {credentials}", "Accept-Encoding": "gzip"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        http.get("/v1/__lbheartbeat__")  # a connection open before the clock starts, as for pulse
        url: str | None = f"/v1{COACH_RECORDS}"
        started_at = time.perf_counter()
        page = 0
        while url:
            sent = time.perf_counter()
            with http.stream("GET", url) as reply:
                headers_at = time.perf_counter()
                body = reply.read()
                body_at = time.perf_counter()
            if reply.status_code != 200:
                raise RuntimeError(f"{reply.status_code}: {body[:200]!r}")
            records = decode_json(body)["data"]
            parsed_at = time.perf_counter()
            for record in records:
                copy[record["id"]] = record
            size += reply.num_bytes_downloaded
            requests.append((f"page {page}", time.perf_counter() - sent, headers_at - sent, body_at - sent,
                             parsed_at - sent, reply.num_bytes_downloaded))
            url = reply.headers.get("next-page")
            page += 1
        elapsed = time.perf_counter() - started_at
    return {"seconds": elapsed, "bytes": size, "rows": len(copy), "requests": requests}


def run_kinto_client(base_url: str, credentials: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--follow-kinto", base_url]
    done = subprocess.run(command, input=credentials, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Kinto client failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the turns ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str  # "writes" | "sync"
    system: str
    round: int
    records_s: float
    p50_ms: float
    p95_ms: float
    bytes_row: float | None
    seconds: float  # writes: the measured window; sync: the median catch-up
    cpu_us: float | None  # CPU of the server and its database's backends a row, in microseconds
    load: float  # 1-minute load average at the end of the turn


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def wait_quiet(pids: Callable[[], set[int]], monitor: Any, database: str, limit_s: float = 180.0) -> float:
    """Until the server and its database's backends use under 5% of a core over a second (a reader catching
    up, a worker still importing); the seconds waited."""
    started_at = time.monotonic()
    before = CpuSnapshot.take()
    while time.monotonic() - started_at < limit_s:
        time.sleep(1.0)
        after = CpuSnapshot.take()
        used = cpu_seconds(before, after, pids() | backend_pids(monitor, database))
        if used / (after.at - before.at) < 0.05:
            break
        before = after
    return time.monotonic() - started_at


@dataclass
class Setup:
    """The three databases and what each system's turns need."""

    args: argparse.Namespace
    pulse_url: str
    kinto_url: str
    limit_url: str
    monitor: Any
    venv: Path
    ini: Path
    athlete_ids: list[int] = field(default_factory=list)
    coach_token: str = ""
    coach_credentials: str = ""
    writers: dict[str, list[Account]] = field(default_factory=dict)
    benches: dict[str, Bench] = field(default_factory=dict)
    seeded: bool = False
    kinto_ready: bool = False
    rows: list[Row] = field(default_factory=list)

    def prepare(self) -> None:
        accounts = create_athletes(self.pulse_url, ATHLETES)
        self.athlete_ids = [a.user_id for a in accounts]
        self.coach_token = create_coach(self.pulse_url, self.athlete_ids)
        password = secrets.token_urlsafe(12)
        self.writers = {
            "pulse": create_athletes(self.pulse_url, WRITERS, prefix="writer"),
            "Kinto": [Account(f"writer-{i:02d}", i, basic(f"writer-{i:02d}", password)) for i in range(WRITERS)],
            "limit": [Account(a.username, a.user_id, str(a.user_id))
                      for a in create_athletes(self.limit_url, WRITERS, prefix="writer")],
            "floor": [Account(a.username, a.user_id, str(a.user_id))
                      for a in create_athletes(self.pulse_url, WRITERS, prefix="floor")],
        }
        self.coach_credentials = basic("coach", password)

    def bench(self, system: str, url: str, server: Any) -> Bench:
        """One Bench a system for the whole run: each of its turns writes a year of days of its own."""
        if system not in self.benches:
            device, connection = {"pulse": (PulseDevice, RawConnection), "Kinto": (KintoDevice, KintoConnection),
                                  "limit": (LimitDevice, functools.partial(LimitConnection, url)),
                                  "floor": (FloorDevice, functools.partial(FloorConnection, url))}[system]
            self.benches[system] = Bench(self.args, url, self.writers[system], server, self.monitor, device,
                                         connection)
        bench = self.benches[system]
        bench.server = server
        return bench

    def writes(self, system: str, round_: int, url: str, server: Any) -> None:
        waited = wait_quiet(server.pids, self.monitor, url.rsplit("/", 1)[1])
        print(f"\n== round {round_}, {system}: writes (load {load_average()}; {waited:.0f} s to quiet)", flush=True)
        outcome: Outcome = self.bench(system, url, server).run(
            Scenario("a", f"{system}: {WRITERS} clients x {BATCH} upserts, closed", "closed", WRITERS, BATCH))
        report = outcome.report
        per_row = report.wire_bytes / report.wire_records if report.wire_bytes and report.wire_records else None
        used = outcome.cpu["server"] + outcome.cpu["pg backends"]
        cpu = used / report.mutations * 1e6 if report.mutations else None
        self.rows.append(Row("writes", system, round_, outcome.mps, outcome.pct(50), outcome.pct(95), per_row,
                             outcome.duration, cpu, os.getloadavg()[0]))
        sys.stdout.flush()

    def sync(self, system: str, round_: int, url: str, server: Any, follow: Callable[[], dict[str, Any]]) -> None:
        """A sync turn: `follow()` --runs times, each giving {seconds, bytes, rows, requests}."""
        database = url.rsplit("/", 1)[1]
        wait_quiet(server.pids, self.monitor, database)
        pids = server.pids() | backend_pids(self.monitor, database)
        before = CpuSnapshot.take()
        runs = [follow() for _ in range(self.args.runs)]
        after = CpuSnapshot.take()
        pids |= server.pids() | backend_pids(self.monitor, database)
        # The limit's COPY has a connection (a backend) of its own each run, gone before `after`: not counted.
        cpu = cpu_seconds(before, after, pids) / len(runs) / ROWS * 1e6 if system != "limit" else None
        for run in runs:
            if run["rows"] != ROWS:
                raise RuntimeError(f"{system}'s sync ended with {run['rows']} rows, expected {ROWS}")
        seconds = statistics.median(float(r["seconds"]) for r in runs)
        latencies = sorted(float(q[1]) for r in runs for q in r["requests"])
        per_row = statistics.median(int(r["bytes"]) for r in runs) / ROWS
        self.rows.append(Row("sync", system, round_, ROWS / seconds, percentile(latencies, 50) * 1000,
                             percentile(latencies, 95) * 1000, per_row, seconds, cpu, os.getloadavg()[0]))
        each = ", ".join(f"{float(r['seconds']):.3f}" for r in runs)
        print(f"== round {round_}, {system}: sync of {ROWS} rows: median {seconds:.3f} s over {len(runs)} runs"
              f" ({each} s), {len(runs[0]['requests'])}"
              f" requests a run, {per_row:.0f} bytes a row (load {load_average()})", flush=True)

    def pulse_turn(self, round_: int) -> None:
        server = Server(self.pulse_url, self.args.workers, READER_ENV)
        with started(server):
            if not self.seeded:
                wait_for_slot(self.pulse_url)
                seeded = seed_entries(self.pulse_url, self.athlete_ids)
                logged = wait_for_log(self.pulse_url, ROWS)
                seed_kinto(self.pulse_url, self.kinto_url, self.athlete_ids)
                print(f"seeded {ROWS} rows in {seeded:.2f} s (in pulse's shape log {logged:.2f} s later; the same"
                      " rows as Kinto records)", flush=True)
                self.seeded = True
            self.writes("pulse", round_, self.pulse_url, server)
            base_url = f"http://127.0.0.1:{server.port}"
            self.sync("pulse", round_, self.pulse_url, server, lambda: run_client(base_url, self.coach_token, None))

    def kinto_turn(self, round_: int) -> None:
        server = KintoServer(self.kinto_url, self.args.workers, self.venv, self.ini, self.args.kinto_threads)
        with started(server):
            if not self.kinto_ready:
                for account in self.writers["Kinto"]:
                    kinto_put(server.port, account.token, f"/buckets/{account.username}")
                    kinto_put(server.port, account.token, f"/buckets/{account.username}/collections/entries")
                kinto_put(server.port, self.coach_credentials, "/buckets/coach")
                kinto_put(server.port, self.coach_credentials, "/buckets/coach/collections/entries")
                self.kinto_ready = True
            self.writes("Kinto", round_, self.kinto_url, server)
            base_url = f"http://127.0.0.1:{server.port}"
            self.sync("Kinto", round_, self.kinto_url, server,
                      lambda: run_kinto_client(base_url, self.coach_credentials))

    def limit_turn(self, round_: int) -> None:
        self.writes("limit", round_, self.limit_url, NoServer())

        def copy() -> dict[str, Any]:
            size, seconds = copy_size(self.pulse_url, self.athlete_ids, None)
            return {"seconds": seconds, "bytes": size, "rows": ROWS, "requests": [("copy", seconds)]}

        self.sync("limit", round_, self.pulse_url, NoServer(), copy)

    def floor_turn(self, round_: int) -> None:
        """The limit's statement plus what exactly-once needs, in pulse's database while pulse-server runs (its
        replication reader and watcher follow these writes into the shape log, as they follow pushes): no
        HTTP, no merge. No correct pulse write can do less; its records/s bounds pulse's from above."""
        with started(Server(self.pulse_url, self.args.workers, READER_ENV)) as server:
            self.writes("floor", round_, self.pulse_url, server)


# -- the table ------------------------------------------------------------------------------------------------


def table(rows: list[Row], before: str, after: str, args: argparse.Namespace) -> str:
    by = {(r.what, r.system, r.round): r for r in rows}
    lines = [f"peers: --workers {args.workers}, writes {WRITERS} clients x {BATCH} upserts for {args.duration:g} s,"
             f" sync {ROWS:,} rows x {args.runs} a turn; {os.cpu_count()} CPUs; load average before {before},"
             f" after {after}",
             f"  {'':<7} {'':<6} {'round':>5} {'records/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'bytes/row':>9}"
             f" {'seconds':>8} {'cpu us/row':>10} {'pulse/this':>10} {'load':>5}"]
    for what in ("writes", "sync"):
        for round_ in range(1, args.rounds + 1):
            pulse = by.get((what, "pulse", round_))
            for system in SYSTEMS:
                r = by.get((what, system, round_))
                if r is None:
                    continue
                ratio = f"{pulse.records_s / r.records_s:.3g}x" if pulse and r.records_s and system != "pulse" else ""
                size = f"{r.bytes_row:.0f}" if r.bytes_row else "-"
                p50, p95 = (f"{ms:.1f}" if ms == ms else "-" for ms in (r.p50_ms, r.p95_ms))  # NaN: no answer
                cpu = f"{r.cpu_us:.1f}" if r.cpu_us is not None else "-"
                lines.append(f"  {what:<7} {system:<6} {round_:>5} {r.records_s:>10,.0f} {p50:>8}"
                             f" {p95:>8} {size:>9} {r.seconds:>8.2f} {cpu:>10} {ratio:>10} {r.load:>5.2f}")
    for system in SYSTEMS[1:]:
        records = ratios(by, system, args.rounds, lambda r: r.records_s)
        cpu = ratios(by, system, args.rounds, lambda r: r.cpu_us)
        lines.append(f"  pulse/{system}: records/s {records}" + (f"; cpu a row {cpu}" if cpu else ""))
    return "\n".join(lines)


def ratios(by: dict[tuple[str, str, int], Row], system: str, rounds: int,
           figure: Callable[[Row], float | None]) -> str:
    """pulse's figure over the other's, the range over the rounds, for writes and sync ("" if none)."""
    parts = []
    for what in ("writes", "sync"):
        values = []
        for n in range(1, rounds + 1):
            pulse, other = by.get((what, "pulse", n)), by.get((what, system, n))
            a, b = (figure(pulse) if pulse else None), (figure(other) if other else None)
            if a and b:
                values.append(a / b)
        values.sort()
        if values:
            parts.append(f"{what} {values[0]:.3g}x" + (f"-{values[-1]:.3g}x" if len(values) > 1 else ""))
    return ", ".join(parts)


# -- main -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def databases() -> Iterator[tuple[str, str, str]]:
    with replication_database() as pulse_url, \
            throwaway_database(prefix="kinto_bench", migrated=False) as kinto_url, \
            throwaway_database(prefix="pulse_bench_limit") as limit_url:
        yield pulse_url, kinto_url, limit_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds of writes a turn (default 15)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of pulse-server and of Kinto's"
                        " gunicorn (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="initial syncs a turn, each from a fresh process")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of turns: pulse, Kinto, limit (default 2)")
    parser.add_argument("--quick", action="store_true", help="5 s of writes, 1 sync a turn: a smoke check")
    parser.add_argument("--kinto-threads", type=int, default=1, help="threads a gunicorn worker (default 1:"
                        " gunicorn's sync workers; more: its gthread workers)")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each write window")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help=f"Kinto's venv and ini (default {DEFAULT_WORK})")
    parser.add_argument("--follow-kinto", metavar="URL", help=argparse.SUPPRESS)  # internal: be Kinto's client
    args = parser.parse_args()
    if args.follow_kinto:
        print(json.dumps(follow_kinto(args.follow_kinto, sys.stdin.readline().strip())))
        return
    if args.quick:  # not shorter: Kinto's first answers came after 3-4 s on a busy 2-core machine
        args.duration, args.runs = min(args.duration, 5.0), 1
    # what push_load's Bench reads besides the above
    args.client, args.timeout, args.pg_waits = "raw", 30.0, False

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, terminate)
    venv = kinto_venv(args.work)
    before = load_average()
    print(f"peers: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {installed(venv)}; load average {before}",
          flush=True)
    try:
        with databases() as (pulse_url, kinto_url, limit_url), _monitor(pulse_url) as monitor:
            ini = kinto_config(args.work, venv, kinto_url)
            setup = Setup(args, pulse_url, kinto_url, limit_url, monitor, venv, ini)
            setup.prepare()
            for round_ in range(1, args.rounds + 1):
                setup.pulse_turn(round_)
                setup.kinto_turn(round_)
                setup.limit_turn(round_)
                setup.floor_turn(round_)
            print("\n" + table(setup.rows, before, load_average(), args), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, databases dropped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
