"""Storage stays bounded by the live data: 1,000,000 mutations to 10,000 rows.

A real server (reader on, its own maintenance schedule off: this script runs maintenance itself) on a
throwaway database; two devices per athlete push batches over HTTP, each tracking its own bases, so the
two often conflict (the conflict audit grows too). Figures:

- the space of the sync tables (shape_log, applied_mutations, client_high_water, conflicts:
  pg_total_relation_size) after the first 10,000 mutations (one per row), and after all of them and a
  `pulse-server maintain` with zero windows; the ratio must be at most 1.5;
- push throughput (mutations/s) in chunks pushed while maintenance runs back to back, against chunks
  pushed with none running (after each of those, one untimed run keeps the tables bounded, as the
  server's schedule would); the ratio must be at least 0.8.

    .venv/bin/python bench/storage_growth.py                      # the full run (several minutes)
    .venv/bin/python bench/storage_growth.py --mutations 200000   # a quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BIN, Account, create_athletes, running_server, throwaway_database

from pulse_server import maintenance

ZERO = maintenance.Retention(result_days=0, conflict_days=0, shape_log_days=0)


class Device:
    """One install of one athlete: its client id, seq, stamps, and the stamps it last wrote (its bases)."""

    def __init__(self, account: Account, name: str, days: list[str], seed: int) -> None:
        self.account, self.client_id, self.days = account, f"{account.username}-{name}", days
        self.rng = random.Random(seed)
        self.seq = self.last_ms = self.counter = 0
        self.written: dict[tuple[str, str], str] = {}

    def stamp(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self.last_ms:
            self.last_ms, self.counter = ms, 0
        else:
            self.counter += 1
        return f"{self.last_ms:016d}:{self.counter:05d}:{self.client_id}"

    def mutation(self, day: str | None = None) -> dict[str, Any]:
        self.seq += 1
        day = day or self.rng.choice(self.days)
        stamp = self.stamp()
        fields: dict[str, Any] = {"steps": self.rng.randrange(0, 30_000)}
        if self.rng.random() < 0.5:
            fields["sleep_hours"] = round(self.rng.uniform(4, 10), 2)
        base = {name: self.written.get((day, name)) for name in fields}
        for name in fields:
            self.written[(day, name)] = stamp
        return {"seq": self.seq, "date": day, "op": "set", "fields": fields, "base": base, "hlc": stamp}


async def push_all(port: int, devices: list[Device], batches: list[list[tuple[Device, str | None]]],
                   concurrency: int) -> None:
    """Each batch is one push of one device; batches of a device go in order, `concurrency` at a time."""
    queue: asyncio.Queue[list[tuple[Device, str | None]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    busy: set[str] = set()

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            device = batch[0][0]
            if device.client_id in busy:  # one request at a time per device, like the client engine
                queue.put_nowait(batch)
                await asyncio.sleep(0)
                continue
            busy.add(device.client_id)
            try:
                body = {"protocol": 1, "client_id": device.client_id,
                        "mutations": [device.mutation(day) for _, day in batch]}
                reply = await http.post("/v1/sync/push", json=body,
                                        headers={"authorization": f"Bearer {device.account.token}"})
                if reply.status_code != 200:
                    raise RuntimeError(f"push answered {reply.status_code}: {reply.text[:300]}")
                statuses = {r["status"] for r in reply.json()["results"]}
                if not statuses <= {"applied", "conflict"}:
                    raise RuntimeError(f"unexpected results {statuses}: {reply.text[:300]}")
            finally:
                busy.discard(device.client_id)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))


def random_batches(devices: list[Device], mutations: int, batch: int, rng: random.Random
                   ) -> list[list[tuple[Device, str | None]]]:
    return [[(device, None)] * batch for device in (rng.choice(devices) for _ in range(mutations // batch))]


def wait_logged(url: str, timeout_s: float = 600.0) -> None:
    """Until the reader has logged (and its slot confirmed) everything written so far."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
        while True:
            row = conn.execute("SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots"
                               " WHERE database = current_database()", target).fetchone()
            if row and row[0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the reader did not catch up")
            time.sleep(0.2)


def sizes(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return maintenance.table_bytes(conn)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in maintenance.SYNC_TABLES}


def kib(table_sizes: dict[str, int]) -> str:
    total = sum(table_sizes.values()) / 1024
    return ", ".join(f"{t} {b / 1024:.0f}" for t, b in table_sizes.items()) + f" (total {total:.0f} KiB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--athletes", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="mutations per push")
    parser.add_argument("--concurrency", type=int, default=4, help="pushes in flight")
    parser.add_argument("--chunk", type=int, default=50_000, help="mutations per timed chunk")
    args = parser.parse_args()
    per_athlete = args.rows // args.athletes
    today = dt.date.today()
    days = [(today - dt.timedelta(days=i)).isoformat() for i in range(per_athlete)]
    rng = random.Random(7)

    with throwaway_database(prefix="pulse_bench_storage") as url:
        accounts = create_athletes(url, args.athletes, prefix="grow")
        devices = [Device(a, name, days, rng.randrange(1 << 30)) for a in accounts for name in ("a", "b")]
        env = {"PULSE_MAINTENANCE_INTERVAL_S": "0", "PULSE_MAX_BATCH": str(max(500, args.batch))}
        with running_server(url, workers=1, extra_env=env) as server:
            # The first mutations: one per row (each row's first write), by the athletes' first devices.
            first = [[(d, day) for day in days[i:i + args.batch]] for d in devices[::2]
                     for i in range(0, len(days), args.batch)]
            asyncio.run(push_all(server.port, devices, first, args.concurrency))
            wait_logged(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) shape_log, applied_mutations, client_high_water, conflicts")
            after_first = sizes(url)
            print(f"after the first {args.rows} mutations: {kib(after_first)}; rows {counts(url)}")

            done, timed = args.rows, {"without": [0, 0.0], "with": [0, 0.0]}
            chunk_no = 0
            while done < args.mutations:
                size = min(args.chunk, args.mutations - done)
                batches = random_batches(devices, size, args.batch, rng)
                pushed = sum(len(b) for b in batches)
                kind = "with" if chunk_no % 2 else "without"
                stop, runs = threading.Event(), [0]

                def keep_maintaining(stop: threading.Event = stop, runs: list[int] = runs) -> None:
                    while not stop.is_set():
                        maintenance.run(url, ZERO, wait_s=60)
                        runs[0] += 1

                loop = threading.Thread(target=keep_maintaining) if kind == "with" else None
                if loop is not None:
                    loop.start()
                started = time.perf_counter()
                asyncio.run(push_all(server.port, devices, batches, args.concurrency))
                elapsed = time.perf_counter() - started
                if loop is not None:
                    stop.set()
                    loop.join()
                else:
                    wait_logged(url)
                    maintenance.run(url, ZERO, wait_s=60)  # the schedule's run, between chunks
                timed[kind][0] += pushed
                timed[kind][1] += elapsed
                done += pushed
                chunk_no += 1
                print(f"  {done:>9} mutations; chunk {kind} maintenance: {pushed / elapsed:7.0f}/s"
                      f"{f' ({runs[0]} runs)' if kind == 'with' else ''}; {kib(sizes(url))}", flush=True)

            wait_logged(url)
            final = subprocess.run(
                [str(BIN / "pulse-server"), "maintain", "--json", "--result-retention-days", "0",
                 "--conflict-retention-days", "0", "--shape-log-retention-days", "0"],
                env={**os.environ, "PULSE_DATABASE_URL": url}, capture_output=True, text=True, check=True)
            report = json.loads(final.stdout)
            after_all = {t: int(b) for t, b in report["table_bytes"].items()}
            rows = counts(url)
    ratio = sum(after_all.values()) / sum(after_first.values())
    without = timed["without"][0] / timed["without"][1]
    with_ = timed["with"][0] / timed["with"][1]
    print(f"after {args.mutations} mutations and pulse-server maintain (zero windows): {kib(after_all)}; rows {rows}")
    print(f"storage: {ratio:.2f}x the space after the first {args.rows} mutations (target <= 1.5)")
    print(f"push throughput: {without:.0f} mutations/s without maintenance, {with_:.0f} while it runs:"
          f" {with_ / without:.0%} (target >= 80%)")


if __name__ == "__main__":
    main()
