"""Write-to-client latency of live shapes: from the Postgres commit to the client's receipt of the change.

Targets: p95 < 100 ms with one live client; p99 < 500 ms across 1,000 concurrent live clients, and
p99 < 1 s across 10,000 (long polls, and SSE streams), every change delivered to every follower.

Run from the repo root (PostgreSQL with wal_level=logical at PGHOST:PGPORT, default 127.0.0.1:5432,
user postgres):

    .venv/bin/python bench/shape_latency.py --quick
    .venv/bin/python bench/shape_latency.py
    .venv/bin/python bench/shape_latency.py --clients 10000 --workers 2

It creates `pulse_bench_<random>`, migrates it, creates the athletes with a token each in a few
statements (bench/_server.py `create_athletes`), starts one `pulse-server serve --workers N` with the
replication reader and the shape watcher on (PULSE_LOG_LEVEL=warning), and runs:

  one client   one athlete's client follows its shape live, and this process writes --writes-one
               changes to that athlete's entries with plain SQL, one per transaction, every 50 ms.
  N clients    once per --modes (poll: long polls, sse: SSE streams with live_sse=true; default both):
               --clients clients in --procs processes, client i following athlete i % --athletes
               (default: one athlete each, 10,000 athletes for 10,000 clients). This process writes
               --writes changes at --rate per second, one per transaction, to the followed athletes in
               a shuffled round-robin: every change is owed to each client following its athlete.

The clients are a light load generator: raw asyncio sockets (uvloop when installed) speaking HTTP/1.1
keep-alive, one connection per client, parsing the status, the electric-* headers and the JSON
messages (or the SSE `data:` lines). Each follows the Electric protocol (offset=-1, then the offsets it
is given until up-to-date, then live=true with the cursor; an SSE client then holds one stream,
reconnecting from its last up-to-date when the server ends it every 60 s), at most 64 a process
connecting and catching up at once, and notes the wall-clock time it parsed each change. A change's
latency is that time minus the wall-clock time right after the writer's COMMIT returned (all processes
share one clock). After the last write the clients get up to 30 s to receive the rest; a delivery not
received by then is counted apart.

Open files: the bench raises its soft RLIMIT_NOFILE to the hard limit; the client processes and the
server (started from here) inherit it. 10,000 clients need about 10,000 descriptors on each side
(the server's spread over its workers): a hard limit under that must be raised first (`ulimit -Hn`,
or LimitNOFILE= under systemd).

Printed per scenario: clients, athletes followed, how long they took to get live (and the server's and
Postgres's CPU for it), clients held when the writes began and at least while they ran, requests/s
meanwhile; changes written, deliveries expected and received, p50/p95/p99/max of write-to-client;
the server's peak RSS (summed over its processes: the supervisor and the workers, sampled every 0.5 s)
and peak open files per process; the CPU seconds of the server, the clients and Postgres over the
writing window; and the load average before and after. At the end the server is stopped, the
database's replication slots are dropped and the database is dropped WITH (FORCE), even on error.

Measured 2026-12-04 with --clients 10000 --workers 2 on 2 cores shared with other work (load average
1-5; docs/deploy.md has the table): 10,000 long polls held, every change delivered, p99 7.8 ms (4.8 in
another run), the server 4.3 CPU-s over 20 s of writing (both runs; 11.9 before live requests were
answered from memory, in front of the middleware stack, with commits waking only their users' held
requests), 476 MiB peak RSS; 10,000 SSE streams held, every change delivered, p99 3.6 ms, 2.3 CPU-s
(6.2 before), 578 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import threading
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlencode

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
#
# A light load generator: raw asyncio sockets speaking HTTP/1.1 keep-alive, one connection per client,
# parsing only the status, the electric-* headers and the JSON messages (or the SSE `data:` lines).
# A pool-based HTTP client costs more CPU per held request than the server spends holding it.

Receipt = tuple[int, int, float]  # (client index, steps = the write's sequence number, wall-clock time received)
SETUP_AT_ONCE = 64  # per client process: clients connecting and catching up at the same time


class Reply:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers


async def read_reply_head(reader: asyncio.StreamReader) -> Reply:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Reply(status, headers)


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (b"" for the last, its trailer read)."""
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size + 2)
    if size == 0:
        return b""
    return data[:-2]


async def read_body(reader: asyncio.StreamReader, reply: Reply) -> bytes:
    if reply.headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while chunk := await read_chunk(reader):
            parts.append(chunk)
        return b"".join(parts)
    if "content-length" in reply.headers:
        return await reader.readexactly(int(reply.headers["content-length"]))
    if reply.status in (204, 304):
        return b""
    return await reader.read()  # until the server closes the connection


class Crowd:
    """One client process's clients and what they noted."""

    def __init__(self, host: str, port: int, sse: bool, count: int) -> None:
        self.host, self.port, self.sse = host, port, sse
        self.receipts: list[Receipt] = []
        self.errors: list[str] = []
        self.pending = count  # clients not live yet
        self.ready = asyncio.Event()
        self.held = 0  # clients with a live request (or stream) open now
        self.requests = 0  # requests sent so far
        self.gate = asyncio.Semaphore(SETUP_AT_ONCE)

    def request(self, query: dict[str, str], token: str) -> bytes:
        return (f"GET /v1/shape?{urlencode(query)} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n").encode()

    def note(self, client: int, messages: list[dict[str, Any]], received: float) -> None:
        for message in messages:
            value = message.get("value")
            if "operation" in message.get("headers", {}) and value and value.get("steps") is not None:
                self.receipts.append((client, int(value["steps"]), received))

    async def follow(self, client: int, token: str) -> None:
        """One client: catch up, then follow live until cancelled, noting when each change arrives."""
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        query: dict[str, str] = {"table": "entries", "offset": "-1"}
        live = False
        await self.gate.acquire()
        try:
            while True:
                try:
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
                    writer.write(self.request(query, token))
                    self.requests += 1
                    if live:
                        self.held += 1
                    try:
                        reply = await read_reply_head(reader)
                        if live and self.sse and reply.status == 200:
                            query = await self.stream(client, reader, query)
                            continue
                        body = await read_body(reader, reply)
                    finally:
                        if live:
                            self.held -= 1
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    self.errors.append(type(exc).__name__)
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    await asyncio.sleep(0.5)
                    continue
                received = time.time()
                if reply.headers.get("connection", "").lower() == "close":
                    assert writer is not None
                    writer.close()
                    reader = writer = None
                if reply.status == 409:
                    self.errors.append("409")
                    query, live = {"table": "entries", "offset": "-1"}, False
                    continue
                if reply.status != 200:
                    self.errors.append(str(reply.status))
                    await asyncio.sleep(0.5)
                    continue
                if live:  # changes from the log, not the snapshot
                    self.note(client, json.loads(body), received)
                query = {"table": "entries", "offset": reply.headers["electric-offset"],
                         "handle": reply.headers["electric-handle"]}
                if "electric-up-to-date" in reply.headers:
                    query.update({"live": "true", "cursor": reply.headers.get("electric-cursor", "0")})
                    if self.sse:
                        query["live_sse"] = "true"
                    if not live:
                        live = True
                        self.gate.release()
                        self.pending -= 1
                        if self.pending == 0:
                            self.ready.set()
        finally:
            if not live:
                self.gate.release()
            if writer is not None:
                writer.close()

    async def stream(self, client: int, reader: asyncio.StreamReader, query: dict[str, str]) -> dict[str, str]:
        """An SSE stream until the server ends it; the query to reconnect with (from the last up-to-date)."""
        buffer = b""
        while chunk := await read_chunk(reader):
            received = time.time()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            messages = [json.loads(line[5:]) for event in events for line in event.split(b"\n")
                        if line.startswith(b"data:")]
            self.note(client, messages, received)
            for message in messages:
                headers = message.get("headers", {})
                if headers.get("control") == "up-to-date":
                    query = {**query, "offset": f"{headers['global_last_seen_lsn']}_0"}
        return query


async def run_clients(host: str, port: int, sse: bool, clients: list[tuple[int, str]], pipe: Connection) -> None:
    crowd = Crowd(host, port, sse, len(clients))
    tasks = [asyncio.create_task(crowd.follow(index, token)) for index, token in clients]
    await crowd.ready.wait()
    await asyncio.sleep(0.5)  # the last live requests reach the server
    pipe.send(("ready", len(clients)))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv) == "count":
        pipe.send(("count", len(crowd.receipts), crowd.held, crowd.requests))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("done", crowd.receipts, crowd.errors))


def client_process(host: str, port: int, sse: bool, clients: list[tuple[int, str]], pipe: Connection) -> None:
    try:
        import uvloop  # with uvicorn[standard]: about half the clients' CPU of asyncio's own loop
    except ImportError:
        asyncio.run(run_clients(host, port, sse, clients, pipe))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_clients(host, port, sse, clients, pipe))


class Clients:
    """`procs` client processes sharing the clients (index, token) between them."""

    def __init__(self, port: int, clients: list[tuple[int, str]], procs: int, sse: bool) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self.ready = False
        for i in range(procs):
            share = clients[i::procs]
            if not share:
                continue
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=("127.0.0.1", port, sse, share, theirs), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("the clients did not get live in time")
            pipe.recv()
        self.ready = True

    def counts(self) -> tuple[int, int, int]:
        """(changes received, clients holding a live request or stream now, requests sent so far)."""
        for pipe in self.pipes:
            pipe.send("count")
        replies = [pipe.recv() for pipe in self.pipes]
        return tuple(sum(int(r[i]) for r in replies) for i in (1, 2, 3))  # type: ignore[return-value]

    def stop(self) -> tuple[list[Receipt], list[str]]:
        receipts: list[Receipt] = []
        errors: list[str] = []
        if not self.ready:  # stopped (an error, Ctrl-C) before they all got live: they are not listening
            for proc in self.procs:
                proc.terminate()
        for pipe in self.pipes if self.ready else []:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for pipe in self.pipes if self.ready else []:
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


class Sampler:
    """In a thread: the server's RSS (summed over its processes: the supervisor and the workers) and
    the open descriptors of each, every 0.5 s, keeping the peak."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak_rss = 0
        self.peak_fds: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def rss(self) -> int:
        total = 0
        for pid in self.server.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * self.PAGE
        return total

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.rss())
        for pid in self.server.pids():
            with contextlib.suppress(OSError):
                self.peak_fds[pid] = max(self.peak_fds.get(pid, 0), len(os.listdir(f"/proc/{pid}/fd")))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def scenario(name: str, server: Server, url: str, accounts: list[Account], clients: int, procs: int,
             sse: bool, writes: int, rate: float, first_seq: int, target: tuple[str, float]) -> None:
    """`clients` clients, client i following accounts[i % len(accounts)]: `writes` changes at `rate`/s."""
    load_before = loadavg()
    rss_idle = Sampler(server).rss()
    follows = [accounts[i % len(accounts)] for i in range(clients)]
    followers: dict[int, list[int]] = {}
    for index, account in enumerate(follows):
        followers.setdefault(account.user_id, []).append(index)
    started = time.monotonic()
    connect_before = CpuSnapshot.take()
    crowd = Clients(server.port, [(i, a.token) for i, a in enumerate(follows)], procs, sse)
    with Sampler(server) as sampler:
        try:
            crowd.wait_ready()
            live_s = time.monotonic() - started
            _, held_at_start, requests_before = crowd.counts()
            held_min = held_at_start
            order = sorted(followers)
            random.Random(first_seq).shuffle(order)
            targets = [order[i % len(order)] for i in range(writes)]
            expected_total = sum(len(followers[u]) for u in targets)
            before = CpuSnapshot.take()
            committed = write(url, targets, rate, first_seq)
            deadline = time.monotonic() + GRACE_S
            while True:
                got, held, requests = crowd.counts()
                held_min = min(held_min, held)
                if got >= expected_total or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            after = CpuSnapshot.take()
        finally:
            receipts, errors = crowd.stop()
    received: dict[tuple[int, int], float] = {}
    for client, seq, at in receipts:
        received.setdefault((client, seq), at)
    expected = [(client, user_id, seq) for (user_id, seq) in committed for client in followers[user_id]]
    latencies = sorted((received[(c, s)] - committed[(u, s)]) * 1000 for c, u, s in expected if (c, s) in received)
    lost = len(expected) - len(latencies)
    which, limit = target
    value = percentile(latencies, 95 if which == "p95" else 99)
    busy, total = machine_seconds(before, after)
    client_pids = {p.pid for p in crowd.procs if p.pid is not None}
    shared = f", {clients / len(accounts):g} per athlete" if clients > len(accounts) else ""
    kind = ("SSE stream" if sse else "long poll") + ("s" if clients != 1 else "")
    print(f"{name}: {clients} {kind} ({len(followers)} athlete{'s' if len(followers) != 1 else ''} followed{shared})"
          f" in {len(crowd.procs)} client process(es), all live after {live_s:.1f} s"
          f" (server CPU {cpu_seconds(connect_before, before, server.pids()):.1f} s,"
          f" postgres {cpu_seconds(connect_before, before, postgres_pids(before)):.1f} s to get there);"
          f" held: {held_at_start} when the writes began, at least {held_min} while they ran;"
          f" {(requests - requests_before) / (after.at - before.at):.0f} requests/s meanwhile")
    print(f"  {len(committed)} changes written at {rate:g}/s: deliveries expected {len(expected)}, received"
          f" {len(latencies)}, {lost} not within {GRACE_S:g} s; write-to-client ms"
          f" p50 {percentile(latencies, 50):.1f} p95 {percentile(latencies, 95):.1f}"
          f" p99 {percentile(latencies, 99):.1f} max {max(latencies, default=float('nan')):.1f}"
          f" mean {statistics.fmean(latencies) if latencies else float('nan'):.1f};"
          f" client errors {len(errors)}{' ' + str(sorted(set(errors))) if errors else ''};"
          f" target {which} < {limit:g} ms: {'met' if value < limit and lost == 0 else 'NOT met'}")
    fds = ", ".join(str(n) for _, n in sorted(sampler.peak_fds.items()))
    print(f"  server RSS peak {sampler.peak_rss / 2**20:.0f} MiB (sum of its {len(sampler.peak_fds)} process(es);"
          f" {rss_idle / 2**20:.0f} MiB before the clients came), open files peak per process {fds}")
    print(f"  CPU over {after.at - before.at:.1f} s of writing and receiving: server"
          f" {cpu_seconds(before, after, server.pids()):.1f} s,"
          f" clients {cpu_seconds(before, after, client_pids):.1f} s,"
          f" postgres (all databases) {cpu_seconds(before, after, postgres_pids(after)):.1f} s;"
          f" machine busy {busy:.1f} of {total:.1f} CPU-s; load average before {load_before}, after {loadavg()}")


def raise_open_files(needed: int) -> str:
    """The soft limit on open files raised to the hard one: the client processes and the server (started
    from here) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    note = f"open files limit {soft} (hard {hard}), inherited by the server and the client processes"
    if soft != resource.RLIM_INFINITY and soft < needed:
        note += f"; about {needed} needed: raise the hard limit (ulimit -Hn, or LimitNOFILE= in systemd)"
    return note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000, help="live clients in the crowd scenarios")
    parser.add_argument("--athletes", type=int, default=0,
                        help="athletes the crowd follows (default: one per client; fewer: clients share them)")
    parser.add_argument("--procs", type=int, default=4, help="client processes for the crowd (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--writes", type=int, default=1000, help="writes in the crowd scenarios (default 1000)")
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second in the crowd scenarios")
    parser.add_argument("--writes-one", type=int, default=200, help="writes in the one-client scenario")
    parser.add_argument("--modes", default="poll,sse",
                        help="crowd scenarios: poll (long polls), sse (SSE streams), or both (default)")
    parser.add_argument("--quick", action="store_true", help="100 clients, 200 writes, 50 for the one client")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.writes, args.writes_one = 100, 200, 50
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    athletes = args.athletes or args.clients

    print(f"load average before: {loadavg()} ({os.cpu_count()} CPUs)")
    print(raise_open_files(args.clients + args.clients // max(1, args.procs) + 100))
    with replication_database() as url:
        made = time.monotonic()
        accounts = create_athletes(url, max(1, athletes))
        print(f"{len(accounts)} athletes with tokens in {time.monotonic() - made:.1f} s")
        server: Server
        with running_server(url, args.workers, READER_ENV) as server:
            wait_for_slot(url)
            print(f"server: pulse-server serve --workers {args.workers}")
            scenario("one client", server, url, accounts[:1], 1, 1, False, args.writes_one, 20.0, 1_000_000,
                     ("p95", 100.0))
            target = ("p99", 500.0 if args.clients <= 1000 else 1000.0)
            for number, mode in enumerate(modes):
                scenario(f"{args.clients} clients", server, url, accounts, args.clients, args.procs, mode == "sse",
                         args.writes, args.rate, 2_000_000 + number * 1_000_000, target)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
