"""Load test of `POST /v1/sync/push`: a real `pulse-server` on a throwaway database, loaded from separate processes.

Run from the repo root (PostgreSQL at PGHOST:PGPORT, default 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/push_load.py                  # 15 s per scenario, --workers 1
    .venv/bin/python bench/push_load.py --workers 2
    .venv/bin/python bench/push_load.py --quick          # ~3 s per scenario: a smoke check
    .venv/bin/python bench/push_load.py --client httpx   # load from httpx instead of raw HTTP/1.1 sockets

(raw sockets are the default: httpx cost the load generator 3.5-7 ms of CPU per single-mutation request,
as much as the server, against 0.2-0.4 ms for the raw client, and capped the measured maximum.)

It creates `pulse_bench_<random>`, migrates it, creates 200 athletes with tokens, starts
`pulse-server serve --workers N` (PULSE_LOG_LEVEL=warning) and drops the database at the end, even on
error or Ctrl-C. The load comes from `--procs` separate processes (asyncio, one keep-alive connection
per simulated device); each scenario runs a short warm-up, then measures for `--duration` seconds:

  a. batch     16 devices (one user each) pushing 100 `set` mutations per request, closed loop.
  b. single    200 devices pushing 1 mutation per request, closed loop: the maximum requests/s.
     open-loop the same 200 devices at 50% and 90% of that maximum and at 500 requests/s: requests
     are sent on a fixed timetable whatever the responses, and latency is measured from the scheduled
     send time (a device sends one request at a time, so a slow server shows as queueing, not as a
     lower send rate). A request not answered within --timeout of its scheduled time is an error.

Mutations are valid: random fields (sleep, HRV, steps, weight, note) on random dates of a year,
increasing seq and HLC, and `base` = the stamp this device last wrote for the field (plain overwrites,
no conflicts). Each scenario uses its own year of dates and new client ids.

Printed per scenario: requests/s, mutations/s, latency p50/p95/p99/max (successful requests), errors
by kind (with the first answer of each), the result statuses, and how the machine's CPU was shared
during the measured window: server processes; Postgres backends connected to the bench database (the
server's pool and its replication reader); the rest of Postgres (WAL writer, other databases); the
load generator; this script; everything else on the machine; idle (from /proc/<pid>/stat and
/proc/stat). Also transactions, rows and WAL per request (pg_stat_database, pg_stat_wal), and with
--pg-waits what the bench database's backends were doing (pg_stat_activity every 20 ms). A summary
table ends the run, with the issue's targets. Figures depend on the code: the header says which (to
measure another version, run its own bench from its own checkout and venv: the editable install's import
hook takes precedence over PYTHONPATH), and on what else the machine runs (a NOTE says when other
processes took more than 10% of the CPU).

Other options: --procs (load processes, default 2), --client raw|httpx, --pool-size (PULSE_POOL_SIZE),
--rate (the fixed open-loop rate, default 500), --warmup, --timeout, --pg-waits.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from _server import (
    Account,
    CpuSnapshot,
    cpu_seconds,
    create_athletes,
    machine_seconds,
    postgres_pids,
    running_server,
    throwaway_database,
)

PUSH_PATH = "/v1/sync/push"
FIELDS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note")
STATUSES = ("applied", "conflict", "duplicate", "rejected")


# --- the simulated device ----------------------------------------------------------------------------------


class Device:
    """One install: its own client id, increasing seq and HLC, and the stamps it last wrote (its `base`)."""

    def __init__(self, token: str, client_id: str, batch: int, days: list[str], seed: int) -> None:
        self.token = token
        self.client_id = client_id
        self.batch = batch
        self.days = days
        self.rng = random.Random(seed)
        self.seq = 0
        self.last_ms = 0
        self.counter = 0
        self.written: dict[tuple[str, str], str] = {}
        self.lock = asyncio.Lock()  # one request at a time, like the client engine
        self.wire_bytes = 0  # request and response bodies of the OK requests
        self.wire_records = 0  # ... and the mutations they carried

    def stamp(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self.last_ms:
            self.last_ms, self.counter = ms, 0
        else:
            self.counter += 1
        return f"{self.last_ms:016d}:{self.counter:05d}:{self.client_id}"

    def value(self, name: str) -> Any:
        rng = self.rng
        if name == "sleep_hours":
            return round(rng.uniform(4, 10), 2)
        if name == "hrv_ms":
            return round(rng.uniform(20, 150), 1)
        if name == "steps":
            return rng.randrange(0, 30_000)
        if name == "weight_kg":
            return round(rng.uniform(50, 110), 1)
        return f"bench note {self.seq}"

    def mutation(self, day: str | None = None) -> dict[str, Any]:
        self.seq += 1
        day = day or self.rng.choice(self.days)
        stamp = self.stamp()
        fields: dict[str, Any] = {}
        base: dict[str, str | None] = {}
        for name in self.rng.sample(FIELDS, self.rng.randint(1, 3)):
            fields[name] = self.value(name)
            if name == "hrv_ms":
                fields["hrv_method"] = "rmssd"
            base[name] = self.written.get((day, name))
            self.written[(day, name)] = stamp
        return {"seq": self.seq, "date": day, "op": "set", "fields": fields, "base": base, "hlc": stamp}

    def mutations(self) -> list[dict[str, Any]]:
        return [self.mutation() for _ in range(self.batch)]

    def body(self) -> bytes:
        mutations = self.mutations()
        return json.dumps({"protocol": 1, "client_id": self.client_id, "mutations": mutations},
                          separators=(",", ":")).encode()

    def accepted(self, reply: bytes) -> int:
        """The mutations an OK reply answered (bench/peers.py's devices for other servers count theirs)."""
        return reply.count(b'"status":"')

    def count_wire(self, body: Any, reply: bytes) -> None:
        self.wire_bytes += len(body) + len(reply)
        self.wire_records += self.batch


# --- HTTP: raw HTTP/1.1 on asyncio streams, or httpx -------------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection; a request on a connection the server had closed is retried once."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (f"POST {PUSH_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def reset(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        reused = self.writer is not None
        if not reused:
            await self.connect()
        try:
            return await self._exchange(body)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.reset()
            if not reused:
                raise
        await self.connect()
        return await self._exchange(body)

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise ConnectionError("response without content-length")
        length = int(head[start + 17:head.index(b"\r\n", start + 2)])
        reply = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in head:
            self.reset()
        return int(head[9:12]), reply


class HttpxConnection:
    """The same through a shared httpx.AsyncClient (its pool keeps one connection per busy device)."""

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    async def connect(self) -> None:
        await self.client.get("/healthz")

    def reset(self) -> None:
        pass

    async def post(self, body: bytes) -> tuple[int, bytes]:
        reply = await self.client.post(PUSH_PATH, content=body, headers=self.headers)
        return reply.status_code, reply.content


# --- one load process --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one load process does: its devices, closed or open loop, and the timing."""

    index: int
    mode: str  # "closed" | "open"
    devices: list[tuple[str, str]]  # (token, client_id)
    batch: int
    days: list[str]
    port: int
    client: str  # "raw" | "httpx"
    warmup: float
    duration: float
    timeout: float
    rate: float = 0.0  # open loop: this process's requests/s
    phase: float = 0.0  # open loop: offset of this process's timetable
    device: type[Device] = Device  # bench/peers.py passes its own for Kinto and the raw upsert
    connection: Any = RawConnection  # (port, token) -> connection, with --client raw


@dataclass
class Report:
    """What one load process measured (requests whose outcome falls in the window; see `Recorder`)."""

    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    ok: int = 0
    sent: int = 0
    answered: int = 0  # throughput: OK answers that arrived inside the window
    mutations: int = 0  # ... and the mutations in them
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lag: array.array[float] = field(default_factory=lambda: array.array("d"))  # open loop: generator's own delay
    samples: dict[str, str] = field(default_factory=dict)  # the first answer of each kind of error
    wire_bytes: int = 0  # request and response bodies of all OK requests, warm-up included
    wire_records: int = 0  # ... and the mutations they carried

    def add(self, other: Report) -> None:
        self.latencies.extend(other.latencies)
        self.lag.extend(other.lag)
        self.ok += other.ok
        self.sent += other.sent
        self.answered += other.answered
        self.mutations += other.mutations
        self.statuses.update(other.statuses)
        self.wire_bytes += other.wire_bytes
        self.wire_records += other.wire_records
        self.errors.update(other.errors)
        for kind, text in other.samples.items():
            self.samples.setdefault(kind, text)


async def push(device: Device, conn: RawConnection | HttpxConnection, deadline: float) -> tuple[int, bytes, str]:
    """One push of the device's next batch: (status, body, error kind or '')."""
    try:
        async with asyncio.timeout(deadline - time.monotonic()), device.lock:
            body = device.body()
            try:
                status, reply = await conn.post(body)
            except BaseException:
                conn.reset()  # a half-read response must not be read by the next request
                raise
    except TimeoutError:
        return 0, b"", "timeout"
    except Exception as exc:
        return 0, str(exc).encode()[:200], type(exc).__name__
    if status == 200:
        device.count_wire(body, reply)
    return status, reply, "" if status == 200 else f"http {status}"


def record(report: Report, latency: float, reply: bytes, error: str) -> None:
    """The outcome of a measured request: its latency if it succeeded, else the kind of error."""
    if error:
        report.errors[error] += 1
        report.samples.setdefault(error, reply[:200].decode(errors="replace"))
        return
    report.ok += 1
    report.latencies.append(latency)
    for name in STATUSES:
        report.statuses[name] += reply.count(b'"status":"%s"' % name.encode())


def answered(report: Report, device: Device, reply: bytes, error: str, done: float, t_measure: float,
             t_end: float) -> None:
    """Throughput: an OK answer that arrived inside the window, whenever it was sent."""
    if not error and t_measure <= done < t_end:
        report.answered += 1
        report.mutations += device.accepted(reply)


async def closed_loop(device: Device, conn: Any, plan: Plan, t_measure: float, t_end: float,
                      report: Report) -> None:
    """Push again as soon as the answer is in; count the requests that complete inside the window."""
    while (started := time.monotonic()) < t_end:
        _, reply, error = await push(device, conn, started + plan.timeout)
        done = time.monotonic()
        if t_measure <= done < t_end:
            report.sent += 1
            record(report, done - started, reply, error)
        answered(report, device, reply, error, done, t_measure, t_end)
        if error:
            await asyncio.sleep(0.05)  # do not spin on a refused connection


async def open_loop(devices: list[Device], conns: list[Any], plan: Plan, t0: float, t_measure: float,
                    t_end: float, report: Report) -> None:
    """Requests on a fixed timetable, round robin over the devices; latency from the scheduled time."""
    period = 1.0 / plan.rate
    pending: set[asyncio.Task[None]] = set()

    async def scheduled(i: int, at: float, measured: bool) -> None:
        _, reply, error = await push(devices[i], conns[i], at + plan.timeout)
        done = time.monotonic()
        if measured:
            record(report, done - at, reply, error)
        answered(report, devices[i], reply, error, done, t_measure, t_end)

    k = 0
    while (at := t0 + plan.phase + k * period) < t_end:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        measured = at >= t_measure
        if measured:
            report.sent += 1
            report.lag.append(time.monotonic() - at)
        task = asyncio.create_task(scheduled(k % len(devices), at, measured))
        pending.add(task)
        task.add_done_callback(pending.discard)
        k += 1
    if pending:
        await asyncio.wait(pending, timeout=plan.timeout + 2)
    for task in list(pending):
        task.cancel()
        report.errors["unfinished"] += 1


async def run_plan(plan: Plan, start: Connection) -> Report:
    devices = [plan.device(token, client_id, plan.batch, plan.days, seed=hash(client_id))
               for token, client_id in plan.devices]
    client = None
    if plan.client == "httpx":
        import httpx

        limit = len(devices) + 8
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{plan.port}", timeout=None,
                                   limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
        conns: list[Any] = [HttpxConnection(client, token) for token, _ in plan.devices]
    else:
        conns = [plan.connection(plan.port, token) for token, _ in plan.devices]
    try:
        await asyncio.gather(*(c.connect() for c in conns))  # connections open before the clock starts
        start.send("ready")
        t0: float = start.recv()  # blocking is fine: nothing else runs yet
        t_measure = t0 + plan.warmup
        t_end = t_measure + plan.duration
        report = Report()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        if plan.mode == "closed":
            await asyncio.gather(*(closed_loop(d, c, plan, t_measure, t_end, report)
                                   for d, c in zip(devices, conns, strict=True)))
        else:
            await open_loop(devices, conns, plan, t0, t_measure, t_end, report)
        report.wire_bytes = sum(d.wire_bytes for d in devices)
        report.wire_records = sum(d.wire_records for d in devices)
        return report
    finally:
        for conn in conns:
            conn.reset()
        if client is not None:
            await client.aclose()


def load_process(plan: Plan, start: Connection, results: Any) -> None:
    """Entry point of a load process (spawned): run the plan, put (index, Report) on the queue."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        report = runner.run(run_plan(plan, start))
    results.put((plan.index, report))


# --- the parent: scenarios, measurement, printing ----------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str
    devices: int
    batch: int
    rate: float = 0.0


@dataclass
class Outcome:
    scenario: Scenario
    duration: float
    report: Report
    cpu: dict[str, float]
    pg: dict[str, float]
    waits: Counter[str] | None = None
    server_log: str = ""
    queries: Counter[str] | None = None
    samples: int = 0

    @property
    def rps(self) -> float:
        return self.report.answered / self.duration

    @property
    def mps(self) -> float:
        return self.report.mutations / self.duration

    def pct(self, p: float) -> float:
        return percentile(sorted(self.report.latencies), p) * 1000

    def ms(self, p: float, width: int = 7) -> str:
        value = self.pct(p)
        return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width}.1f}"

    @property
    def errors(self) -> int:
        return sum(self.report.errors.values())


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class WaitSampler(threading.Thread):
    """What the bench database's backends are doing, every `interval` s (pg_stat_activity)."""

    def __init__(self, url: str, database: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.url, self.database, self.interval = url, database, interval
        self.stop = threading.Event()
        self.waits: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.samples = 0

    def run(self) -> None:
        import psycopg

        with psycopg.connect(admin_url(self.url), autocommit=True) as conn:
            query = ("SELECT state, wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
                     " FROM pg_stat_activity WHERE datname = %s"
                     " AND backend_type = 'client backend'")
            while not self.stop.wait(self.interval):
                rows = conn.execute(query, (self.database,)).fetchall()
                self.samples += 1
                for state, wtype, wevent, text in rows:
                    if state == "active":
                        self.waits[f"active: {wtype}:{wevent}" if wtype else "active: on CPU"] += 1
                        self.queries[text] += 1
                    else:
                        self.waits[str(state)] += 1


def pg_counters(conn: Any, database: str) -> dict[str, float]:
    row = conn.execute("SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_returned"
                       " FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()
    wal = conn.execute("SELECT wal_records, wal_bytes, wal_sync FROM pg_stat_wal").fetchone()
    keys = ("commits", "rollbacks", "inserted", "updated", "returned", "wal_records", "wal_bytes", "wal_syncs")
    return dict(zip(keys, (float(v) for v in (*row, *wal)), strict=True))


def backend_pids(conn: Any, database: str) -> set[int]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return {r[0] for r in rows}


def sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, accounts: list[Account], server: Any, monitor: Any,
                 device: type[Device] = Device, connection: Any = RawConnection) -> None:
        self.args = args
        self.device, self.connection = device, connection
        self.url = url
        self.database = url.rsplit("/", 1)[1]
        self.accounts = accounts
        self.server = server
        self.monitor = monitor
        self.ctx = mp.get_context("spawn")
        self.today = dt.datetime.now(dt.UTC).date()
        self.runs = 0

    def plans(self, sc: Scenario) -> list[Plan]:
        self.runs += 1
        # A year of dates of its own and new client ids per scenario: no device inherits another's entries.
        first = self.today - dt.timedelta(days=400 * self.runs)
        days = [(first - dt.timedelta(days=i)).isoformat() for i in range(365)]
        tag = os.urandom(3).hex()
        devices = [(a.token, f"bench{self.runs}-{tag}-{i:03d}") for i, a in enumerate(self.accounts[:sc.devices])]
        procs = min(self.args.procs, len(devices))
        plans = []
        for p in range(procs):
            plans.append(Plan(index=p, mode=sc.mode, devices=devices[p::procs], batch=sc.batch, days=days,
                              port=self.server.port, client=self.args.client, warmup=self.args.warmup,
                              duration=self.args.duration, timeout=self.args.timeout,
                              rate=sc.rate / procs, phase=p / sc.rate if sc.rate else 0.0,
                              device=self.device, connection=self.connection))
        return plans

    def run(self, sc: Scenario) -> Outcome:
        plans = self.plans(sc)
        results = self.ctx.Queue()
        workers, pipes = [], []
        try:
            for plan in plans:
                ours, theirs = self.ctx.Pipe()
                proc = self.ctx.Process(target=load_process, args=(plan, theirs, results), daemon=True)
                proc.start()
                workers.append(proc)
                pipes.append(ours)
            for pipe in pipes:
                if not pipe.poll(60):
                    raise RuntimeError("a load process did not get ready within 60 s")
                pipe.recv()
            t0 = time.monotonic() + 0.2
            for pipe in pipes:
                pipe.send(t0)
            t_measure = t0 + self.args.warmup
            t_end = t_measure + self.args.duration
            sampler = WaitSampler(self.url, self.database) if self.args.pg_waits else None

            sleep_until(t_measure)
            pids = backend_pids(self.monitor, self.database)
            pg_before = pg_counters(self.monitor, self.database)
            before = CpuSnapshot.take()
            if sampler:
                sampler.start()
            sleep_until(t_end)
            after = CpuSnapshot.take()
            pg_after = pg_counters(self.monitor, self.database)
            if sampler:
                sampler.stop.set()
                sampler.join()
            pids |= backend_pids(self.monitor, self.database)

            report = Report()
            for _ in plans:
                _, part = results.get(timeout=self.args.timeout + 30)
                report.add(part)
            for proc in workers:
                proc.join(10)
        finally:
            for proc in workers:
                if proc.is_alive():
                    proc.terminate()  # only the load processes started above
                    proc.join(5)
        window = after.at - before.at
        postgres = postgres_pids(after) | postgres_pids(before)
        busy, total = machine_seconds(before, after)
        cpu = {
            "server": cpu_seconds(before, after, self.server.pids()),
            "pg backends": cpu_seconds(before, after, pids),
            "pg other": cpu_seconds(before, after, postgres - pids),
            "load gen": cpu_seconds(before, after, [w.pid for w in workers if w.pid is not None]),
            "bench": cpu_seconds(before, after, [os.getpid()]),
        }
        cpu["rest"] = max(0.0, busy - sum(cpu.values()))
        cpu["idle"] = total - busy
        cpu["total"] = total
        pg = {k: pg_after[k] - pg_before[k] for k in pg_before}
        outcome = Outcome(sc, window, report, cpu, pg, server_log=self.server.log_tail(6))
        if sampler:
            outcome.waits, outcome.queries, outcome.samples = sampler.waits, sampler.queries, sampler.samples
        show(outcome)
        return outcome


def show(o: Outcome) -> None:
    r, sc = o.report, o.scenario
    print(f"\n[{sc.key}] {sc.title}  ({o.duration:.1f} s measured)")
    if sc.mode == "open":
        print(f"  scheduled {r.sent / o.duration:8.1f} req/s   answered OK in the window {o.rps:8.1f} req/s")
    else:
        print(f"  requests  {o.rps:8.1f} req/s")
    print(f"  mutations {o.mps:8.1f} /s   ({r.mutations} in {r.answered} OK answers)")
    print(f"  latency ms  p50 {o.ms(50)}  p95 {o.ms(95)}  p99 {o.ms(99)}  max {o.ms(100)}"
          + ("   (from the scheduled send time)" if sc.mode == "open" else ""))
    errors = ", ".join(f"{k} {v}" for k, v in r.errors.most_common()) or "none"
    print(f"  errors {o.errors}: {errors}")
    for kind, text in r.samples.items():
        if text:
            print(f"    first {kind}: {text}")
    if any(k.startswith("http 5") for k in r.errors) and o.server_log:
        print("    server log, last lines:\n      " + o.server_log.replace("\n", "\n      "))
    print("  results  " + "  ".join(f"{k} {r.statuses[k]}" for k in STATUSES))
    if sc.mode == "open" and r.lag:
        lag = sorted(r.lag)
        print(f"  generator send lag ms  p99 {percentile(lag, 99) * 1000:.1f}  max {lag[-1] * 1000:.1f}")
    c = o.cpu
    total = c["total"] or 1.0
    parts = ["server", "pg backends", "pg other", "load gen", "bench", "rest", "idle"]
    shares = "  ".join(f"{k} {c[k]:.1f} ({c[k] / total:.0%})" for k in parts)
    print(f"  cpu s of {c['total']:.1f} available:  {shares}")
    if c["rest"] / total > 0.1:
        print(f"  NOTE: other processes on this machine used {c['rest'] / total:.0%} of the CPU in this window")
    if not r.answered:
        print(f"  cpu ms per OK request: n/a (no OK answers); server used {c['server']:.1f} s")
        return
    per_req = 1000 / r.answered
    print(f"  cpu ms per OK request:  server {c['server'] * per_req:.2f}  postgres "
          f"{(c['pg backends'] + c['pg other']) * per_req:.2f}  load gen {c['load gen'] * per_req:.2f}")
    pg = o.pg
    requests = max(r.answered, 1)
    print(f"  postgres per OK request: {pg['commits'] / requests:.2f} commits, {pg['rollbacks'] / requests:.2f}"
          f" rollbacks, {pg['inserted'] / requests:.1f} rows inserted, {pg['updated'] / requests:.1f} updated,"
          f" {pg['wal_bytes'] / requests / 1024:.1f} KiB WAL;  WAL flushes {pg['wal_syncs'] / o.duration:.0f}/s")
    if o.waits:
        print(f"  bench backends, {o.samples} samples of pg_stat_activity (mean backends in each state):")
        for name, count in o.waits.most_common(8):
            print(f"    {count / o.samples:6.2f}  {name}")
        assert o.queries is not None
        print("  active statements (mean backends running each):")
        for text, count in o.queries.most_common(6):
            print(f"    {count / o.samples:6.2f}  {text}")


def summary(args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    print(f"\nsummary: --workers {args.workers}, --client {args.client}, --procs {args.procs}, "
          f"{args.duration:g} s per scenario")
    print(f"  {'scenario':<34} {'req/s':>8} {'mut/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'errors':>6}"
          f"   cpu % server/pg/load/idle")
    for o in outcomes:
        c = o.cpu
        t = c["total"] or 1.0
        pg = c["pg backends"] + c["pg other"]
        print(f"  {o.scenario.title[:34]:<34} {o.rps:8.1f} {o.mps:8.0f} {o.ms(50)} {o.ms(95)}"
              f" {o.ms(99)} {o.errors:6d}   {c['server'] / t:.0%}/{pg / t:.0%}/{c['load gen'] / t:.0%}"
              f"/{c['idle'] / t:.0%}")
    batch = outcomes[0]
    at500 = [o for o in outcomes if o.scenario.mode == "open" and o.scenario.rate == args.rate]
    verdict = "met" if batch.mps >= 20_000 else "NOT met"
    print(f"  target >= 20,000 mutations/s batched (--workers 2, a quiet machine): {batch.mps:,.0f}/s -> {verdict}")
    if at500:
        o = at500[0]
        met = o.pct(95) < 50 and o.errors == 0
        print(f"  target single-mutation p95 < 50 ms at {args.rate:g} req/s, no errors: p95 {o.ms(95, 0)} ms, "
              f"{o.errors} errors -> {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario (default 15)")
    parser.add_argument("--workers", type=int, default=1, help="pulse-server worker processes (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario, short warm-up: a smoke check")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="HTTP client (default raw)")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    parser.add_argument("--timeout", type=float, default=10.0, help="a request later than this is an error")
    parser.add_argument("--pool-size", type=int, help="PULSE_POOL_SIZE for the server (default: its own)")
    parser.add_argument("--pg-waits", action="store_true", help="sample pg_stat_activity during each scenario")
    parser.add_argument("--rate", type=float, default=500.0, help="the fixed open-loop rate (default 500)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.timeout = min(args.duration, 3.0), 0.5, 5.0

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    extra = {"PULSE_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}
    try:
        with throwaway_database() as url:
            accounts = create_athletes(url, 200)
            with running_server(url, args.workers, extra) as server, _monitor(url) as monitor:
                settings = monitor.execute("SELECT current_setting('synchronous_commit'), current_setting('fsync'),"
                                           " current_setting('shared_buffers')").fetchone()
                print(f"push load: pulse-server --workers {args.workers} on 127.0.0.1:{server.port}, "
                      f"database {url.rsplit('/', 1)[1]}, {len(accounts)} athletes; {os.cpu_count()} CPUs; "
                      f"load from {args.procs} processes ({args.client}); "
                      f"postgres synchronous_commit={settings[0]} fsync={settings[1]} "
                      f"shared_buffers={settings[2]}\ncode: {code_version()}\n"
                      f"server settings: {server_settings(url, args.pool_size)}", flush=True)
                bench = Bench(args, url, accounts, server, monitor)
                outcomes = [bench.run(Scenario("a", "batch: 16 devices x 100 mut, closed", "closed", 16, 100))]
                sys.stdout.flush()
                closed = bench.run(Scenario("b", "single: 200 devices, closed (max)", "closed", 200, 1))
                outcomes.append(closed)
                for label, rate in (("50% of max", 0.5 * closed.rps), ("90% of max", 0.9 * closed.rps),
                                    (f"{args.rate:g}/s", args.rate)):
                    if rate < 1:
                        continue
                    sys.stdout.flush()
                    title = f"single: open {rate:.0f}/s ({label})"
                    outcomes.append(bench.run(Scenario("b", title, "open", 200, 1, rate)))
                summary(args, outcomes)
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, database dropped", file=sys.stderr)
        sys.exit(130)


def admin_url(url: str) -> str:
    """Monitoring queries go to the `postgres` database, so they do not count in the bench database's stats."""
    return url.rsplit("/", 1)[0] + "/postgres"


@contextlib.contextmanager
def _monitor(url: str) -> Any:
    import psycopg

    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        yield conn


def server_settings(url: str, pool_size: int | None) -> str:
    """The server's settings that matter here, as it will read them from the same environment."""
    from pulse_server.settings import Settings

    settings = Settings(database_url=url, **({"pool_size": pool_size} if pool_size else {}))
    names = ("pool_size", "max_batch", "replication_reader", "shape_watcher")
    shown = ", ".join(f"{n}={getattr(settings, n)}" for n in names if hasattr(settings, n))
    return f"{shown}, log_level=warning"


def code_version() -> str:
    """The commit, and the server files changed since (figures are only comparable on the same code)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=os.path.dirname(__file__))
        return done.stdout.rstrip() if done.returncode == 0 else ""

    import pulse_server

    source = os.path.dirname(os.path.dirname(os.path.abspath(pulse_server.__file__)))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if source != repo:
        return f"pulse_server imported from {source} (not this checkout)"
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = git("status", "--porcelain", "--", "../pulse_server", "../sync", "../pulse_core").splitlines()
    return head + (f" + uncommitted changes in {', '.join(line[3:] for line in changed)}" if changed else "")


if __name__ == "__main__":
    main()
