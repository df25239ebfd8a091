"""What nginx (deploy/nginx/pulse.conf) adds to a single push: p50/p95/p99 latency, direct vs through nginx.

Run from the repo root (PostgreSQL at PGHOST:PGPORT, default 127.0.0.1:5432, user postgres;
Debian's nginx installed):

    .venv/bin/python bench/proxy_overhead.py            # 2,000 pushes each way
    .venv/bin/python bench/proxy_overhead.py --quick    # 300 each way

It creates `pulse_bench_<random>`, one athlete with a token, starts one `pulse-server serve` (trusting
nginx's X-Forwarded-For, as deployed) and nginx in front of it with the shipped site file (bench/_nginx.py:
only the listen address and the upstream servers are replaced), and drops the database at the end.

One device pushes one new mutation at a time (closed loop, no think time) over one keep-alive
connection, with the standard library's http.client (the client's own CPU is small next to httpx's,
and the same both ways). Pushes alternate between the two paths in rounds of 50, so whatever else the
machine does falls on both alike. A second pass opens a new connection for every push (as each `pulse
sync` process does). Printed: p50/p95/p99 and mean per path and their differences.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import _nginx
from _server import create_athletes, running_server, throwaway_database

ROUND = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Pusher:
    """One device's pushes over http.client: increasing seq and stamp, a new day's value each time."""

    def __init__(self, token: str, client_id: str) -> None:
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self.client_id = client_id
        self.seq = 0

    def body(self) -> bytes:
        self.seq += 1
        day = f"2025-{1 + self.seq % 12:02d}-{1 + self.seq % 28:02d}"
        stamp = f"{time.time_ns() // 1_000_000:016d}:{self.seq % 100_000:05d}:{self.client_id}"
        mutation = {"seq": self.seq, "date": day, "op": "set", "fields": {"steps": self.seq % 100_000},
                    "base": {"steps": None}, "hlc": stamp}
        return json.dumps({"protocol": 1, "client_id": self.client_id, "mutations": [mutation]}).encode()

    def push(self, conn: http.client.HTTPConnection) -> float:
        body = self.body()
        started = time.perf_counter()
        conn.request("POST", "/v1/sync/push", body=body, headers=self.headers)
        response = conn.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"push answered {response.status}: {answer[:200]!r}")
        return elapsed


def measure(ports: dict[str, int], pushers: dict[str, Pusher], count: int, reuse: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in ports}
    conns: dict[str, http.client.HTTPConnection] = {}

    def connection(name: str) -> http.client.HTTPConnection:
        if not reuse or name not in conns:
            if name in conns:
                conns[name].close()
            conns[name] = http.client.HTTPConnection("127.0.0.1", ports[name], timeout=30)
        return conns[name]

    while min(len(t) for t in times.values()) < count:
        for name in ports:
            for _ in range(ROUND):
                times[name].append(pushers[name].push(connection(name)))
    for conn in conns.values():
        conn.close()
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'path':<8} {'pushes':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    figures: dict[str, tuple[float, ...]] = {}
    for name, values in times.items():
        row = (percentile(values, 50), percentile(values, 95), percentile(values, 99), statistics.fmean(values))
        figures[name] = tuple(v * 1000 for v in row)
        print(f"{name:<8} {len(values):>7} " + " ".join(f"{v:>8.2f}" for v in figures[name]))
    extra = [n - d for n, d in zip(figures["nginx"], figures["direct"], strict=True)]
    print(f"{'added':<8} {'':>7} " + " ".join(f"{v:>+8.2f}" for v in extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="pushes each way (default 2000)")
    parser.add_argument("--quick", action="store_true", help="300 pushes each way")
    args = parser.parse_args()
    count = 300 if args.quick else args.count
    if not _nginx.available():
        raise SystemExit("nginx is not installed: apt-get install nginx")
    with throwaway_database() as url:
        [account] = create_athletes(url, 1)
        with running_server(url, 1, {"PULSE_FORWARDED_ALLOW_IPS": "127.0.0.1",
                                     "PULSE_REPLICATION_READER": "false", "PULSE_SHAPE_WATCHER": "false"}) as server:
            nginx = _nginx.Nginx([server.port])
            nginx.start()
            try:
                ports = {"direct": server.port, "nginx": nginx.port}
                run: Callable[[bool], dict[str, Any]] = lambda reuse: measure(  # noqa: E731
                    ports, {"direct": Pusher(account.token, f"d{int(reuse)}"),
                            "nginx": Pusher(account.token, f"n{int(reuse)}")}, count, reuse)
                run(True)  # warm-up: connections, the server's caches, Postgres's plans
                report(f"one keep-alive connection, {count} single-mutation pushes each way", run(True))
                report(f"a new connection per push, {count // 2} each way",
                       measure(ports, {"direct": Pusher(account.token, "dn"), "nginx": Pusher(account.token, "nn")},
                               count // 2, False))
            finally:
                nginx.stop()


if __name__ == "__main__":
    main()
