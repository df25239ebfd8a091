"""Write-to-client latency of live shapes: from the Postgres commit to the client's receipt of the change.

Targets: p95 < 100 ms with one live client; p99 < 500 ms across 1,000 concurrent live clients.

Run from the repo root (PostgreSQL with wal_level=logical at PGHOST:PGPORT, default 127.0.0.1:5432,
user postgres):

    .venv/bin/python bench/shape_latency.py
    .venv/bin/python bench/shape_latency.py --clients 1000 --procs 4 --rate 50 --writes 1000

It creates `pulse_bench_<random>`, migrates it, creates --clients athletes with a token each
(`pulse_server.accounts.issue_token`), starts one `pulse-server serve` with the replication reader and
the shape watcher on (PULSE_LOG_LEVEL=warning), and runs two scenarios:

  one client   one athlete's client (its own process) follows its shape live, and this process writes
               --writes-one changes to that athlete's entries with plain SQL, one per transaction,
               every 50 ms.
  N clients    --clients athletes, each followed by its own live client: --procs processes of asyncio
               + httpx hold the long-polls (one connection per client). This process writes --writes
               changes at --rate per second, one per transaction, spread over the athletes in a
               shuffled round-robin (so every client receives about the same number).

Each client follows the Electric protocol (offset=-1, then the offsets it is given until up-to-date,
then live=true with the cursor), and notes the wall-clock time it parsed each change. A change's
latency is that time minus the wall-clock time right after the writer's COMMIT returned (all
processes share one clock). After the last write the clients get up to 30 s to receive the rest;
a change not received by then is counted apart. Printed per scenario: samples, not received,
p50/p95/p99/max, client errors, and the CPU seconds the server, the clients and Postgres used. At
the end the server is stopped, the database's replication slots are dropped and the database is
dropped WITH (FORCE), even on error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from _server import (
    Account,
    CpuSnapshot,
    Server,
    cpu_seconds,
    create_athletes,
    machine_seconds,
    postgres_pids,
    replication_database,
    running_server,
    wait_for_slot,
)

READER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}
DAY = "2026-01-01"
GRACE_S = 30.0  # after the last write, how long the clients get to receive the rest


# -- the database ------------------------------------------------------------------------------------




# -- the clients (in their own processes) ------------------------------------------------------------

Receipt = tuple[int, int, float]  # (user id, steps = the write's sequence number, wall-clock time received)


async def follow(http: Any, user_id: int, token: str, receipts: list[Receipt], errors: list[str],
                 ready: asyncio.Event, pending: list[int]) -> None:
    """One client: catch up, then follow live until cancelled, noting when each change arrives."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    params: dict[str, str] = {"table": "entries", "offset": "-1"}
    announced = False
    while True:
        try:
            reply = await http.get("/v1/shape", params=params, headers=headers)
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
            await asyncio.sleep(0.5)
            continue
        received = time.time()
        if reply.status_code == 409:
            errors.append("409")
            params = {"table": "entries", "offset": "-1"}
            continue
        if reply.status_code != 200:
            errors.append(str(reply.status_code))
            await asyncio.sleep(0.5)
            continue
        if params.get("live"):  # changes from the log, not the snapshot
            for message in reply.json():
                value = message.get("value")
                if "operation" in message["headers"] and value and value.get("steps") is not None:
                    receipts.append((user_id, int(value["steps"]), received))
        params = {"table": "entries", "offset": reply.headers["electric-offset"],
                  "handle": reply.headers["electric-handle"]}
        if "electric-up-to-date" in reply.headers:
            params.update({"live": "true", "cursor": reply.headers.get("electric-cursor", "0")})
            if not announced:
                announced = True
                pending[0] -= 1
                if pending[0] == 0:
                    ready.set()


async def run_clients(base_url: str, accounts: list[tuple[int, str]], pipe: Connection) -> None:
    import httpx

    receipts: list[Receipt] = []
    errors: list[str] = []
    ready = asyncio.Event()
    pending = [len(accounts)]
    # One client (one connection) per follower: httpcore's pool scans all its connections on every
    # request, so one pool shared by hundreds of held requests costs the harness O(n) per request.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        pools = [await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits))
                 for _ in accounts]
        tasks = [asyncio.create_task(follow(http, u, t, receipts, errors, ready, pending))
                 for http, (u, t) in zip(pools, accounts, strict=True)]
        await ready.wait()
        await asyncio.sleep(0.3)  # the last live requests reach the server
        pipe.send(("ready", len(accounts)))
        while await asyncio.get_running_loop().run_in_executor(None, pipe.recv) == "count":
            pipe.send(("count", len(receipts)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("done", receipts, errors))


def client_process(base_url: str, accounts: list[tuple[int, str]], pipe: Connection) -> None:
    asyncio.run(run_clients(base_url, accounts, pipe))


class Clients:
    """`procs` client processes sharing `accounts` between them."""

    def __init__(self, base_url: str, accounts: list[Account], procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(procs):
            share = [(a.user_id, a.token) for a in accounts[i::procs]]
            if not share:
                continue
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(base_url, share, theirs), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        for pipe in self.pipes:
            if not pipe.poll(timeout_s):
                raise RuntimeError("the clients did not get live in time")
            pipe.recv()

    def received(self) -> int:
        for pipe in self.pipes:
            pipe.send("count")
        return sum(int(pipe.recv()[1]) for pipe in self.pipes)

    def stop(self) -> tuple[list[Receipt], list[str]]:
        receipts: list[Receipt] = []
        errors: list[str] = []
        for pipe in self.pipes:
            pipe.send("stop")
        for pipe in self.pipes:
            if pipe.poll(60):
                _, got, failed = pipe.recv()
                receipts.extend(got)
                errors.extend(failed)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        return receipts, errors


# -- the writer and the figures -----------------------------------------------------------------------


def write(url: str, targets: list[int], rate: float, first_seq: int) -> dict[tuple[int, int], float]:
    """One change per transaction to each target user in turn, `rate` per second; (user, seq) -> commit time."""
    import psycopg

    committed: dict[tuple[int, int], float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        for i, user_id in enumerate(targets):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            seq = first_seq + i
            conn.execute(
                "INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id, date) DO UPDATE SET steps = excluded.steps, updated_at = now()",
                (user_id, DAY, seq))
            committed[(user_id, seq)] = time.time()
    return committed


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def scenario(name: str, server: Server, url: str, accounts: list[Account], procs: int, writes: int,
             rate: float, first_seq: int, target: tuple[str, float]) -> None:
    started = time.monotonic()
    clients = Clients(f"http://127.0.0.1:{server.port}", accounts, procs)
    try:
        clients.wait_ready()
        live_s = time.monotonic() - started
        order = [a.user_id for a in accounts]
        random.Random(first_seq).shuffle(order)
        targets = [order[i % len(order)] for i in range(writes)]
        before = CpuSnapshot.take()
        committed = write(url, targets, rate, first_seq)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and clients.received() < len(committed):
            time.sleep(0.2)
        after = CpuSnapshot.take()
    finally:
        receipts, errors = clients.stop()
    received: dict[tuple[int, int], float] = {}
    for user_id, seq, at in receipts:
        key = (user_id, seq)
        if key in committed and key not in received:
            received[key] = at
    latencies = sorted((received[k] - committed[k]) * 1000 for k in committed if k in received)
    lost = len(committed) - len(latencies)
    which, limit = target
    value = percentile(latencies, 95 if which == "p95" else 99)
    busy, total = machine_seconds(before, after)
    client_pids = {p.pid for p in clients.procs if p.pid is not None}
    print(f"{name}: {len(accounts)} live clients in {len(clients.procs)} process(es) (live after {live_s:.1f} s),"
          f" {len(committed)} writes at {rate:g}/s: {len(latencies)} received, {lost} not within {GRACE_S:g} s;"
          f" latency ms p50 {percentile(latencies, 50):.1f} p95 {percentile(latencies, 95):.1f}"
          f" p99 {percentile(latencies, 99):.1f} max {max(latencies, default=float('nan')):.1f}"
          f" mean {statistics.fmean(latencies) if latencies else float('nan'):.1f};"
          f" client errors {len(errors)}{' ' + str(sorted(set(errors))) if errors else ''};"
          f" target {which} < {limit:g} ms: {'met' if value < limit and lost == 0 else 'NOT met'}")
    print(f"  CPU over {after.at - before.at:.1f} s of writing and receiving: server"
          f" {cpu_seconds(before, after, server.pids()):.1f} s,"
          f" clients {cpu_seconds(before, after, client_pids):.1f} s,"
          f" postgres (all databases) {cpu_seconds(before, after, postgres_pids(after)):.1f} s;"
          f" machine busy {busy:.1f} of {total:.1f} CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000, help="live clients in the crowd scenario")
    parser.add_argument("--procs", type=int, default=4, help="client processes for the crowd (default 4)")
    parser.add_argument("--writes", type=int, default=1000, help="writes in the crowd scenario (default 1000)")
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second in the crowd scenario")
    parser.add_argument("--writes-one", type=int, default=200, help="writes in the one-client scenario")
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with replication_database() as url:
        made = time.monotonic()
        accounts = create_athletes(url, max(1, args.clients))
        print(f"{len(accounts)} athletes with tokens in {time.monotonic() - made:.1f} s")
        server: Server
        with running_server(url, 1, READER_ENV) as server:
            wait_for_slot(url)
            scenario("one client", server, url, accounts[:1], 1, args.writes_one, 20.0, 1_000_000,
                     ("p95", 100.0))
            scenario(f"{args.clients} clients", server, url, accounts, args.procs, args.writes, args.rate,
                     2_000_000, ("p99", 500.0))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
